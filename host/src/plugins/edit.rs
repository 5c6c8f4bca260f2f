//! Editing `plugins.toml` in place: one `[[plugin]]` entry added or removed,
//! every other byte (comments, order, spacing) kept. The edited text is
//! parsed and validated as the server would before it replaces the file, and
//! it replaces it atomically: a failed command leaves the file as it was.

use std::path::Path;

use keyward_plugin_host::{Manifest, PluginKind};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table};

use super::PluginCmdError;

/// A new `[[plugin]]` entry, as `plugin add` writes it.
#[derive(Debug, Default)]
pub struct NewEntry {
    pub name: String,
    pub kind: Option<PluginKind>,
    /// As written into the manifest (relative to it when the file is beside it).
    pub path: String,
    pub sha256: String,
    /// Where a fetched component came from, for `plugin pull`.
    pub source: Option<String>,
    /// `(host, guest)` directory grants.
    pub dirs: Vec<(String, String)>,
    pub hosts: Vec<String>,
    pub env: Vec<String>,
    pub memory: Option<String>,
    pub call_timeout: Option<String>,
}

/// The manifest's text, or an empty one when the file does not exist yet.
pub fn read(manifest: &Path) -> Result<String, PluginCmdError> {
    match std::fs::read_to_string(manifest) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(PluginCmdError::Read { path: manifest.display().to_string(), source }),
    }
}

fn document(manifest: &Path, text: &str) -> Result<DocumentMut, PluginCmdError> {
    text.parse::<DocumentMut>()
        .map_err(|e| PluginCmdError::Manifest(format!("{}: {}", manifest.display(), e.to_string().trim())))
}

/// `text` with `entry` appended as a new `[[plugin]]`.
pub fn with_entry(manifest: &Path, text: &str, entry: &NewEntry) -> Result<String, PluginCmdError> {
    let mut doc = document(manifest, text)?;
    let mut table = Table::new();
    table.insert("name", value(&entry.name));
    if let Some(kind) = entry.kind {
        table.insert("kind", value(kind.world()));
    }
    table.insert("path", value(&entry.path));
    table.insert("sha256", value(&entry.sha256));
    if let Some(source) = &entry.source {
        table.insert("source", value(source));
    }
    let mut grants = Table::new();
    if !entry.dirs.is_empty() {
        let mut dirs = Array::new();
        for (host, guest) in &entry.dirs {
            let mut dir = InlineTable::new();
            dir.insert("host", host.as_str().into());
            dir.insert("guest", guest.as_str().into());
            dirs.push(dir);
        }
        grants.insert("dirs", value(dirs));
    }
    for (key, list) in [("hosts", &entry.hosts), ("env", &entry.env)] {
        if !list.is_empty() {
            grants.insert(key, value(list.iter().map(String::as_str).collect::<Array>()));
        }
    }
    if !grants.is_empty() {
        table.insert("grants", Item::Table(grants));
    }
    let mut limits = Table::new();
    for (key, v) in [("memory", &entry.memory), ("call_timeout", &entry.call_timeout)] {
        if let Some(v) = v {
            limits.insert(key, value(v));
        }
    }
    if !limits.is_empty() {
        table.insert("limits", Item::Table(limits));
    }
    match doc.get_mut("plugin") {
        None => {
            let mut plugins = ArrayOfTables::new();
            plugins.push(table);
            doc.insert("plugin", Item::ArrayOfTables(plugins));
        }
        Some(Item::ArrayOfTables(plugins)) => plugins.push(table),
        Some(_) => {
            return Err(PluginCmdError::Manifest(format!("{}: `plugin` is not [[plugin]] entries", manifest.display())))
        }
    }
    Ok(doc.to_string())
}

/// `text` without the `[[plugin]]` entry named `name`.
pub fn without_entry(manifest: &Path, text: &str, name: &str) -> Result<String, PluginCmdError> {
    let mut doc = document(manifest, text)?;
    let Some(Item::ArrayOfTables(plugins)) = doc.get_mut("plugin") else {
        return Err(PluginCmdError::NoEntry { name: name.to_string(), manifest: manifest.display().to_string() });
    };
    let index = plugins
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
        .ok_or_else(|| PluginCmdError::NoEntry { name: name.to_string(), manifest: manifest.display().to_string() })?;
    plugins.remove(index);
    if plugins.is_empty() {
        doc.remove("plugin");
    }
    Ok(doc.to_string())
}

/// Checks `text` as the server would read it, then replaces `manifest` with
/// it atomically.
pub fn replace(manifest: &Path, text: &str) -> Result<(), PluginCmdError> {
    Manifest::parse(text, manifest, &super::base_of(manifest)).map_err(|e| PluginCmdError::Manifest(e.to_string()))?;
    super::write_atomic(manifest, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMENTED: &str = "# Plugins of this server.\n\n[[plugin]]\nname = \"fs\"  # the keys\nkind = \"keystore\"\n\
                             path = \"keystore_fs.wasm\"\nsha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n\n# the audit sink\n[[plugin]]\nname = \"a\"\n\
                             kind = \"audit-sink\"\npath = \"a.wasm\"\n";

    fn entry() -> NewEntry {
        NewEntry {
            name: "etcd".into(),
            kind: Some(PluginKind::Keystore),
            path: "plugins/etcd.wasm".into(),
            sha256: "b".repeat(64),
            source: Some("https://example.invalid/etcd.wasm".into()),
            dirs: vec![("/var/lib/k".into(), "/data".into())],
            hosts: vec!["https://etcd:2379".into()],
            memory: Some("32MiB".into()),
            ..NewEntry::default()
        }
    }

    #[test]
    fn adding_keeps_every_comment_and_entry_and_removing_restores_the_text() {
        let path = Path::new("plugins.toml");
        let added = with_entry(path, COMMENTED, &entry()).unwrap();
        assert!(added.starts_with(COMMENTED), "the existing text changed:\n{added}");
        let parsed = Manifest::parse(&added, path, Path::new("/etc/keyward")).unwrap();
        let etcd = parsed.get("etcd").unwrap();
        assert_eq!(etcd.grants.hosts, ["https://etcd:2379"]);
        assert_eq!(etcd.source.as_deref(), Some("https://example.invalid/etcd.wasm"));
        assert_eq!(etcd.limits.memory, 32 << 20);
        let removed = without_entry(path, &added, "etcd").unwrap();
        assert_eq!(removed.trim_end(), COMMENTED.trim_end());
        let no_fs = without_entry(path, COMMENTED, "fs").unwrap();
        assert!(no_fs.contains("# the audit sink") && !no_fs.contains("keystore_fs.wasm"), "{no_fs}");
    }

    #[test]
    fn an_empty_manifest_gets_its_first_entry_and_unknown_names_are_refused() {
        let path = Path::new("plugins.toml");
        let text = with_entry(path, "", &entry()).unwrap();
        assert!(text.starts_with("[[plugin]]\nname = \"etcd\""), "{text}");
        let err = without_entry(path, COMMENTED, "nope").unwrap_err();
        assert_eq!(err.to_string(), "no [[plugin]] named 'nope' in plugins.toml");
    }

    #[test]
    fn a_failed_replace_leaves_the_file_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("plugins.toml");
        std::fs::write(&manifest, COMMENTED).unwrap();
        // A duplicate name does not validate: nothing is written.
        let bad = format!("{COMMENTED}[[plugin]]\nname = \"fs\"\nkind = \"keystore\"\npath = \"x.wasm\"\n");
        assert!(replace(&manifest, &bad).is_err());
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), COMMENTED);
        let good = with_entry(&manifest, COMMENTED, &entry()).unwrap();
        replace(&manifest, &good).unwrap();
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), good);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
