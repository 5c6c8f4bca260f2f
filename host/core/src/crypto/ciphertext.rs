//! Parsing of the three KES ciphertext formats (API.md section 5).
//!
//! * raw (2024-02+): `sealed || iv(16) || nonce(12)`
//! * msgpack (v0.19.2 .. 2024-01): fixarray(5) `[alg str, key-id str, iv bin,
//!   nonce bin, sealed bin]`
//! * JSON (<= v0.19.1): `{"aead","id"?,"iv","nonce","bytes"}`
//!
//! Parsing mirrors the Go code (`parseCiphertext`, `msgp`, `encoding/json`)
//! closely, since a ciphertext that KES accepts must be accepted here and vice
//! versa. Nothing here panics on any input.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{go_base64_decode, Algorithm};

pub(super) const IV_LEN: usize = 16;
pub(super) const NONCE_LEN: usize = 12;
pub(super) const TAG_LEN: usize = 16;
/// iv + nonce appended to every raw ciphertext.
pub(super) const RANDOM_LEN: usize = IV_LEN + NONCE_LEN;

/// A ciphertext split into its parts.
pub(super) struct Parsed<'a> {
    /// `ct || tag`.
    pub sealed: Cow<'a, [u8]>,
    pub iv: [u8; IV_LEN],
    pub nonce: [u8; NONCE_LEN],
    /// The algorithm named inside a msgpack/JSON ciphertext; `None` for raw.
    pub tag: Option<Algorithm>,
}

/// Applies the newest KES parse rule: first byte `0x95` -> try msgpack, `{` ->
/// try JSON; if that fails (or for any other first byte) the bytes are raw.
/// Returns `None` for input that cannot be a ciphertext at all.
pub(super) fn parse(b: &[u8]) -> Option<Parsed<'_>> {
    let structured = match b.first() {
        Some(0x95) => parse_msgpack(b),
        Some(b'{') => parse_json(b),
        _ => None,
    };
    match structured {
        // KES re-assembles structured ciphertexts as raw and then requires more
        // than 28 bytes, i.e. a non-empty sealed part.
        Some(p) if p.sealed.is_empty() => None,
        Some(p) => Some(p),
        None => parse_raw(b),
    }
}

fn parse_raw(b: &[u8]) -> Option<Parsed<'_>> {
    if b.len() <= RANDOM_LEN {
        return None;
    }
    let (sealed, random) = b.split_at(b.len() - RANDOM_LEN);
    let (iv, nonce) = random.split_at(IV_LEN);
    Some(Parsed { sealed: Cow::Borrowed(sealed), iv: iv.try_into().ok()?, nonce: nonce.try_into().ok()?, tag: None })
}

/// The algorithm names a 2023 msgpack ciphertext may carry (`kes.KeyAlgorithm`
/// text form; the newest generation also accepts the short names).
fn msgpack_algorithm(name: &[u8]) -> Option<Algorithm> {
    match name {
        b"AES256-GCM_SHA256" | b"AES256" => Some(Algorithm::Aes256),
        b"XCHACHA20-POLY1305" | b"ChaCha20" => Some(Algorithm::ChaCha20),
        _ => None,
    }
}

/// Minimal msgpack reader over a byte slice (only what the format needs).
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(*self.take(1)?.first()?)
    }

    fn be_len(&mut self, width: usize) -> Option<usize> {
        let bytes = self.take(width)?;
        let n = bytes.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
        usize::try_from(n).ok()
    }

    /// msgpack str (fixstr, str8, str16, str32); like msgp it does not check
    /// UTF-8.
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            lead @ 0xa0..=0xbf => usize::from(lead & 0x1f),
            0xd9 => self.be_len(1)?,
            0xda => self.be_len(2)?,
            0xdb => self.be_len(4)?,
            _ => return None,
        };
        self.take(n)
    }

    /// msgpack bin (bin8, bin16, bin32).
    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.be_len(1)?,
            0xc5 => self.be_len(2)?,
            0xc6 => self.be_len(4)?,
            _ => return None,
        };
        self.take(n)
    }
}

fn parse_msgpack(b: &[u8]) -> Option<Parsed<'_>> {
    let mut r = Reader { b };
    if r.byte()? != 0x95 {
        return None;
    }
    let algorithm = msgpack_algorithm(r.str()?)?;
    let _key_id = r.str()?; // ignored by KES 2023+
    let iv: [u8; IV_LEN] = r.bin()?.try_into().ok()?;
    let nonce: [u8; NONCE_LEN] = r.bin()?.try_into().ok()?;
    let sealed = r.bin()?;
    if !r.b.is_empty() {
        return None; // no trailing bytes
    }
    Some(Parsed { sealed: Cow::Borrowed(sealed), iv, nonce, tag: Some(algorithm) })
}

/// Looks up a JSON object field the way Go's `encoding/json` does for struct
/// fields: an exact key match wins, otherwise a case-insensitive one.
pub(super) fn json_field<'v>(obj: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// A Go `string` field: absent/null -> `Some(None)`, string -> `Some(Some)`,
/// other type -> `None` (Go's `json.Unmarshal` fails on a type mismatch).
pub(super) fn json_str(v: Option<&Value>) -> Option<Option<&str>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s)),
        Some(_) => None,
    }
}

/// A Go `[]byte` field: absent/null -> empty, string -> base64 as Go decodes it.
fn json_bytes(v: Option<&Value>) -> Option<Vec<u8>> {
    match json_str(v)? {
        None => Some(Vec::new()),
        Some(s) => go_base64_decode(s.as_bytes()).map(|z| z.to_vec()),
    }
}

fn parse_json(b: &[u8]) -> Option<Parsed<'static>> {
    let value: Value = serde_json::from_slice(b).ok()?;
    let obj = value.as_object()?;
    let algorithm = match json_str(json_field(obj, "aead"))? {
        Some("AES-256-GCM-HMAC-SHA-256") => Algorithm::Aes256,
        Some("ChaCha20Poly1305") => Algorithm::ChaCha20,
        _ => return None,
    };
    let _key_id = json_str(json_field(obj, "id"))?; // type-checked, then ignored
    let iv: [u8; IV_LEN] = json_bytes(json_field(obj, "iv"))?.try_into().ok()?;
    let nonce: [u8; NONCE_LEN] = json_bytes(json_field(obj, "nonce"))?.try_into().ok()?;
    let sealed = json_bytes(json_field(obj, "bytes"))?;
    Some(Parsed { sealed: Cow::Owned(sealed), iv, nonce, tag: Some(algorithm) })
}
