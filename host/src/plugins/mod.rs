//! `keyward plugin add`, `rm`, `ls` and `pull`: the manifest (`plugins.toml`)
//! managed from the command line. A component is fetched (a local file or an
//! `https://` URL), checked to implement a world this host runs, pinned by
//! its sha256 and described with the grants given on the command line, and
//! nothing more (deny by default). The server itself never fetches: it loads
//! local files whose digests match the manifest.

mod contract;
mod edit;
mod fetch;
mod new;
mod oci;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use keyward_plugin_host::{sha256_hex, EngineOptions, Manifest, PluginEngine, PluginKind, WIT_PACKAGE, WIT_VERSION};

pub use contract::{test, TestRequest};
pub use edit::NewEntry;
pub use new::new;

/// Why a `keyward plugin` manifest command failed; printed as is.
#[derive(Debug, thiserror::Error)]
pub enum PluginCmdError {
    #[error("cannot read '{path}': {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write '{path}': {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{0}")]
    Manifest(String),
    #[error("no [[plugin]] named '{name}' in {manifest}")]
    NoEntry { name: String, manifest: String },
    #[error("{0}")]
    Fetch(String),
    #[error("{0}")]
    Refused(String),
}

/// What `keyward plugin add` was asked to do.
#[derive(Debug, Default)]
pub struct AddRequest {
    pub source: String,
    pub manifest: PathBuf,
    pub name: Option<String>,
    /// Where a fetched component is written (default: beside the manifest).
    pub dir: Option<PathBuf>,
    /// `HOST:GUEST` directory grants.
    pub grant_dirs: Vec<String>,
    pub grant_hosts: Vec<String>,
    pub grant_env: Vec<String>,
    pub memory: Option<String>,
    pub call_timeout: Option<String>,
}

/// `--grant-dir HOST:GUEST` values as (host, guest) pairs.
fn dir_grants(values: &[String]) -> Result<Vec<(String, String)>, PluginCmdError> {
    values
        .iter()
        .map(|grant| {
            let (host, guest) = grant.rsplit_once(':').ok_or_else(|| {
                PluginCmdError::Refused(format!("--grant-dir {grant:?}: expected HOST:GUEST, e.g. /var/lib/keys:/data"))
            })?;
            Ok((host.to_string(), guest.to_string()))
        })
        .collect()
}

fn engine() -> Result<PluginEngine, PluginCmdError> {
    let options = EngineOptions { cache_dir: keyward_plugin_host::resolve::default_cache_dir() };
    PluginEngine::new(options).map_err(|e| PluginCmdError::Refused(e.to_string()))
}

/// The directory of a file (the manifest's: what its relative paths are
/// against), `.` for a bare file name.
fn base_of(manifest: &Path) -> PathBuf {
    manifest.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| ".".into())
}

/// The world a component implements and what it imports, or why this host
/// would refuse it.
struct Checked {
    kind: PluginKind,
    world: String,
    imports: Vec<String>,
    exports: Vec<String>,
}

fn check_component(name: &str, bytes: &[u8]) -> Result<Checked, PluginCmdError> {
    let inspection = engine()?.inspect(name, bytes).map_err(|e| PluginCmdError::Refused(e.to_string()))?;
    let Some((kind, version)) = &inspection.world else {
        return Err(PluginCmdError::Refused(format!(
            "{name}: not a keyward plugin: the component exports no {WIT_PACKAGE} interface"
        )));
    };
    if version != WIT_VERSION {
        return Err(PluginCmdError::Refused(format!(
            "{name}: implements {WIT_PACKAGE}@{version}; this host runs {WIT_PACKAGE}@{WIT_VERSION}"
        )));
    }
    let world = inspection.info.world_name().unwrap_or(kind.world()).to_string();
    Ok(Checked {
        kind: *kind,
        world: format!("{WIT_PACKAGE}/{world}@{version}"),
        imports: inspection.info.imports,
        exports: inspection.info.exports,
    })
}

/// The grants a component's imports call for (what `add` suggests).
fn grants_needed(imports: &[String]) -> Vec<&'static str> {
    let mut needed = Vec::new();
    if imports.iter().any(|i| i.starts_with("wasi:filesystem/")) {
        needed.push("--grant-dir HOST:GUEST (it imports wasi:filesystem)");
    }
    if imports.iter().any(|i| i.starts_with("wasi:http/outgoing-handler")) {
        needed.push("--grant-host ORIGIN (it imports wasi:http/outgoing-handler)");
    }
    if imports.iter().any(|i| i.starts_with("wasi:cli/environment")) {
        needed.push("--grant-env NAME, if it reads configuration from the environment");
    }
    needed
}

/// A plugin name from a file name: its stem, with characters outside the
/// manifest's name alphabet replaced.
fn name_from(source: &str) -> String {
    let last = source.rsplit('/').next().unwrap_or(source);
    // An OCI reference's repository, without its tag or digest.
    let last = match source.starts_with("oci://") {
        true => last.split('@').next().unwrap_or(last).split(':').next().unwrap_or(last),
        false => last,
    };
    let stem = last.strip_suffix(".wasm").unwrap_or(last);
    let name: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    if name.is_empty() {
        "plugin".into()
    } else {
        name
    }
}

/// `path` as the manifest should name it: relative to the manifest's
/// directory when it lies under it, else absolute.
fn manifest_path(base: &Path, path: &Path) -> Result<String, PluginCmdError> {
    let absolute = std::fs::canonicalize(path)
        .map_err(|source| PluginCmdError::Read { path: path.display().to_string(), source })?;
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let shown = absolute.strip_prefix(&base).map(Path::to_path_buf).unwrap_or(absolute);
    Ok(shown.display().to_string())
}

/// `keyward plugin add`: fetch, check, pin, and add the entry.
pub fn add(req: &AddRequest) -> Result<String, PluginCmdError> {
    let text = edit::read(&req.manifest)?;
    let base = base_of(&req.manifest);
    let existing = Manifest::parse(&text, &req.manifest, &base).map_err(|e| PluginCmdError::Manifest(e.to_string()))?;
    let name = req.name.clone().unwrap_or_else(|| name_from(&req.source));
    if existing.get(&name).is_some() {
        return Err(PluginCmdError::Refused(format!(
            "{}: a plugin named '{name}' is already there (remove it with `keyward plugin rm {name}`, or pick --name)",
            req.manifest.display()
        )));
    }
    let fetched = fetch::fetch(&req.source)?;
    let checked = check_component(&name, &fetched.bytes)?;
    let sha256 = sha256_hex(&fetched.bytes);
    let dirs = dir_grants(&req.grant_dirs)?;
    let (path, source) = match &fetched.local {
        Some(local) => (manifest_path(&base, local)?, None),
        None => {
            let dir = req.dir.clone().unwrap_or_else(|| base.clone());
            std::fs::create_dir_all(&dir)
                .map_err(|source| PluginCmdError::Write { path: dir.display().to_string(), source })?;
            let file = dir.join(format!("{name}.wasm"));
            if file.exists() {
                return Err(PluginCmdError::Refused(format!("{} exists; pick --name or --dir", file.display())));
            }
            write_atomic(&file, &fetched.bytes)?;
            (manifest_path(&base, &file)?, Some(fetched.pinned.clone().unwrap_or_else(|| req.source.clone())))
        }
    };
    let entry = NewEntry {
        name: name.clone(),
        kind: Some(checked.kind),
        path,
        sha256: sha256.clone(),
        source,
        dirs,
        hosts: req.grant_hosts.clone(),
        env: req.grant_env.clone(),
        memory: req.memory.clone(),
        call_timeout: req.call_timeout.clone(),
    };
    let updated = edit::with_entry(&req.manifest, &text, &entry)?;
    let written = edit::replace(&req.manifest, &updated);
    if written.is_err() && entry.source.is_some() {
        // The fetched file is not referenced by anything: take it back.
        let _ = std::fs::remove_file(base.join(&entry.path));
    }
    written?;
    let mut out = String::new();
    let _ = writeln!(out, "added '{name}' to {}", req.manifest.display());
    let _ = writeln!(out, "  world:   {}", checked.world);
    let _ = writeln!(out, "  sha256:  {sha256}");
    let _ = writeln!(out, "  path:    {}", entry.path);
    let _ = writeln!(out, "  imports: {}", checked.imports.join(", "));
    let granted = entry.dirs.len() + entry.hosts.len() + entry.env.len();
    let _ = writeln!(out, "  grants:  {}", if granted == 0 { "none".to_string() } else { format!("{granted}") });
    for hint in grants_needed(&checked.imports) {
        let _ = writeln!(out, "  may need {hint}");
    }
    Ok(out)
}

/// `keyward plugin rm NAME`: the entry goes; its file stays.
pub fn rm(manifest: &Path, name: &str) -> Result<String, PluginCmdError> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|source| PluginCmdError::Read { path: manifest.display().to_string(), source })?;
    let updated = edit::without_entry(manifest, &text, name)?;
    edit::replace(manifest, &updated)?;
    Ok(format!("removed '{name}' from {}\n", manifest.display()))
}

/// `keyward plugin ls`: every entry, its pin, world, and whether its file is
/// present and matches the pin.
pub fn ls(manifest: &Path) -> Result<String, PluginCmdError> {
    let m = Manifest::load(manifest).map_err(|e| PluginCmdError::Manifest(e.to_string()))?;
    let mut out = String::new();
    for entry in &m.plugins {
        let pin = entry.sha256.as_deref().unwrap_or("(no pin)");
        let state = match std::fs::read(&entry.path) {
            Err(_) => "MISSING".to_string(),
            Ok(bytes) if entry.sha256.as_deref().is_some_and(|p| p != sha256_hex(&bytes)) => "MISMATCH".to_string(),
            Ok(bytes) => match check_component(&entry.name, &bytes) {
                Ok(c) => format!("ok {}", c.world),
                Err(e) => format!("REFUSED ({e})"),
            },
        };
        let _ = writeln!(out, "{}\t{}\t{}\t{}\t{state}", entry.name, entry.kind.world(), entry.path.display(), pin);
    }
    Ok(out)
}

/// `keyward plugin pull`: fetch again every entry with a `source`, and
/// replace its file when the bytes match the pin.
pub fn pull(manifest: &Path) -> Result<String, PluginCmdError> {
    let m = Manifest::load(manifest).map_err(|e| PluginCmdError::Manifest(e.to_string()))?;
    let mut out = String::new();
    for entry in m.plugins.iter() {
        let Some(source) = &entry.source else { continue };
        let fetched = fetch::fetch(source)?;
        let digest = sha256_hex(&fetched.bytes);
        if entry.sha256.as_deref() != Some(digest.as_str()) {
            return Err(PluginCmdError::Refused(format!(
                "{}: {source} now serves sha256 {digest}, but the manifest pins {}; nothing was written",
                entry.name,
                entry.sha256.as_deref().unwrap_or("nothing")
            )));
        }
        write_atomic(&entry.path, &fetched.bytes)?;
        let _ = writeln!(out, "pulled '{}' ({digest}) into {}", entry.name, entry.path.display());
    }
    Ok(out)
}

/// `keyward plugin push FILE oci://…`: publish a component as a
/// WebAssembly OCI artifact (the layout `wkg oci push` writes), after the
/// same checks `plugin add` makes; the pushed reference, digest included.
pub fn push(file: &Path, target: &str) -> Result<String, PluginCmdError> {
    if !target.starts_with("oci://") {
        return Err(PluginCmdError::Refused(format!("{target}: push to an oci:// reference")));
    }
    let bytes =
        std::fs::read(file).map_err(|source| PluginCmdError::Read { path: file.display().to_string(), source })?;
    let name = name_from(&file.display().to_string());
    let checked = check_component(&name, &bytes)?;
    let sha256 = sha256_hex(&bytes);
    let file_name =
        file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("{name}.wasm"));
    let description =
        oci::ComponentDescription { sha256: sha256.clone(), exports: checked.exports, imports: checked.imports };
    let pushed = oci::push(bytes, &file_name, &description, target)?;
    let mut out = String::new();
    let _ = writeln!(out, "pushed {pushed}");
    let _ = writeln!(out, "  world:   {}", checked.world);
    let _ = writeln!(out, "  sha256:  {sha256} (the component)");
    let _ = writeln!(out, "add it with: keyward plugin add {pushed}");
    Ok(out)
}

/// Writes `bytes` to `path` atomically (a synced temporary file renamed
/// over it, then the directory synced), keeping the permissions of the
/// file it replaces.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PluginCmdError> {
    let dir = base_of(path);
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new().prefix(".plugin.").tempfile_in(&dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            tmp.as_file().set_permissions(meta.permissions())?;
        }
        tmp.persist(path).map_err(|e| e.error)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    write().map_err(|source| PluginCmdError::Write { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_file_name() {
        assert_eq!(name_from("/x/keystore_fs.wasm"), "keystore_fs");
        assert_eq!(name_from("https://h/p/my plugin.wasm"), "my-plugin");
        assert_eq!(name_from(".wasm"), "plugin");
        assert_eq!(name_from("oci://127.0.0.1:5000/plugins/store:1.0"), "store");
        assert_eq!(name_from("oci://r.example/p/store@sha256:ab"), "store");
    }

    #[test]
    fn imports_suggest_grants() {
        let imports = vec!["wasi:filesystem/preopens@0.2.0".to_string(), "wasi:http/outgoing-handler@0.2.0".into()];
        let needed = grants_needed(&imports);
        assert!(needed[0].starts_with("--grant-dir") && needed[1].starts_with("--grant-host"), "{needed:?}");
    }
}
