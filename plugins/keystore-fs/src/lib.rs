//! `keystore-fs`: keyward's filesystem keystore, as a WebAssembly component.
//!
//! One plain file per key, named by the key name, whose content is exactly the
//! value the host stored. That is also the layout of KES's own `fs` keystore, so
//! a directory written by KES can be served by keyward as it is (and back): no
//! index, lock or metadata file is ever written next to the keys.
//!
//! Configuration (JSON, from the server config): `{"path": "<guest dir>"}`,
//! default `/data`. The directory is whatever the host preopened there; the
//! plugin sees nothing else of the host filesystem.
//!
//! Crash safety: `create` writes the value to a temporary file first, flushes it
//! to disk, then hard-links it to the key name and flushes the directory. The
//! link is the atomic commit point: it fails if the name exists (so create never
//! overwrites, even racing another instance), and a crash before it leaves only
//! a temporary file.
//!
//! Temporary files live in their own subdirectory of the key directory,
//! [`TEMP_DIR`] (same filesystem, so the hard link works). Its name starts with
//! `.`, which no key name may, so listings skip it; and `init`, which every new
//! pool instance runs, reclaims crash leftovers by reading only that small
//! directory, never the key directory itself, whose size grows with the number
//! of keys. The subdirectory exists only while a create is in flight (each
//! create makes it if missing and removes it if empty) or while a crash
//! leftover sits in it, so an idle key directory holds nothing but keys, as
//! KES's own keystore expects when it lists one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keyward_sdk::{Error, Keystore, Page};

/// Subdirectory of the key directory that holds in-flight temporary files.
///
/// Key names never start with `.` ([`check_name`] refuses them), so it can
/// never be mistaken for a key, and listings skip every dot entry. The `.tmp-`
/// prefix is the one earlier versions used for temporary files next to the
/// keys, so every temporary entry in a key directory still matches `.tmp-*`.
const TEMP_DIR: &str = ".tmp-keyward";

/// How often `create` tries to make a temporary file before giving up. Each
/// failed try is a name collision or a race with another instance removing
/// [`TEMP_DIR`]; either is rare, eight in a row means something is wrong.
const OPEN_TEMP_ATTEMPTS: usize = 8;

/// Page size used when the host asks for `limit = 0`. KES pages at 1024 names.
const DEFAULT_PAGE: usize = 1024;

/// The longest name accepted. KES names are at most 80 bytes; 255 is the usual
/// file-name limit, so anything longer could not be stored faithfully anyway.
const MAX_NAME: usize = 255;

/// The plugin's configuration, from the server config.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Guest path of the key directory (a host preopen or below one).
    #[serde(default = "default_path")]
    path: String,
}

fn default_path() -> String {
    "/data".to_string()
}

/// One instance's state: just where the keys live.
struct FsKeystore {
    dir: PathBuf,
}

/// Refuses names that are not a single plain file name inside the key
/// directory, or that would collide with temporary/hidden files.
fn check_name(name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        "key name is empty"
    } else if name.len() > MAX_NAME {
        "key name is too long"
    } else if name.contains('/') || name.contains('\\') {
        "key name contains a path separator"
    } else if name.starts_with('.') {
        // Covers "." and "..", temporary files and hidden files.
        "key name starts with '.'"
    } else if name.chars().any(char::is_control) {
        "key name contains a control character"
    } else {
        return Ok(());
    };
    Err(Error::Invalid(format!("{why}: {name:?}")))
}

impl FsKeystore {
    fn key_path(&self, name: &str) -> Result<PathBuf, Error> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    fn temp_dir(&self) -> PathBuf {
        self.dir.join(TEMP_DIR)
    }

    /// A temporary file name that no other instance is using right now.
    ///
    /// Uniqueness comes from the random source the host provides; if two
    /// instances ever collide, `create_new` below fails and we try again.
    fn temp_path(&self) -> PathBuf {
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes);
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.temp_dir().join(name)
    }

    /// Creates a fresh temporary file, making [`TEMP_DIR`] when it is missing.
    ///
    /// Retries on a name collision, and on the directory vanishing between
    /// making it and using it (another instance's create removed it, empty).
    fn open_temp(&self) -> Result<(fs::File, PathBuf), Error> {
        for _ in 0..OPEN_TEMP_ATTEMPTS {
            let path = self.temp_path();
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((file, path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.make_temp_dir()?,
                Err(e) => return Err(change_error("cannot create key file", &e, Hint::ReadOnly)),
            }
        }
        Err(Error::Internal(format!("cannot create a temporary file in {TEMP_DIR} ({OPEN_TEMP_ATTEMPTS} attempts)")))
    }

    /// Makes [`TEMP_DIR`]; another instance making it first is fine.
    fn make_temp_dir(&self) -> Result<(), Error> {
        match fs::create_dir(self.temp_dir()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(change_error("cannot create temporary directory", &e, Hint::ReadOnly)),
        }
    }

    /// Writes `value` to a fresh temporary file and flushes it to disk. On
    /// failure (a full disk, typically) the temporary file is removed again.
    fn write_temp(&self, value: &[u8]) -> Result<PathBuf, Error> {
        let (mut file, path) = self.open_temp()?;
        let written = file.write_all(value).and_then(|()| file.sync_all());
        drop(file);
        match written {
            Ok(()) => Ok(path),
            Err(e) => {
                self.discard_temp(&path);
                Err(change_error("cannot write key file", &e, Hint::Full))
            }
        }
    }

    /// Removes a temporary file, and [`TEMP_DIR`] with it unless another
    /// create is using it (then removing the directory fails, harmlessly).
    /// Best effort: a file left here is reclaimed by a later `init`.
    fn discard_temp(&self, path: &Path) {
        let _ = fs::remove_file(path);
        let _ = fs::remove_dir(self.temp_dir());
    }

    /// Flushes the key directory itself so a new or removed name survives a
    /// crash. Best effort: not every filesystem (or WASI host) can sync a
    /// directory.
    fn sync_dir(&self) {
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
    }
}

/// Maps an I/O error of a read; a full disk, a read-only mount or a refused
/// access is reported as `unavailable` since it is an operator problem that may
/// go away (the host answers it with a 503 carrying this message).
fn io_error(context: &str, err: &std::io::Error) -> Error {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::StorageFull
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::QuotaExceeded
        | ErrorKind::PermissionDenied => Error::Unavailable(format!("{context}: {err}")),
        _ => Error::from_io(context, err),
    }
}

/// The names in a directory, each with whether it is a plain file.
///
/// This talks to `wasi:filesystem` directly rather than through `std::fs`:
/// the host reads each entry's name and then looks the entry up for its type,
/// so an entry deleted by a concurrent request in between (a key, or the
/// temporary directory) arrives as a per-entry `no-entry` error. The stream
/// carries on after it, but wasi-libc's `readdir` drops the rest of its
/// buffered batch, so under `std::fs` a listing silently missed keys or failed.
/// Here such an entry is skipped and every other one is still listed, and so
/// is a name that is not UTF-8 (the host reports it as an error too).
fn dir_entries(dir: &Path) -> Result<Vec<(String, bool)>, Error> {
    use wasip2::filesystem::types::{DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags};
    const CONTEXT: &str = "cannot list key directory";

    let wasi_error = |code: ErrorCode| io_error(CONTEXT, &std::io::Error::new(wasi_error_kind(code), code.message()));
    // The preopen holding `dir`: the one with the longest matching path.
    let (root, rest) = wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .filter_map(|(descriptor, path)| {
            let rest = dir.strip_prefix(&path).ok()?.to_str()?.to_string();
            Some((Path::new(&path).components().count(), descriptor, rest))
        })
        .max_by_key(|(depth, _, _)| *depth)
        .map(|(_, descriptor, rest)| (descriptor, rest))
        .ok_or_else(|| Error::Unavailable(format!("{CONTEXT}: {} is not inside a granted directory", dir.display())))?;
    let opened;
    let listed = if rest.is_empty() {
        &root
    } else {
        opened = root
            .open_at(PathFlags::SYMLINK_FOLLOW, &rest, OpenFlags::DIRECTORY, DescriptorFlags::READ)
            .map_err(wasi_error)?;
        &opened
    };
    let stream = listed.read_directory().map_err(wasi_error)?;
    let mut entries = Vec::new();
    loop {
        match stream.read_directory_entry() {
            Ok(Some(entry)) => entries.push((entry.name, entry.type_ == DescriptorType::RegularFile)),
            Ok(None) => return Ok(entries),
            Err(ErrorCode::NoEntry) => continue,
            // A name that is not UTF-8 was written by neither keyward nor KES.
            Err(ErrorCode::IllegalByteSequence) => continue,
            Err(code) => return Err(wasi_error(code)),
        }
    }
}

/// The `std::io` kind [`io_error`] classifies a WASI error code by.
fn wasi_error_kind(code: wasip2::filesystem::types::ErrorCode) -> std::io::ErrorKind {
    use std::io::ErrorKind;
    use wasip2::filesystem::types::ErrorCode;
    match code {
        ErrorCode::NoEntry => ErrorKind::NotFound,
        ErrorCode::Access | ErrorCode::NotPermitted => ErrorKind::PermissionDenied,
        ErrorCode::NotDirectory => ErrorKind::NotADirectory,
        ErrorCode::ReadOnly => ErrorKind::ReadOnlyFilesystem,
        ErrorCode::InsufficientSpace => ErrorKind::StorageFull,
        ErrorCode::Quota => ErrorKind::QuotaExceeded,
        _ => ErrorKind::Other,
    }
}

/// The likely cause of a generic I/O error, named in the message.
///
/// Under wasmtime 48 the guest cannot see every cause: a read-only mount
/// arrives as a plain I/O error (`EROFS` has no WASI error code there), and so
/// does a full disk while writing a file (wasi-libc reports every failed
/// stream write as `EIO`). Which step failed still tells them apart well.
#[derive(Clone, Copy)]
enum Hint {
    /// Creating or removing a name: most likely a read-only mount.
    ReadOnly,
    /// Writing data: most likely a full disk (or a quota).
    Full,
}

impl Hint {
    fn text(self) -> &'static str {
        match self {
            Hint::ReadOnly => "the key directory may be read-only",
            Hint::Full => "the disk may be full",
        }
    }
}

/// Maps an I/O error of a change to the key directory (`create`, `delete`).
///
/// Whatever stops a change — a full disk, a read-only mount, an I/O error, the
/// directory gone — is the storage being unavailable, which a retry after the
/// operator steps in gets past. So it is never `not-found` (that would say
/// the key is absent) nor an opaque `internal` error, and a cause the error
/// itself does not name is given as a hint.
fn change_error(context: &str, err: &std::io::Error, hint: Hint) -> Error {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::StorageFull
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::QuotaExceeded
        | ErrorKind::PermissionDenied
        | ErrorKind::NotFound => Error::Unavailable(format!("{context}: {err}")),
        _ => Error::Unavailable(format!("{context}: {err}; {}", hint.text())),
    }
}

/// Fills `buf` with bytes that differ between calls and between instances.
///
/// Only uniqueness matters here (the temporary name is not a secret, and
/// `create_new` catches any collision). std on `wasm32-wasip2` seeds
/// `RandomState` from `wasi:random`, and each `RandomState::new()` on a thread
/// gets fresh keys, so hashing the clock and a position through it is enough.
fn fill_random(buf: &mut [u8]) {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::time::UNIX_EPOCH;

    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_usize(i);
        let word = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Temporary files older than this are leftovers of a crash, not an in-flight
/// create of another instance (a create takes milliseconds).
const STALE_TEMP: Duration = Duration::from_secs(600);

/// Removes temporary files left behind by a crash mid-create, then
/// [`TEMP_DIR`] itself if that emptied it. Best effort: they are invisible to
/// listings anyway, this only reclaims the space.
///
/// Reads only [`TEMP_DIR`], which holds in-flight creates and crash leftovers
/// (and is usually absent), so its cost does not depend on how many keys
/// there are. (Leftovers of versions that kept temporary files next to the
/// keys stay; listings skip them, and finding them would mean reading the
/// whole key directory.)
fn remove_stale_temps(temp_dir: &Path) {
    let Ok(entries) = fs::read_dir(temp_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_TEMP);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
    let _ = fs::remove_dir(temp_dir);
}

impl Keystore for FsKeystore {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Config = if config.trim().is_empty() {
            Config { path: default_path() }
        } else {
            serde_json::from_str(config).map_err(|e| Error::Invalid(format!("keystore-fs config: {e}")))?
        };
        let dir = PathBuf::from(&config.path);
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(Error::Invalid(format!("keystore-fs path {:?} is not a directory", config.path))),
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "keystore-fs path {:?} is not accessible (is it granted as a preopen?): {e}",
                    config.path
                )))
            }
        }
        let store = FsKeystore { dir };
        remove_stale_temps(&store.temp_dir());
        Ok(store)
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let path = self.key_path(name)?;
        // Cheap early answer for the common duplicate; the link below is what
        // actually guarantees no overwrite.
        if fs::symlink_metadata(&path).is_ok() {
            return Err(Error::Exists);
        }
        let temp = self.write_temp(value)?;
        let linked = fs::hard_link(&temp, &path);
        self.discard_temp(&temp);
        match linked {
            Ok(()) => {
                self.sync_dir();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists),
            Err(e) => Err(change_error("cannot commit key file", &e, Hint::ReadOnly)),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        let path = self.key_path(name)?;
        fs::read(&path).map_err(|e| io_error("cannot read key file", &e))
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        let path = self.key_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound),
            Err(e) => return Err(change_error("cannot remove key file", &e, Hint::ReadOnly)),
        }
        self.sync_dir();
        Ok(())
    }

    fn list(&self, prefix: &str, continue_at: &str, limit: u32) -> Result<Page, Error> {
        let limit = if limit == 0 { DEFAULT_PAGE } else { limit as usize };
        let mut names = Vec::new();
        for (name, is_file) in dir_entries(&self.dir)? {
            if is_file && !name.starts_with('.') && name.starts_with(prefix) && name.as_str() >= continue_at {
                names.push(name);
            }
        }
        names.sort_unstable();
        let next = if names.len() > limit { names[limit].clone() } else { String::new() };
        names.truncate(limit);
        Ok(Page { names, next })
    }

    fn status(&self) -> Result<(), Error> {
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::Unavailable(format!("{} is not a directory", self.dir.display()))),
            Err(e) => Err(Error::Unavailable(format!("cannot reach {}: {e}", self.dir.display()))),
        }
    }
}

keyward_sdk::export_keystore!(FsKeystore);
