//! Starting the server as an operator does: `--dev` and its clean-up, a port
//! already taken, the wrong kind of config file, the log variables, and the
//! one-line start-up summary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_port, Setup, TempDir, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// `keyward ARGS` in `dir` with `env`, its stderr going to `dir/stderr.log`.
fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let err = std::fs::File::create(dir.join("stderr.log")).unwrap();
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env("TMPDIR", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

/// Runs `keyward ARGS` to completion (at most 30 s).
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = spawn(dir, args, env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "keyward {args:?} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = child.wait_with_output().unwrap();
    out.stderr = std::fs::read(dir.join("stderr.log")).unwrap();
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wait_for(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {what:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The `keyward-dev-*` directories under `dir`.
fn dev_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("keyward-dev-")))
        .collect()
}

/// `--dev` writes the admin's private key into a temporary directory; a
/// clean stop (SIGTERM) removes it, so runs do not leave keys behind.
#[test]
fn dev_removes_its_directory_with_the_admin_key_on_sigterm() {
    let dir = TempDir::new("dev-clean");
    let port = free_port().to_string();
    let mut child = spawn(&dir.0, &["server", "--dev", "--addr", &format!("127.0.0.1:{port}")], &[]);
    wait_for(&dir.0.join("stderr.log"), "admin key:");
    let made = dev_dirs(&dir.0);
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].join("admin.key").exists());
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "dev server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(dev_dirs(&dir.0).is_empty(), "left behind: {:?}", dev_dirs(&dir.0));
}

/// A port already taken: the error, and no "Try:" instructions for a server
/// that never ran (they used to come first); the directory goes too.
#[test]
fn dev_on_a_taken_port_prints_only_the_error() {
    let dir = TempDir::new("dev-clash");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&dir.0, &["server", "--dev", "--addr", &addr], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot listen on") && err.contains(&addr), "{err}");
    assert!(
        !err.contains("Try:") && !err.contains("admin key:"),
        "instructions printed for a server that did not start:\n{err}"
    );
    assert!(dev_dirs(&dir.0).is_empty(), "left behind: {:?}", dev_dirs(&dir.0));
}

/// `keyward server` alone names both ways to start.
#[test]
fn server_without_arguments_names_dev_and_config() {
    let dir = TempDir::new("noargs");
    let out = run(&dir.0, &["server"], &[]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("--config") && err.contains("--dev"), "{err}");
}

/// A KES YAML file given to `--config` is recognised and answered with the
/// import command, not a TOML syntax error.
#[test]
fn a_kes_yaml_config_is_answered_with_the_import_command() {
    let dir = TempDir::new("kesyaml");
    let kes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kes/full.yml");
    let out = run(&dir.0, &["server", "--config", &kes.display().to_string()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("looks like a KES configuration"), "{err}");
    assert!(err.contains(&format!("keyward config import {}", kes.display())), "{err}");
    assert!(!err.contains("TOML") && !err.contains("expected"), "{err}");
}

/// `KEYWARD_LOG_FORMAT=json` writes one JSON object per line; `KEYWARD_LOG=json`
/// (the old way to ask for it, which used to silence the log) and other
/// filters that are not filters stop the start with a message saying what to
/// write instead.
#[tokio::test]
async fn log_variables_are_checked_and_json_lines_are_json() {
    let s =
        TestServer::start_with(Setup { env: vec![("KEYWARD_LOG_FORMAT".into(), "json".into())], ..Setup::default() });
    s.admin_client().get("/v1/status").await.ok();
    let log = s.stderr();
    let listening = log.lines().find(|l| l.contains("listening")).unwrap_or_else(|| panic!("{log}"));
    let line: serde_json::Value = serde_json::from_str(listening).unwrap_or_else(|e| panic!("{e}: {listening}"));
    assert_eq!(line["level"], "INFO");
    // The start-up summary: address, admin, keystore, policies, audit.
    let fields = &line["fields"];
    assert_eq!(fields["admin"], s.admin.id.as_str(), "{line}");
    assert_eq!(fields["keystore"], "fs", "{line}");
    assert_eq!(fields["policies"], 0, "{line}");
    assert_eq!(fields["audit"], "none", "{line}");
    assert!(fields["addr"].as_str().unwrap().contains(&s.addr.port().to_string()), "{line}");

    for (var, value, says) in [
        ("KEYWARD_LOG", "json", "KEYWARD_LOG_FORMAT=json"),
        ("KEYWARD_LOG", "verbose", "is not a level"),
        ("KEYWARD_LOG_FORMAT", "yaml", "text or json"),
    ] {
        let err = TestServer::try_start(Setup { env: vec![(var.into(), value.into())], ..Setup::default() })
            .err()
            .unwrap_or_else(|| panic!("started with {var}={value}"));
        assert!(err.contains(var) && err.contains(says), "{var}={value}: {err}");
    }
}

/// `dist/keyward.service` is a unit systemd accepts (`systemd-analyze
/// verify`, with `ExecStart` pointing at the binary under test), hardened as
/// the README says, reloading with SIGHUP.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/keyward.service")).unwrap();
    for line in [
        "User=keyward",
        "ProtectSystem=strict",
        "StateDirectory=keyward",
        "CacheDirectory=keyward",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in the unit");
    }
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        return crate::skip::skip("the_systemd_unit_verifies", "no systemd-analyze command");
    }
    let dir = TempDir::new("unit");
    let path = dir.0.join("keyward.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/keyward", BIN)).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).current_dir(&dir.0).output().unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}
