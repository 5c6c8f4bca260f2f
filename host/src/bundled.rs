//! The first-party plugins, embedded at build time (see `build.rs`).
//!
//! A config that names one of these with no manifest entry of that name uses
//! the embedded copy, which needs no sha256 pin: it is part of the binary.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The config name of each bundled plugin and the crate that builds it.
const NAMES: &[(&str, &str)] =
    &[("fs", "keystore-fs"), ("audit-file", "audit-file"), ("audit-webhook", "audit-webhook")];

/// The embedded component for a plugin name used in configs (`fs`,
/// `audit-file`, `audit-webhook`).
pub fn find(name: &str) -> Option<&'static [u8]> {
    let krate = NAMES.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)?;
    BUNDLED.iter().find(|(k, _)| *k == krate).map(|(_, bytes)| *bytes)
}

/// Names of all bundled plugins, for messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    NAMES.iter().map(|(n, _)| *n)
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
