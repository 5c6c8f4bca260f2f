//! Optional transit wrapping, as KES does it: the K/V secret holds the
//! `vault:vN:…` ciphertext of the value's base64 under a transit key, with
//! no context or associated data (so derived keys do not work).
//!
//! Values stored before transit was configured (plain strings) are still
//! read as they are, so enabling transit needs no migration. Any key
//! version (`vault:v2:` after a rotation) is accepted.

use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyward_sdk::Error;
use serde_json::{json, Value};
use waki::bindings::wasi::http::types::Method;

use crate::config::Transit;
use crate::errors::internal;
use crate::http::Request;
use crate::kv::{encode_path, is_transit};
use crate::vault::Vault;

fn request(transit: &Transit, op: &str, body: Value) -> Request {
    let path = encode_path(&format!("{}/{op}/{}", transit.engine, transit.key));
    let mut request = Request::new(Method::Post, path);
    request.body = Some(body.to_string().into_bytes());
    request
}

/// A 400 from transit (a wrong key type, a ciphertext of another key) is the
/// backend's problem, not the API client's.
fn failed(reply: &crate::vault::Reply, what: &str) -> Error {
    match reply.error(what) {
        Error::Invalid(m) => Error::Internal(m),
        e => e,
    }
}

impl Vault {
    /// The ciphertext to store for `value`.
    pub fn seal(&self, transit: &Transit, value: &[u8], deadline: Instant) -> Result<String, Error> {
        let body = json!({"plaintext": STANDARD.encode(value)});
        let reply = self.authed(|| request(transit, "encrypt", body.clone()), deadline)?;
        let what = format!("transit encrypt with key '{}'", transit.key);
        if reply.status != 200 {
            return Err(failed(&reply, &what));
        }
        match reply.json["data"]["ciphertext"].as_str() {
            Some(ct) if is_transit(ct) => Ok(ct.to_string()),
            _ => Err(internal(format!("{what}: no ciphertext in the answer"))),
        }
    }

    /// The value sealed as `ciphertext` of the key at `location`.
    pub fn unseal(
        &self,
        transit: &Transit,
        ciphertext: &str,
        location: &str,
        deadline: Instant,
    ) -> Result<Vec<u8>, Error> {
        let body = json!({"ciphertext": ciphertext});
        let reply = self.authed(|| request(transit, "decrypt", body.clone()), deadline)?;
        let what = format!("transit decrypt of '{location}' with key '{}'", transit.key);
        if reply.status != 200 {
            return Err(failed(&reply, &what));
        }
        let plaintext = reply.json["data"]["plaintext"]
            .as_str()
            .ok_or_else(|| internal(format!("{what}: no plaintext in the answer")))?;
        STANDARD.decode(plaintext).map_err(|_| internal(format!("{what}: the plaintext is not base64")))
    }
}
