//! TOML text for `keyward config import`: strings and keys as the `toml`
//! crate's own writer (`toml_writer`) spells them, so every escape is the
//! TOML library's. Strings are always basic (`"…"`, one line), so each
//! emitted setting stays on its line next to its comment.

use toml_writer::{TomlKeyBuilder, TomlStringBuilder, TomlWrite as _};

/// A TOML basic string.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = out.value(TomlStringBuilder::new(s).as_basic());
    out
}

/// A TOML key: bare when it may be, quoted otherwise (`"/v1/ready"`).
pub(super) fn toml_key(s: &str) -> String {
    let key = TomlKeyBuilder::new(s);
    let mut out = String::new();
    let _ = out.key(key.as_unquoted().unwrap_or_else(|| key.as_basic()));
    out
}

/// A TOML array of strings on one line.
pub(super) fn array(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "))
}
