//! `keyward plugin inspect FILE` and `keyward plugin check MANIFEST`.

use std::fmt::Write as _;
use std::path::Path;

use super::{EngineOptions, Manifest, PluginEngine, PluginError, WIT_PACKAGE, WIT_VERSION};

/// Why a tool command failed; the message is printed as is.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot read '{path}': {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Manifest(#[from] super::ManifestError),
    #[error("{failed} of {total} plugins failed the check")]
    Failed { failed: usize, total: usize },
}

fn engine() -> Result<PluginEngine, ToolError> {
    Ok(PluginEngine::new(EngineOptions { cache_dir: super::resolve::default_cache_dir() })?)
}

/// Describes a component file: sha256, world and WIT version, imports, exports.
pub fn inspect(path: &Path) -> Result<String, ToolError> {
    let bytes = std::fs::read(path).map_err(|source| ToolError::Read { path: path.display().to_string(), source })?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let info = engine()?.inspect(name, &bytes)?;
    let mut out = String::new();
    let _ = writeln!(out, "file:    {}", path.display());
    let _ = writeln!(out, "size:    {} bytes", bytes.len());
    let _ = writeln!(out, "sha256:  {}", info.sha256);
    match &info.world {
        Some((kind, version)) => {
            let kind = info.info.world_name().unwrap_or(kind.world());
            let note = if version == WIT_VERSION {
                String::new()
            } else {
                format!(" (this host implements {WIT_PACKAGE}@{WIT_VERSION}: it will refuse it)")
            };
            let _ = writeln!(out, "world:   {WIT_PACKAGE}/{kind}@{version}{note}");
        }
        None => {
            let _ = writeln!(out, "world:   none (not a keyward plugin: no {WIT_PACKAGE} export)");
        }
    }
    let _ = writeln!(out, "imports:");
    for i in &info.info.imports {
        let _ = writeln!(out, "  {i}");
    }
    let _ = writeln!(out, "exports:");
    for e in &info.info.exports {
        let _ = writeln!(out, "  {e}");
    }
    Ok(out)
}

/// Validates a manifest: it parses, every entry is pinned, every pin matches
/// its file, and every component compiles and implements its declared world.
/// Returns one line per plugin; fails if any entry fails.
pub fn check(path: &Path) -> Result<String, ToolError> {
    let manifest = Manifest::load(path)?;
    let engine = engine()?;
    let mut out = String::new();
    let mut failed = 0;
    for entry in &manifest.plugins {
        let missing_dir = entry.grants.dirs.iter().find(|d| !d.host.is_dir());
        let result = if entry.sha256.is_none() {
            Err("no sha256 pin (required unless the server runs with --dev)".to_string())
        } else if let Some(d) = missing_dir {
            Err(format!("granted directory '{}' does not exist", d.host.display()))
        } else {
            engine.load(&entry.spec()).map(|_| ()).map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                let _ = writeln!(out, "ok    {} ({}, {})", entry.name, entry.kind.world(), entry.path.display());
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(out, "FAIL  {}: {e}", entry.name);
            }
        }
    }
    if failed > 0 {
        eprint!("{out}");
        return Err(ToolError::Failed { failed, total: manifest.plugins.len() });
    }
    let _ = writeln!(out, "{} plugins ok", manifest.plugins.len());
    Ok(out)
}
