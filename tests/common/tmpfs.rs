//! A small tmpfs for disk-fault tests (a full disk, a read-only mount),
//! shared by the `e2e` and `plugin` test crates, each of which includes this
//! file from its root with `#[path = "../common/tmpfs.rs"] mod tmpfs;`.
//!
//! The tests run as root, where permissions cannot make a directory
//! unwritable; a mount can. Where mounting is not permitted (not root, or no
//! `CAP_SYS_ADMIN`), [`Tmpfs::mount`] skips the test (a failure under CI, see
//! `skip.rs`).

// Each crate uses only part of this.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size of the test filesystems: room for a few dozen keys.
const TMPFS_SIZE: &str = "256k";

/// A `TMPFS_SIZE` tmpfs mounted on a fresh directory; unmounted, and the
/// directory removed, when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts the tmpfs, or skips `test` and returns `None` when this machine
    /// does not allow it (under CI: fails).
    pub fn mount(test: &str) -> Option<Tmpfs> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "keyward-tmpfs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let size = format!("size={TMPFS_SIZE}");
        match run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs"], &dir) {
            Ok(()) => Some(Tmpfs { dir }),
            Err(why) => {
                crate::skip::skip(test, &format!("cannot mount a tmpfs here (needs root): {why}"));
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Remounts read-only (`true`) or read-write (`false`).
    pub fn set_read_only(&self, read_only: bool) {
        let options = if read_only { "remount,ro" } else { "remount,rw" };
        run("mount", &["-o", options], self.path()).unwrap_or_else(|e| panic!("mount -o {options}: {e}"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A lazy unmount if something still holds it open, so a failing test
        // never leaves a mount behind.
        if run("umount", &[], &self.dir).is_err() {
            let _ = run("umount", &["-l"], &self.dir);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `program args... dir`; the error carries its stderr.
fn run(program: &str, args: &[&str], dir: &Path) -> Result<(), String> {
    let out = Command::new(program).args(args).arg(dir).output().map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?} {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Fills the filesystem holding `dir` with one file, `dir/filler`, until it
/// reports a full disk; returns that file.
pub fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 16 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Partial pages left by a short write: one byte at a time.
    while file.write(&[0]).is_ok_and(|n| n == 1) {}
    path
}
