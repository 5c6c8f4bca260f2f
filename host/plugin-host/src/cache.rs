//! The on-disk cache of precompiled components.
//!
//! A cached artifact is native machine code that wasmtime maps and runs
//! without re-verifying it, so whoever can write a file the cache loads can
//! run code inside the server. The cache therefore trusts only what the
//! server's own user wrote:
//!
//! - the directory is used only if it is a real directory (not a symlink)
//!   owned by the server's effective user and not writable by group or
//!   others; otherwise [`CompileCache::open`] refuses it and the engine
//!   compiles every component at every start;
//! - a file is read only through a descriptor opened without following
//!   symlinks, and only if that descriptor is a regular file owned by the
//!   server's user and not writable by group or others;
//! - every file starts with a header binding it to the SHA-256 of the exact
//!   component bytes it was compiled from, and to the SHA-256 of the
//!   artifact that follows. An artifact renamed to another component's name,
//!   truncated or altered is ignored and recompiled.
//!
//! The file name also carries the engine's compatibility tag (wasmtime
//! version and configuration), so an upgrade never reuses stale machine code.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// First line of every cache file.
const MAGIC: &[u8] = b"keyward-precompiled-component v1\n";
/// Header length: magic, component digest, artifact digest (hex, one per line).
const HEADER_LEN: usize = MAGIC.len() + 65 + 65;

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create {dir}: {source}")]
    Create { dir: PathBuf, source: std::io::Error },
    #[error("cannot inspect {dir}: {source}")]
    Inspect { dir: PathBuf, source: std::io::Error },
    #[error("{dir} is not a directory (symlinks are not followed)")]
    NotADirectory { dir: PathBuf },
    #[error("{dir} is owned by uid {owner}, not by the server's user (uid {user})")]
    Owner { dir: PathBuf, owner: u32, user: u32 },
    #[error("{dir} is writable by other users (mode {mode:o}); make it 0700")]
    Writable { dir: PathBuf, mode: u32 },
}

/// A directory of precompiled components that only the server's user can
/// have written.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility tag, part of every file name.
    tag: String,
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Group- or other-writable bits set in `mode`.
fn writable_by_others(mode: u32) -> bool {
    mode & 0o022 != 0
}

impl CompileCache {
    /// Uses `dir` as the cache, creating it (mode 0700) if it is missing, and
    /// refuses it if another user owns it or could write into it.
    pub fn open(dir: &Path, tag: String) -> Result<CompileCache, CacheError> {
        create_private_dir(dir).map_err(|source| CacheError::Create { dir: dir.to_path_buf(), source })?;
        let meta =
            std::fs::symlink_metadata(dir).map_err(|source| CacheError::Inspect { dir: dir.to_path_buf(), source })?;
        if !meta.file_type().is_dir() {
            return Err(CacheError::NotADirectory { dir: dir.to_path_buf() });
        }
        let user = effective_uid();
        if meta.uid() != user {
            return Err(CacheError::Owner { dir: dir.to_path_buf(), owner: meta.uid(), user });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if writable_by_others(mode) {
            return Err(CacheError::Writable { dir: dir.to_path_buf(), mode });
        }
        Ok(CompileCache { dir: dir.to_path_buf(), tag })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, component_sha256: &str) -> PathBuf {
        self.dir.join(format!("{component_sha256}-{}.cwasm", self.tag))
    }

    /// The artifact compiled from the component whose SHA-256 is
    /// `component_sha256`, if the cache holds a trustworthy one. `Ok(None)`
    /// when there is none; `Err` (with the reason) when a file is there but
    /// is not used.
    pub fn get(&self, component_sha256: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.path(component_sha256);
        let mut file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open: {e}")),
        };
        let meta = file.metadata().map_err(|e| format!("cannot inspect: {e}"))?;
        if !meta.file_type().is_file() {
            return Err("not a regular file".to_string());
        }
        let user = effective_uid();
        if meta.uid() != user {
            return Err(format!("owned by uid {}, not by the server's user (uid {user})", meta.uid()));
        }
        if writable_by_others(meta.mode()) {
            return Err(format!("writable by other users (mode {:o})", meta.mode() & 0o7777));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
        unwrap_artifact(bytes, component_sha256).map(Some)
    }

    /// Stores `artifact`, compiled from the component whose SHA-256 is
    /// `component_sha256`, through a temporary file and a rename, so a crash
    /// or a concurrent keyward never leaves a truncated file under the final
    /// name.
    pub fn put(&self, component_sha256: &str, artifact: &[u8]) -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&self.dir)?;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
        tmp.write_all(&header(component_sha256, artifact))?;
        tmp.write_all(artifact)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(component_sha256)).map_err(|e| e.error)?;
        File::open(&self.dir)?.sync_all()
    }
}

fn header(component_sha256: &str, artifact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(component_sha256.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(hex::encode(Sha256::digest(artifact)).as_bytes());
    out.push(b'\n');
    out
}

/// Checks a cache file's header against the component it is wanted for and
/// against the artifact it carries, and returns the artifact.
fn unwrap_artifact(mut bytes: Vec<u8>, component_sha256: &str) -> Result<Vec<u8>, String> {
    if bytes.len() < HEADER_LEN || !bytes.starts_with(MAGIC) {
        return Err("not a keyward cache file".to_string());
    }
    let recorded = &bytes[MAGIC.len()..MAGIC.len() + 64];
    if recorded != component_sha256.as_bytes() {
        return Err(format!("compiled from another component ({})", String::from_utf8_lossy(recorded)));
    }
    let digest = &bytes[MAGIC.len() + 65..MAGIC.len() + 129];
    let artifact = &bytes[HEADER_LEN..];
    if digest != hex::encode(Sha256::digest(artifact)).as_bytes() {
        return Err("the artifact does not match its recorded digest".to_string());
    }
    bytes.drain(..HEADER_LEN);
    Ok(bytes)
}

/// Creates `dir` and any missing parents, mode 0700 for each one created
/// (an existing directory is left as it is: its owner and mode are checked
/// by whoever uses it).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn temp() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("keyward-cache-test").tempdir().unwrap()
    }

    #[test]
    fn an_artifact_is_returned_only_for_the_component_it_was_made_from() {
        let dir = temp();
        let cache = CompileCache::open(dir.path(), "tag".into()).unwrap();
        assert_eq!(cache.get(A), Ok(None));
        cache.put(A, b"machine code of A").unwrap();
        assert_eq!(cache.get(A), Ok(Some(b"machine code of A".to_vec())));
        // The same file under another component's name is not B's.
        std::fs::copy(cache.path(A), cache.path(B)).unwrap();
        assert!(cache.get(B).unwrap_err().contains("another component"));
        // A changed artifact no longer matches its digest.
        let mut bytes = std::fs::read(cache.path(A)).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(cache.path(A), bytes).unwrap();
        assert!(cache.get(A).unwrap_err().contains("digest"));
        // Files are private to the server's user.
        cache.put(A, b"x").unwrap();
        assert_eq!(std::fs::metadata(cache.path(A)).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = temp();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = CompileCache::open(dir.path(), "tag".into()).unwrap_err();
        assert!(matches!(err, CacheError::Writable { mode: 0o777, .. }), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(CompileCache::open(dir.path(), "tag".into()).is_err());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        CompileCache::open(dir.path(), "tag".into()).unwrap();
    }

    #[test]
    fn a_symlinked_directory_or_file_is_not_followed() {
        let dir = temp();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(CompileCache::open(&link, "t".into()), Err(CacheError::NotADirectory { .. })));
        let cache = CompileCache::open(&real, "t".into()).unwrap();
        cache.put(A, b"code").unwrap();
        std::os::unix::fs::symlink(cache.path(A), cache.path(B)).unwrap();
        assert!(cache.get(B).unwrap_err().contains("cannot open"));
    }

    #[test]
    fn a_file_others_can_write_is_not_used() {
        let dir = temp();
        let cache = CompileCache::open(dir.path(), "t".into()).unwrap();
        cache.put(A, b"code").unwrap();
        std::fs::set_permissions(cache.path(A), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(cache.get(A).unwrap_err().contains("writable by other users"));
    }
}
