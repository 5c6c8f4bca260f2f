//! The private directory a plugin's `grants.state` asks for: created when
//! the plugin is loaded, shared by all its instances, removed when the
//! plugin is unloaded (a reload makes a new one).
//!
//! Pooled instances come and go (one is discarded after a trap or timeout),
//! so what they must share lives here rather than in any one instance: a
//! networked keystore keeps its login token in it, so that a new instance
//! does not log in again. The directory is in `$XDG_RUNTIME_DIR` (a tmpfs
//! private to the user) when the server has one, else in the temporary
//! directory, mode 0700, under a random name; nothing in it outlives the
//! process.

use std::path::{Path, PathBuf};

use super::PluginError;

/// One plugin load's state directory.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
    guest: String,
}

impl Scratch {
    /// Creates the directory the plugin will see as `guest`.
    pub(crate) fn create(plugin: &str, guest: &str) -> Result<Scratch, PluginError> {
        let parent = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        // tempfile creates directories with mode 0700.
        let dir = tempfile::Builder::new().prefix("keyward-plugin-state-").tempdir_in(&parent).map_err(|e| {
            PluginError::Sandbox {
                plugin: plugin.to_string(),
                message: format!("cannot create its state directory in {}: {e}", parent.display()),
            }
        })?;
        Ok(Scratch { dir, guest: guest.to_string() })
    }

    pub(crate) fn host(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn guest(&self) -> &str {
        &self.guest
    }
}
