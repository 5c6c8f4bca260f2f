//! `StoredKey::decode` on arbitrary keystore values (base64 protobuf and the
//! legacy JSON).
//!
//! Checks, besides "never panics": whatever decodes re-encodes (newest format)
//! to a value that decodes to the same key, HMAC key, algorithm, creation time
//! and creator, and encoding is canonical (a second round trip is
//! byte-identical). A value keyward accepts but cannot write back would strand
//! the key the first time it is re-encoded.
#![no_main]

use keyward_core::crypto::StoredKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = StoredKey::decode(data) else {
        return;
    };
    let encoded = key.encode();
    let back = StoredKey::decode(&encoded).expect("a decoded key must decode again after encode");
    assert_eq!(key.key.algorithm(), back.key.algorithm());
    assert_eq!(key.key.key_id(), back.key.key_id(), "key bytes changed in the round trip");
    assert_eq!(
        key.hmac_key.as_ref().map(|h| h.sign(b"fuzz")),
        back.hmac_key.as_ref().map(|h| h.sign(b"fuzz")),
        "HMAC key changed in the round trip"
    );
    assert_eq!(key.created_at, back.created_at);
    assert_eq!(key.created_by, back.created_by);
    assert_eq!(back.encode(), encoded, "encoding is not canonical");
    // Debug must never print key material; it is redacted, so it cannot
    // contain the base64 value it came from.
    let debug = format!("{key:?}");
    assert!(!debug.contains(std::str::from_utf8(&encoded).unwrap()));
});
