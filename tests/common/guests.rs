//! Builds the guest workspace (`plugins/`) for `wasm32-wasip2`, for the tests
//! that need components of their own (the hostile and probing fixtures) or
//! that check the bundled components in `host/bundled/` are what their
//! sources build. Shared by the `e2e` and `plugin` test crates, each of which
//! includes this file with `#[path = "../common/guests.rs"] mod guests;`.
//!
//! The production build never compiles guests: the bundled components are
//! checked in. Here the wasm target is added with rustup when it is missing,
//! so `cargo test` needs nothing installed by hand.
//!
//! The build is byte-for-byte reproducible: the same sources and toolchain
//! give the same components whatever the checkout path, target directory,
//! `CARGO_HOME` or the outer build's settings (the outer `cargo test`'s
//! variables are scrubbed, paths are remapped, and every guest crate lies
//! under `plugins/` so cargo hashes its location relatively), which is what lets
//! `host/bundled/` be checked against a fresh build.

// Each crate uses only part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const TARGET: &str = "wasm32-wasip2";

/// Every crate of the guest workspace that builds a component.
pub const CRATES: &[&str] = &[
    "keystore-fs",
    "keystore-vault",
    "audit-file",
    "audit-webhook",
    "hostile",
    "future-wit",
    "http-probe",
    "audit-events",
];

/// The components bundled into the binary: (crate, file in `host/bundled/`).
pub const BUNDLED: &[(&str, &str)] = &[
    ("keystore-fs", "keystore_fs.wasm"),
    ("keystore-vault", "keystore_vault.wasm"),
    ("audit-file", "audit_file.wasm"),
    ("audit-webhook", "audit_webhook.wasm"),
];

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The checked-in bundled components.
pub fn bundled_dir() -> PathBuf {
    root().join("host").join("plugin-host").join("bundled")
}

/// The directory of freshly built components (every crate of [`CRATES`]),
/// building them once per test process. Concurrent test processes take
/// turns through a lock file; cargo then finds the work done.
pub fn built_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target")).join("plugins")
}

fn build() -> PathBuf {
    let target_dir = target_dir();
    std::fs::create_dir_all(&target_dir).unwrap();
    let lock = std::fs::File::create(target_dir.join(".keyward-guests.lock")).unwrap();
    lock.lock().unwrap();
    ensure_target();
    let mut cmd = guest_cargo();
    // --locked: plugins/Cargo.lock decides every dependency version.
    cmd.args(["build", "--locked", "--release", "--target", TARGET, "--target-dir"]).arg(&target_dir);
    for name in CRATES {
        cmd.args(["-p", name]);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    // Paths reach the components through panic locations (file!() of the
    // registry crates, `/cargo/registry/src/...`); map them to fixed names.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", remap_flags(&root(), &target_dir, cargo_home.as_deref()).join("\x1f"));
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo for the guest workspace: {e}"));
    assert!(
        status.success(),
        "building the guest workspace (plugins/) failed; after changing a plugin's dependencies, update \
         plugins/Cargo.lock with `cargo update --workspace` in plugins/"
    );
    target_dir.join(TARGET).join("release")
}

/// `cargo` in the guest workspace (`plugins/`), without the outer build's
/// settings (see [`SCRUBBED`]).
pub fn guest_cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root().join("plugins"));
    for (var, _) in std::env::vars_os() {
        let Some(name) = var.to_str() else { continue };
        if SCRUBBED_PREFIXES.iter().any(|p| name.starts_with(p)) || SCRUBBED.contains(&name) {
            cmd.env_remove(&var);
        }
    }
    cmd
}

/// Where the guest workspace's own tests build (for the machine's target).
pub fn native_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("plugins-native")
}

/// Adds the wasm target with rustup if the toolchain lacks it (rustup does
/// not add the targets `rust-toolchain.toml` lists to a toolchain that is
/// already installed).
pub fn ensure_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == TARGET) => {}
        Ok(_) => {
            let status = Command::new("rustup").args(["target", "add", TARGET]).status();
            assert!(status.is_ok_and(|s| s.success()), "`rustup target add {TARGET}` failed");
        }
        Err(e) => panic!("the {TARGET} target is needed to build test components, and rustup cannot run: {e}"),
    }
}

/// Environment variables removed from the nested cargo's environment, by
/// prefix and by name: the outer build's flags, wrappers, profile
/// overrides, build and target settings are for the host, not for wasm, and
/// must not change the components.
const SCRUBBED_PREFIXES: &[&str] =
    &["CARGO_PROFILE_", "CARGO_BUILD_", "CARGO_TARGET_", "CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_"];
const SCRUBBED: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_INCREMENTAL",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PRIMARY_PACKAGE",
    "OUT_DIR",
];

/// `--remap-path-prefix` flags mapping the checkout to `/keyward`, cargo's
/// home to `/cargo` and the target dir to `/target`, each both as given and
/// with symlinks resolved. rustc applies the *last* flag that matches a path,
/// so they are ordered from the shortest prefix to the longest: a target dir
/// inside the checkout (the default) maps to `/target/...`, as one elsewhere
/// does, not to `/keyward/target/...`.
fn remap_flags(root: &Path, target_dir: &Path, cargo_home: Option<&Path>) -> Vec<String> {
    let mut maps: Vec<(PathBuf, &str)> = Vec::new();
    for (path, to) in [(Some(root), "/keyward"), (cargo_home, "/cargo"), (Some(target_dir), "/target")] {
        let Some(path) = path else { continue };
        for p in [path.to_path_buf(), std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())] {
            if !maps.iter().any(|(q, _)| *q == p) {
                maps.push((p, to));
            }
        }
    }
    maps.sort_by_key(|(p, _)| p.components().count());
    maps.iter().map(|(p, to)| format!("--remap-path-prefix={}={to}", p.display())).collect()
}
