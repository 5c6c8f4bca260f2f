//! The components bundled into the binary (`host/plugin-host/bundled/`) are exactly what
//! their sources in `plugins/` build: a change to a plugin, the SDK, `wit/`,
//! `plugins/Cargo.lock` or the toolchain that was not followed by refreshing
//! the checked-in files fails here.
//!
//! Refresh them with `KEYWARD_UPDATE_BUNDLED=1 cargo test --test plugin bundled`
//! (which copies the fresh build over them), then `examples/update-pins.sh`.

use crate::guests;

#[test]
fn bundled_components_are_what_their_sources_build() {
    let update = std::env::var_os("KEYWARD_UPDATE_BUNDLED").is_some();
    let mut stale = Vec::new();
    for (krate, file) in guests::BUNDLED {
        let built = std::fs::read(guests::built_dir().join(file)).unwrap();
        let checked_in_path = guests::bundled_dir().join(file);
        let checked_in = std::fs::read(&checked_in_path).unwrap_or_default();
        // The binary embeds exactly the checked-in file.
        let embedded = keyward_plugin_host::bundled::BUNDLED.iter().find(|b| b.krate == *krate).unwrap().bytes;
        assert_eq!(
            embedded,
            &checked_in[..],
            "{file}: the binary embeds another file than host/plugin-host/bundled/{file}"
        );
        if built != checked_in {
            if update {
                std::fs::write(&checked_in_path, &built).unwrap();
            }
            stale.push(format!(
                "  {file} (from plugins/{krate}): checked in {}, built {}",
                keyward_plugin_host::sha256_hex(&checked_in),
                keyward_plugin_host::sha256_hex(&built)
            ));
        }
    }
    assert!(
        stale.is_empty() || update,
        "host/plugin-host/bundled/ holds other components than plugins/ builds:\n{}\n\
         If you changed a plugin (or plugins/Cargo.lock, wit/, the SDK or rust-toolchain.toml), refresh them with \
         `KEYWARD_UPDATE_BUNDLED=1 cargo test --test plugin bundled` and `examples/update-pins.sh`, review and \
         commit. If you changed none of those, the guest build is no longer reproducible: compare two builds \
         (`strings`, `wasm-tools objdump`) for paths or settings that leak in, and fix tests/common/guests.rs.",
        stale.join("\n")
    );
}

/// Cargo mixes a path crate's location into its symbol hashes, relative to the
/// workspace root when the crate lies under it and as an absolute path when it
/// does not. Every crate of the guest workspace must therefore be reached
/// through a path under `plugins/` (the SDK through the `plugins/sdk`
/// symlink), or the components would differ from one checkout path to the next.
#[test]
fn every_guest_crate_is_reached_through_a_path_under_the_guest_workspace() {
    let plugins = guests::root().join("plugins");
    let manifest: toml::Table = std::fs::read_to_string(plugins.join("Cargo.toml")).unwrap().parse().unwrap();
    let workspace = manifest["workspace"].as_table().unwrap();
    let mut paths: Vec<String> =
        workspace["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect();
    for dep in workspace["dependencies"].as_table().unwrap().values() {
        if let Some(path) = dep.get("path").and_then(|p| p.as_str()) {
            paths.push(path.to_owned());
        }
    }
    let outside: Vec<&String> = paths.iter().filter(|p| p.starts_with("..") || p.starts_with('/')).collect();
    assert!(outside.is_empty(), "plugins/Cargo.toml reaches crates outside plugins/: {outside:?}");
    let sdk = std::fs::symlink_metadata(plugins.join("sdk")).unwrap();
    assert!(sdk.file_type().is_symlink(), "plugins/sdk must be the symlink to the SDK's home, ../sdk");
    assert_eq!(
        std::fs::canonicalize(plugins.join("sdk")).unwrap(),
        std::fs::canonicalize(guests::root().join("sdk")).unwrap()
    );
}
