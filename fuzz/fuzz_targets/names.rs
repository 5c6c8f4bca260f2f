//! Key, policy and identity names and listing patterns
//! (`keyward_core::names`), both generations.
//!
//! Checks, besides "never panics": each validator agrees with its definition
//! in API.md section 3 (written here as a character-class check), the
//! generations nest as documented, and a valid name can never address
//! anything but itself: ASCII `[0-9A-Za-z_-]` only, 1..=80 bytes, so no `/`,
//! `.`, `\`, NUL, whitespace or Unicode look-alikes reach a keystore path.
#![no_main]

use keyward_core::names::{
    invalid_identity, invalid_key_name, invalid_listing_pattern, invalid_policy_name, valid_name_new,
    valid_pattern_new, validate_name_old, validate_pattern_old, NameError, MAX_NAME_LEN,
};
use libfuzzer_sys::fuzz_target;

fn class(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn ref_name_old(s: &[u8]) -> Result<(), NameError> {
    match s.len() {
        0 => Err(NameError::NameEmpty),
        n if n > 80 => Err(NameError::NameTooLong),
        _ if !s.iter().all(|&c| class(c)) => Err(NameError::NameInvalidChar),
        _ => Ok(()),
    }
}

fn ref_pattern_old(s: &[u8]) -> Result<(), NameError> {
    match s.len() {
        0 => Err(NameError::PatternEmpty),
        n if n > 80 => Err(NameError::PatternTooLong),
        _ if !s.iter().all(|&c| class(c) || c == b'*') => Err(NameError::PatternInvalidChar),
        _ => Ok(()),
    }
}

fn ref_name_new(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s != b"_"
        && s.iter().all(|&c| class(c))
        && s.first() != Some(&b'-')
        && s.last() != Some(&b'-')
}

/// The name rules plus one `*`, only as the last byte; `*` alone and the
/// empty pattern list everything; before the `*`, a `-` may end the text
/// (`my-*`) but not start it, and `_*` is fine.
fn ref_pattern_new(s: &[u8]) -> bool {
    match s {
        b"" | b"*" => true,
        [body @ .., b'*'] => s.len() <= 80 && body.iter().all(|&c| class(c)) && body[0] != b'-',
        _ => ref_name_new(s),
    }
}

fn safe(s: &str) {
    assert!(!s.is_empty() && s.len() <= MAX_NAME_LEN, "{s:?}");
    assert!(s.bytes().all(class), "{s:?} has a character outside [0-9A-Za-z_-]");
    assert!(!s.contains(['/', '.', '\\', '\0', ' ']));
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    let b = s.as_bytes();

    let name_old = validate_name_old(s);
    let pattern_old = validate_pattern_old(s);
    let name_new = valid_name_new(s);
    let pattern_new = valid_pattern_new(s);

    assert_eq!(name_old, ref_name_old(b), "validate_name_old({s:?})");
    assert_eq!(pattern_old, ref_pattern_old(b), "validate_pattern_old({s:?})");
    assert_eq!(name_new, ref_name_new(b), "valid_name_new({s:?})");
    assert_eq!(pattern_new, ref_pattern_new(b), "valid_pattern_new({s:?})");

    // The new rules are a subset of the old ones; every name is a pattern.
    if name_new {
        assert!(name_old.is_ok() && pattern_new, "{s:?}");
    }
    if name_old.is_ok() {
        assert!(pattern_old.is_ok(), "{s:?}");
        safe(s);
    }
    if name_new {
        safe(s);
    }
    for e in [name_old, pattern_old].into_iter().filter_map(Result::err) {
        assert_eq!(e.status(), 400);
        assert!(e.to_string().starts_with("invalid argument: "));
    }
    for m in [invalid_key_name(s), invalid_policy_name(s), invalid_identity(s), invalid_listing_pattern(s)] {
        assert!(m.contains(s));
    }
});
