//! `keyward plugin inspect` and `keyward plugin check`.

use std::process::Command;

use crate::harness::{toml_str, TempDir};

pub(crate) fn wasm(name: &str) -> std::path::PathBuf {
    crate::component(name)
}

pub(crate) fn keyward(args: &[&str], cache: &TempDir) -> (i32, String, String) {
    keyward_with_env(args, cache, &[])
}

/// Runs `keyward` with its compile cache in `cache` and `env` added;
/// (exit code, stdout, stderr). Registry credentials never come from the
/// machine running the tests (its docker config is out of reach).
pub(crate) fn keyward_with_env(args: &[&str], cache: &TempDir, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("KEYWARD_CACHE_DIR", &cache.0)
        .env("DOCKER_CONFIG", cache.0.join("no-docker-config"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn inspect_prints_pin_world_imports_and_exports() {
    let cache = TempDir::new("inspect-cache");
    let fs = wasm("keystore_fs.wasm");
    let (code, out, err) = keyward(&["plugin", "inspect", fs.to_str().unwrap()], &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("sha256:  {}", sha256_of(&fs))), "{out}");
    assert!(out.contains("world:   keyward:plugin/keystore@0.1.0\n"), "{out}");
    assert!(out.contains("keyward:plugin/keystore-api@0.1.0"), "{out}");
    assert!(out.contains("wasi:filesystem"), "{out}");

    let future = wasm("future_wit.wasm");
    let (code, out, _) = keyward(&["plugin", "inspect", future.to_str().unwrap()], &cache);
    assert_eq!(code, 0);
    assert!(out.contains("@0.2.0 (this host implements keyward:plugin@0.1.0"), "{out}");

    let (code, _, err) = keyward(&["plugin", "inspect", "/nonexistent.wasm"], &cache);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn check_validates_pins_worlds_and_grants() {
    let cache = TempDir::new("check-cache");
    let dir = TempDir::new("check");
    let fs = wasm("keystore_fs.wasm");
    let audit = wasm("audit_file.wasm");
    let manifest = dir.0.join("plugins.toml");
    let write = |fs_pin: &str, audit_kind: &str, grant: &str| {
        std::fs::write(
            &manifest,
            format!(
                "[[plugin]]\nname = \"fs\"\nkind = \"keystore\"\npath = {}\nsha256 = \"{fs_pin}\"\n[plugin.grants]\ndirs = [{{ host = {}, guest = \"/data\" }}]\n\
                 [[plugin]]\nname = \"audit\"\nkind = \"{audit_kind}\"\npath = {}\nsha256 = \"{}\"\n",
                toml_str(fs.to_str().unwrap()),
                toml_str(grant),
                toml_str(audit.to_str().unwrap()),
                sha256_of(&audit),
            ),
        )
        .unwrap();
    };
    let m = manifest.to_str().unwrap();
    write(&sha256_of(&fs), "audit-sink", dir.0.to_str().unwrap());
    let (code, out, err) = keyward(&["plugin", "check", m], &cache);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 plugins ok"), "{out}");

    write(&"0".repeat(64), "audit-sink", dir.0.to_str().unwrap());
    let (code, _, err) = keyward(&["plugin", "check", m], &cache);
    assert_eq!(code, 1);
    assert!(err.contains("FAIL  fs") && err.contains("sha256 mismatch"), "{err}");

    write(&sha256_of(&fs), "keystore", dir.0.to_str().unwrap());
    let (code, _, err) = keyward(&["plugin", "check", m], &cache);
    assert_eq!(code, 1);
    assert!(err.contains("FAIL  audit"), "{err}");

    write(&sha256_of(&fs), "audit-sink", "/definitely/not/here");
    let (code, _, err) = keyward(&["plugin", "check", m], &cache);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
}

/// `plugin test` runs the keystore contract against a file: the bundled `fs`
/// passes, a component that overwrites on create (the hostile fixture) fails
/// with the broken rule, an audit sink is refused as not a keystore.
#[test]
fn test_runs_the_keystore_contract_against_a_file() {
    let cache = TempDir::new("contract-cache");
    let fs = wasm("keystore_fs.wasm");
    let (code, out, err) = keyward(&["plugin", "test", fs.to_str().unwrap()], &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("passes the keystore contract"), "{out}");
    let hostile = wasm("hostile.wasm");
    let (code, _, err) = keyward(&["plugin", "test", hostile.to_str().unwrap()], &cache);
    assert_eq!(code, 1);
    assert!(
        err.contains("fails the keystore contract") && err.contains("create of a taken name must answer exists"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let audit = wasm("audit_file.wasm");
    let (code, _, err) = keyward(&["plugin", "test", audit.to_str().unwrap()], &cache);
    assert_eq!(code, 1);
    assert!(err.contains("does not export keyward:plugin/keystore-api"), "{err}");
}
