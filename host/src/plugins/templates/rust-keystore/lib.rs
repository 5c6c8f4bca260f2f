//! {{name}}: a keyward keystore plugin. Each key is one file in a directory
//! the host grants (`--grant-dir /var/lib/{{name}}:/data`), named by the key;
//! the configuration says which directory: `{"path": "/data"}`.
//!
//! Instances of a plugin are pooled and replaced at any time, so nothing is
//! kept in memory between calls: every call works on the directory, and
//! `create` is atomic across instances (a temporary file hard-linked to its
//! name, which fails if the name is taken). Replace the file operations with
//! calls to your backend to store keys elsewhere.

use std::cell::RefCell;
use std::fs;
use std::io::Write as _;
use std::path::PathBuf;

wit_bindgen::generate!({ world: "keyward:plugin/keystore@0.1.0", path: "wit/keyward-plugin@0.1.0" });

use exports::keyward::plugin::keystore_api::Guest;
use keyward::plugin::types::Error;

thread_local! {
    /// The directory `init` was given.
    static DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

fn dir() -> Result<PathBuf, Error> {
    DIR.with(|d| d.borrow().clone()).ok_or_else(|| Error::Internal("called before init".into()))
}

/// The file of key `name`; names that are not one plain file name are refused.
fn key_path(name: &str) -> Result<PathBuf, Error> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("key name {name:?} cannot be a file name")));
    }
    Ok(dir()?.join(name))
}

fn io(what: &str, e: &std::io::Error) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

struct Keystore;

impl Guest for Keystore {
    fn init(config: String) -> Result<(), Error> {
        // A tiny parser keeps the template free of dependencies: the config
        // is `{"path": "/data"}`; use serde_json for anything richer.
        let path = config
            .split('"')
            .skip_while(|s| *s != "path")
            .nth(2)
            .ok_or_else(|| Error::Invalid("config needs {\"path\": \"/data\"}".into()))?;
        if !fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(Error::Invalid(format!("{path} is not a directory the host granted")));
        }
        DIR.with(|d| *d.borrow_mut() = Some(PathBuf::from(path)));
        Ok(())
    }

    fn create(name: String, value: Vec<u8>) -> Result<(), Error> {
        let path = key_path(&name)?;
        let temp = dir()?.join(format!(".tmp-{name}-{:016x}", random()));
        let written = (|| {
            let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
            file.write_all(&value)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io("cannot write key file", &e));
        }
        let linked = fs::hard_link(&temp, &path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists),
            Err(e) => Err(io("cannot commit key file", &e)),
        }
    }

    fn get(name: String) -> Result<Vec<u8>, Error> {
        match fs::read(key_path(&name)?) {
            Ok(value) => Ok(value),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound),
            Err(e) => Err(io("cannot read key file", &e)),
        }
    }

    fn delete(name: String) -> Result<(), Error> {
        match fs::remove_file(key_path(&name)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound),
            Err(e) => Err(io("cannot remove key file", &e)),
        }
    }

    fn list(prefix: String, continue_at: String, limit: u32) -> Result<(Vec<String>, String), Error> {
        let entries = fs::read_dir(dir()?).map_err(|e| io("cannot list keys", &e))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && n.starts_with(&prefix) && *n >= continue_at)
            .collect();
        names.sort_unstable();
        let limit = if limit == 0 { 1000 } else { limit as usize };
        let next = names.get(limit).cloned().unwrap_or_default();
        names.truncate(limit);
        Ok((names, next))
    }

    fn status() -> Result<(), Error> {
        fs::metadata(dir()?).map(|_| ()).map_err(|e| Error::Unavailable(format!("key directory: {e}")))
    }
}

/// 64 random bits for temporary names: std's hasher keys are seeded from
/// WASI's random source, and each `RandomState` differs.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

export!(Keystore);
