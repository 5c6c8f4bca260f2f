//! Validation of key/policy/identity names and listing patterns (API.md §3).
//!
//! * Old generation (`validateName` / `validatePattern`, v0.19): typed errors with fixed
//!   messages, see [`NameError`]. The old server applies `strings.TrimSpace` to the
//!   resource before validating; that is the caller's job.
//! * New generation (`validName` / `validPattern`): booleans; the caller formats the
//!   400 message with one of the `invalid_*` helpers below.

/// Longest valid name or pattern, in bytes.
pub const MAX_NAME_LEN: usize = 80;

/// Old-generation validation errors. All are HTTP 400; `Display` is the exact KES text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid argument: name is empty")]
    NameEmpty,
    #[error("invalid argument: name is too long")]
    NameTooLong,
    #[error("invalid argument: name contains invalid character")]
    NameInvalidChar,
    #[error("invalid argument: pattern is empty")]
    PatternEmpty,
    #[error("invalid argument: pattern is too long")]
    PatternTooLong,
    #[error("invalid argument: pattern contains invalid character")]
    PatternInvalidChar,
}

impl NameError {
    /// The HTTP status KES answers with (always 400 Bad Request).
    pub const fn status(&self) -> u16 {
        400
    }
}

/// `[0-9A-Za-z_-]`
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Old `validateName`: `[0-9A-Za-z_-]`, 1..=80 bytes, `-` and `_` anywhere.
pub fn validate_name_old(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::NameEmpty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong);
    }
    if !name.bytes().all(is_name_char) {
        return Err(NameError::NameInvalidChar);
    }
    Ok(())
}

/// Old `validatePattern`: `[0-9A-Za-z_*-]`, 1..=80 bytes, `*` anywhere.
pub fn validate_pattern_old(pattern: &str) -> Result<(), NameError> {
    if pattern.is_empty() {
        return Err(NameError::PatternEmpty);
    }
    if pattern.len() > MAX_NAME_LEN {
        return Err(NameError::PatternTooLong);
    }
    if !pattern.bytes().all(|b| is_name_char(b) || b == b'*') {
        return Err(NameError::PatternInvalidChar);
    }
    Ok(())
}

/// New `validName`: `[0-9A-Za-z_-]`, 1..=80 bytes, `-` not first or last, `_` alone
/// rejected.
pub fn valid_name_new(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN || name == "_" {
        return false;
    }
    let last = b.len() - 1;
    b.iter().enumerate().all(|(i, &c)| match c {
        b'-' => i > 0 && i < last,
        _ => c.is_ascii_alphanumeric() || c == b'_',
    })
}

/// New `validPattern`: the name rules plus a single `*` allowed only as the last
/// character. `*` alone and the empty pattern (list everything) are valid; `_` is not.
pub fn valid_pattern_new(pattern: &str) -> bool {
    if pattern == "*" || pattern.is_empty() {
        return true;
    }
    let b = pattern.as_bytes();
    if b.len() > MAX_NAME_LEN || pattern == "_" {
        return false;
    }
    let last = b.len() - 1;
    b.iter().enumerate().all(|(i, &c)| match c {
        b'-' => i > 0 && i < last,
        b'*' => i == last,
        _ => c.is_ascii_alphanumeric() || c == b'_',
    })
}

/// New-generation 400 message for an invalid key name.
pub fn invalid_key_name(name: &str) -> String {
    format!("key name '{name}' is empty, too long or contains invalid characters")
}

/// New-generation 400 message for an invalid policy name.
pub fn invalid_policy_name(name: &str) -> String {
    format!("policy name '{name}' is empty, too long or contains invalid characters")
}

/// New-generation 400 message for an invalid identity.
pub fn invalid_identity(identity: &str) -> String {
    format!("identity '{identity}' is empty, too long or contains invalid characters")
}

/// New-generation 400 message for an invalid listing pattern.
pub fn invalid_listing_pattern(pattern: &str) -> String {
    format!("listing pattern '{pattern}' is empty, too long or is invalid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_names() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kes/vectors.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = v["names"].as_array().unwrap();
        let (mut names, mut patterns) = (0, 0);
        for c in cases {
            let s = c["value"].as_str().unwrap();
            let want = (c["valid_new"].as_bool().unwrap(), c["valid_old"].as_bool().unwrap());
            let got = match c["kind"].as_str().unwrap() {
                "name" => {
                    names += 1;
                    (valid_name_new(s), validate_name_old(s).is_ok())
                }
                "pattern" => {
                    patterns += 1;
                    (valid_pattern_new(s), validate_pattern_old(s).is_ok())
                }
                k => panic!("unknown kind {k:?} in vectors.json names"),
            };
            assert_eq!(got, want, "{c}");
        }
        assert!(names > 0 && patterns > 0);
    }

    #[test]
    fn old_error_messages() {
        let long = "a".repeat(81);
        assert_eq!(validate_name_old("").unwrap_err().to_string(), "invalid argument: name is empty");
        assert_eq!(validate_name_old(&long).unwrap_err().to_string(), "invalid argument: name is too long");
        assert_eq!(
            validate_name_old("a b").unwrap_err().to_string(),
            "invalid argument: name contains invalid character"
        );
        assert_eq!(validate_pattern_old("").unwrap_err().to_string(), "invalid argument: pattern is empty");
        assert_eq!(validate_pattern_old(&long).unwrap_err().to_string(), "invalid argument: pattern is too long");
        assert_eq!(
            validate_pattern_old("a?").unwrap_err().to_string(),
            "invalid argument: pattern contains invalid character"
        );
        assert_eq!(NameError::NameEmpty.status(), 400);
        // Length is checked before characters, in bytes: 41 two-byte chars are too long.
        assert_eq!(validate_name_old(&"ä".repeat(41)), Err(NameError::NameTooLong));
        assert_eq!(validate_name_old(&"ä".repeat(40)), Err(NameError::NameInvalidChar));
        assert_eq!(validate_name_old("*"), Err(NameError::NameInvalidChar));
        assert_eq!(validate_pattern_old("*"), Ok(()));
        assert_eq!(validate_pattern_old("*-_*"), Ok(()));
    }

    #[test]
    fn new_rules() {
        assert!(valid_name_new("a"));
        assert!(valid_name_new("a-b"));
        assert!(!valid_name_new("ab-"));
        assert!(!valid_name_new("_"));
        assert!(valid_name_new("_a"));
        assert!(!valid_name_new(&"ä".repeat(40)));
        assert!(!valid_name_new("a\u{0}"));
        assert!(valid_pattern_new(""));
        assert!(valid_pattern_new("*"));
        assert!(valid_pattern_new("a*"));
        assert!(valid_pattern_new("a-b*"));
        assert!(valid_pattern_new("a-*"));
        assert!(!valid_pattern_new("a-"));
        assert!(!valid_pattern_new("-"));
        assert!(!valid_pattern_new("-*"));
        assert!(!valid_pattern_new("**"));
        assert!(!valid_pattern_new("*a"));
        assert!(!valid_pattern_new("_"));
        assert!(valid_pattern_new("_*"));
        assert!(valid_pattern_new(&("a".repeat(79) + "*")));
        assert!(!valid_pattern_new(&("a".repeat(80) + "*")));
    }

    #[test]
    fn new_messages() {
        assert_eq!(invalid_key_name("a b"), "key name 'a b' is empty, too long or contains invalid characters");
        assert_eq!(invalid_policy_name(""), "policy name '' is empty, too long or contains invalid characters");
        assert_eq!(invalid_identity("x!"), "identity 'x!' is empty, too long or contains invalid characters");
        assert_eq!(invalid_listing_pattern("a*b"), "listing pattern 'a*b' is empty, too long or is invalid");
    }
}
