//! Tests that cannot run here for a missing precondition (no root for a
//! tmpfs, no componentize-py, no openssl command, ...). Shared by the `e2e`
//! and `plugin` test crates (`#[path = "../common/skip.rs"] mod skip;`).
//!
//! Outside CI such a test passes after a `SKIPPED` line on stderr and a line
//! in `target/tmp/skipped.log`, which `.ci/run` counts in its closing line.
//! Under CI (`CI` set, as `.ci/run` exports it) a missing precondition is a
//! failure: a green CI means every test ran.

// Each crate uses only part of this.
#![allow(dead_code)]

use std::io::Write;

/// Where skips are recorded.
pub fn log_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.log")
}

/// Skips `test` because of `why`; panics under CI.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}; CI must run every test (install what it needs in .ci/run)");
    }
    eprintln!("SKIPPED {test}: {why}");
    if let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open(log_path()) {
        let _ = writeln!(log, "{test}: {why}");
    }
}
