//! The configuration files in `examples/` are valid, and the sha256 pins in
//! `examples/plugins.toml` are those of the plugins this build produced, so a
//! pin left stale after a plugin change fails here (with the new value). The
//! plugin build is reproducible (see `host/build.rs`), so this holds in every
//! checkout, wherever it is.

use std::path::{Path, PathBuf};

use keyward_plugin_host::{sha256_hex, Manifest, PluginKind};
use keyward_server::config::{File, Settings};

use crate::{guests, shared_engine};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("examples")
}

/// Parses, expands and validates `examples/<name>` as `keyward server
/// --config` would (minus reading the TLS files).
fn settings(name: &str) -> Settings {
    // The identities the example configs read from the environment.
    std::env::set_var("KEYWARD_ADMIN_IDENTITY", "0f".repeat(32));
    std::env::set_var("KEYWARD_APP_IDENTITY", "a1".repeat(32));
    let path = examples().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut file = File::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    file.expand_env().unwrap_or_else(|e| panic!("{e}"));
    Settings::from_file(file).unwrap_or_else(|e| panic!("{e}"))
}

fn manifest() -> Manifest {
    let m = Manifest::load(&examples().join("plugins.toml")).unwrap_or_else(|e| panic!("{e}"));
    m.require_pins().unwrap_or_else(|e| panic!("{e}"));
    m
}

#[test]
fn example_dev_config_is_valid() {
    let s = settings("dev.toml");
    assert!(s.address.ip().is_loopback());
    assert_eq!(s.keystore.as_ref().unwrap().plugin, "fs");
    assert!(s.plugin_manifest.is_none(), "dev.toml uses the embedded plugins");
}

#[test]
fn example_production_config_is_valid_and_its_plugins_are_in_the_manifest() {
    let s = settings("production.toml");
    assert_eq!(s.tls.auth, keyward_server::config::ClientAuth::Verify);
    assert!(s.keystore.as_ref().unwrap().seal.is_some(), "production seals keys at rest");
    assert_eq!(s.policies["my-app"].identities, vec!["a1".repeat(32)]);
    // The manifest it names is the example one (relative to examples/, the
    // working directory the config's comments run it from).
    assert_eq!(s.plugin_manifest.as_deref(), Some(Path::new("plugins.toml")));
    let m = manifest();
    let keystore = s.keystore.as_ref().unwrap();
    let entry = m.get(&keystore.plugin).unwrap_or_else(|| panic!("no manifest entry {:?}", keystore.plugin));
    assert_eq!(entry.kind, PluginKind::Keystore);
    assert!(!s.audit.is_empty());
    for a in &s.audit {
        let entry = m.get(&a.plugin).unwrap_or_else(|| panic!("no manifest entry {:?}", a.plugin));
        assert_eq!(entry.kind, PluginKind::AuditSink);
    }
}

#[test]
fn example_plugins_toml_pins_the_plugins_this_build_made() {
    let m = manifest();
    assert!(m.get("fs").is_some() && m.get("audit-file").is_some(), "{m:?}");
    let built = guests::bundled_dir();
    let mut stale = Vec::new();
    for entry in &m.plugins {
        let file = entry.path.file_name().unwrap();
        // The entry points at the bundled components.
        assert!(
            entry.path.ends_with(Path::new("host/plugin-host/bundled").join(file)),
            "{}: {}",
            entry.name,
            entry.path.display()
        );
        let path = built.join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let actual = sha256_hex(&bytes);
        if entry.sha256.as_deref() != Some(actual.as_str()) {
            stale.push(format!(
                "  {} ({}): pinned {:?}, built {actual}",
                entry.name,
                file.to_string_lossy(),
                entry.sha256
            ));
        }
    }
    // The pinned files are the checked-in bundled components (which
    // `bundled.rs` holds to their sources): a mismatch means they changed
    // and the pins were not refreshed.
    assert!(
        stale.is_empty(),
        "examples/plugins.toml pins plugins other than the ones in {}:\n{}\n\
         Refresh the pins with `examples/update-pins.sh`, review the diff and commit it.",
        built.display(),
        stale.join("\n")
    );
    // And each entry loads through the engine as the server would load it:
    // pin checked, compiled, world and imports vetted.
    for entry in &m.plugins {
        let mut spec = entry.spec();
        let file = built.join(entry.path.file_name().unwrap());
        spec.sha256 = Some(sha256_hex(&std::fs::read(&file).unwrap()));
        spec.source = keyward_plugin_host::PluginSource::File(file);
        shared_engine().load(&spec).unwrap_or_else(|e| panic!("{e}"));
    }
}
