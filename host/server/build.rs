//! Records the commit the binary is built from, for `/version`.
//!
//! `KEYWARD_COMMIT` set by a packager wins; otherwise `git rev-parse HEAD` in
//! the checkout; empty when neither is there (a source tarball).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KEYWARD_COMMIT");
    let commit = std::env::var("KEYWARD_COMMIT").ok().filter(|c| !c.trim().is_empty()).unwrap_or_else(git_commit);
    println!("cargo:rustc-env=KEYWARD_COMMIT={}", commit.trim());
}

fn git_commit() -> String {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let Some(root) = Path::new(&manifest_dir).ancestors().find(|dir| dir.join(".git").is_dir()) else {
        return String::new();
    };
    let git = root.join(".git");
    // Rebuild when HEAD moves: a checkout changes HEAD, a commit the ref.
    for path in ["HEAD", "packed-refs"] {
        if git.join(path).exists() {
            println!("cargo:rerun-if-changed={}", git.join(path).display());
        }
    }
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            if git.join(reference).exists() {
                println!("cargo:rerun-if-changed={}", git.join(reference).display());
            }
        }
    }
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default()
}
