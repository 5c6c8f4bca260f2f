//! The JSON request bodies of `/v1/key/*` (import, generate, encrypt, decrypt,
//! bulk decrypt, hmac), decoded exactly as the handlers decode them, through
//! `keyward_server::api::fuzzing::parse_bodies`.
//!
//! Checks, besides "never panics": a body that is not a JSON object (first
//! non-whitespace byte other than `{`) is refused by every object-typed
//! request, as KES refuses it; only the bulk route takes an array.
#![no_main]

use keyward_server::api::fuzzing::parse_bodies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let d = parse_bodies(data);
    let object = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !object {
        assert!(!d.import && !d.encrypt && !d.decrypt && !d.hmac, "non-object body accepted: {d:?}");
        assert_eq!(d.generate, data.is_empty(), "generate accepts only an object or nothing");
    }
    if d.bulk_decrypt.is_some() {
        assert_eq!(data.iter().find(|b| !b.is_ascii_whitespace()), Some(&b'['));
    }
});
