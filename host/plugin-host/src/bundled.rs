//! The first-party plugins, embedded in the binary.
//!
//! The components are checked in under `host/plugin-host/bundled/` (built from
//! `plugins/`; `bundled/README.md` says how), so building keyward needs no
//! wasm toolchain. `tests/plugin/bundled.rs` checks that they are exactly
//! what their sources build.
//!
//! A config that names one of these with no manifest entry of that name uses
//! the embedded copy, which needs no sha256 pin: it is part of the binary.

/// One bundled plugin.
pub struct Bundled {
    /// The name configs use (`plugin = "fs"`).
    pub name: &'static str,
    /// The crate in `plugins/` that builds it.
    pub krate: &'static str,
    /// The component.
    pub bytes: &'static [u8],
}

/// Every bundled plugin.
pub const BUNDLED: &[Bundled] = &[
    Bundled { name: "fs", krate: "keystore-fs", bytes: include_bytes!("../bundled/keystore_fs.wasm") },
    Bundled { name: "audit-file", krate: "audit-file", bytes: include_bytes!("../bundled/audit_file.wasm") },
    Bundled { name: "audit-webhook", krate: "audit-webhook", bytes: include_bytes!("../bundled/audit_webhook.wasm") },
];

/// The embedded component for a plugin name used in configs (`fs`,
/// `audit-file`, `audit-webhook`).
pub fn find(name: &str) -> Option<&'static [u8]> {
    BUNDLED.iter().find(|b| b.name == name).map(|b| b.bytes)
}

/// Names of all bundled plugins, for messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUNDLED.iter().map(|b| b.name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bundled_plugins_are_components() {
        for name in super::names() {
            let bytes = super::find(name).unwrap();
            // A component's preamble: \0asm, then version 0x0d and layer 1.
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
            assert_eq!(&bytes[4..8], &[0x0d, 0x00, 0x01, 0x00], "{name} is not a component");
        }
    }
}
