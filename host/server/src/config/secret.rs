//! Secret settings: wiped on drop, never shown by `Debug`.

use serde::Deserialize;
use zeroize::Zeroizing;

/// A secret setting (`tls.password`): wiped from memory when dropped, and
/// never shown by `Debug`, so printing settings or a parsed file (in a log
/// line, a panic message, a test failure) cannot leak it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The secret text, for the one place that needs it (decrypting the key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::test_support::{minimal, PW};
    use crate::config::{File, Settings};

    #[test]
    fn password_is_redacted_in_debug_output() {
        let text = format!("{}password = \"{PW}\"\n", minimal());
        let file = File::parse(Path::new("t.toml"), &text).unwrap();
        let shown = format!("{file:?}");
        assert!(!shown.contains(PW) && shown.contains("<redacted>"), "{shown}");
        let s = Settings::from_file(file).unwrap();
        assert_eq!(s.tls.password.as_ref().map(Secret::expose), Some(PW));
        for shown in [format!("{s:?}"), format!("{s:#?}"), format!("{:?}", s.tls)] {
            assert!(!shown.contains(PW) && shown.contains("<redacted>"), "{shown}");
        }
    }
}
