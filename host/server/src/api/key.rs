//! `/v1/key/*`: create, import, describe, delete, list, generate, encrypt,
//! decrypt, bulk decrypt and HMAC, for both generations.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroizing;

use super::error::ApiError;
use super::{empty_reply, json_reply, ndjson_reply, secret_json_reply, Call, Reply};
use keyward_core::crypto::{Algorithm, SecretKey, StoredKey};
use keyward_core::names;
use keyward_core::time_format::rfc3339;

/// Bytes sent as standard base64 (Go's `[]byte` JSON form); `null` is empty.
#[derive(Default)]
struct B64Bytes(Zeroizing<Vec<u8>>);

impl<'de> Deserialize<'de> for B64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(B64Bytes::default()),
            Some(s) => B64
                .decode(s.as_bytes())
                .map(|v| B64Bytes(Zeroizing::new(v)))
                .map_err(|_| serde::de::Error::custom("invalid base64")),
        }
    }
}

/// Checks a key name. The new generation's rules apply on every route: they
/// reject anything that could escape a path (`/`, `..`), empty names, names
/// over 80 bytes and leading or trailing `-`, and a key the new API could not
/// address would be stranded for newer clients.
fn check_name(call: &Call<'_>) -> Result<(), ApiError> {
    super::check_enclave(call)?;
    if !names::valid_name_new(call.name) {
        return Err(ApiError::bad_request(names::invalid_key_name(call.name)));
    }
    Ok(())
}

pub async fn create(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let key = StoredKey::generate(call.state.default_algorithm, call.caller().to_string());
    call.state.keys.create(call.name, key).await?;
    empty_reply()
}

#[derive(Deserialize)]
pub(super) struct ImportRequest {
    // New generation.
    key: Option<B64Bytes>,
    cipher: Option<String>,
    // Old generation.
    bytes: Option<B64Bytes>,
    algorithm: Option<String>,
}

pub async fn import(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let req: ImportRequest = call.json().map_err(|_| ApiError::bad_request("invalid import key request body"))?;
    let secret = match (req.key, req.bytes) {
        (Some(key), _) => {
            let cipher = req.cipher.unwrap_or_default();
            let not_acceptable = |m: String| ApiError::new(StatusCode::NOT_ACCEPTABLE, m);
            let alg = Algorithm::parse(&cipher)
                .ok()
                .filter(|_| !cipher.is_empty())
                .ok_or_else(|| not_acceptable(format!("algorithm '{cipher}' is not supported")))?;
            SecretKey::from_bytes(alg, &key.0)
                .map_err(|_| not_acceptable(format!("invalid key size for '{cipher}'")))?
        }
        (None, Some(bytes)) => {
            let name = req.algorithm.unwrap_or_default();
            let alg = if name.is_empty() {
                call.state.default_algorithm
            } else {
                Algorithm::parse(&name).map_err(|_| ApiError::bad_request("invalid algorithm"))?
            };
            SecretKey::from_bytes(alg, &bytes.0).map_err(|_| ApiError::bad_request("invalid key size"))?
        }
        (None, None) => return Err(ApiError::bad_request("invalid import key request body")),
    };
    let key = StoredKey::new(secret, call.caller());
    call.state.keys.create(call.name, key).await?;
    empty_reply()
}

#[derive(Serialize)]
struct DescribeResponse<'a> {
    name: &'a str,
    algorithm: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub async fn describe(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let key = call.state.keys.get(call.name).await?;
    json_reply(&DescribeResponse {
        name: call.name,
        algorithm: key.key.algorithm().client_name(),
        created_at: key.created_at.map(rfc3339).unwrap_or_default(),
        created_by: &key.created_by,
    })
}

pub async fn delete(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    call.state.keys.delete(call.name).await?;
    empty_reply()
}

#[derive(Serialize)]
struct ListResponse {
    names: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    continue_at: String,
}

#[derive(Serialize)]
struct NameLine<'a> {
    name: &'a str,
}

/// Names in one page of the new API.
pub const PAGE: u32 = 1024;

pub async fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    super::check_enclave(call)?;
    let selector = call.selector()?;
    if call.wants_json {
        let page = call.state.keys.list(selector.prefix(), "", PAGE).await?;
        return json_reply(&ListResponse { names: page.names, continue_at: page.next });
    }
    let all = call.state.keys.list_all(selector.prefix(), |n| selector.matches(n)).await?;
    ndjson_reply(all.iter().map(|n| NameLine { name: n }))
}

#[derive(Deserialize, Default)]
pub(super) struct ContextRequest {
    #[serde(default)]
    context: B64Bytes,
}

/// Borrows the plaintext from a wiped-on-drop buffer rather than owning a
/// copy of the data key that nothing would wipe.
#[derive(Serialize)]
struct GenerateResponse<'a> {
    plaintext: &'a str,
    ciphertext: String,
}

pub async fn generate(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let req: ContextRequest = if call.body.is_empty() { ContextRequest::default() } else { call.json()? };
    let key = call.state.keys.get(call.name).await?;
    let (plain, ciphertext) = keyward_core::crypto::generate_data_key(&key.key, &req.context.0)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed to generate encryption key"))?;
    let plaintext = Zeroizing::new(B64.encode(&plain[..]));
    secret_json_reply(&GenerateResponse { plaintext: &plaintext, ciphertext: B64.encode(ciphertext) })
}

#[derive(Deserialize)]
pub(super) struct EncryptRequest {
    #[serde(default)]
    plaintext: B64Bytes,
    #[serde(default)]
    context: B64Bytes,
}

#[derive(Serialize)]
struct EncryptResponse {
    ciphertext: String,
}

pub async fn encrypt(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let req: EncryptRequest = call.json()?;
    let key = call.state.keys.get(call.name).await?;
    let ciphertext = key
        .key
        .encrypt(&req.plaintext.0, &req.context.0)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed to encrypt plaintext"))?;
    json_reply(&EncryptResponse { ciphertext: B64.encode(ciphertext) })
}

#[derive(Deserialize)]
pub(super) struct DecryptRequest {
    #[serde(default)]
    ciphertext: B64Bytes,
    #[serde(default)]
    context: B64Bytes,
}

/// The base64 plaintext is wiped when the answer has been serialised.
#[derive(Serialize)]
struct DecryptResponse {
    #[serde(serialize_with = "serialize_secret")]
    plaintext: Zeroizing<String>,
}

fn serialize_secret<S: serde::Serializer>(s: &Zeroizing<String>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

fn open(key: &StoredKey, req: &DecryptRequest) -> Result<DecryptResponse, ApiError> {
    let plain = key.key.decrypt(&req.ciphertext.0, &req.context.0).map_err(|_| ApiError::not_authentic())?;
    Ok(DecryptResponse { plaintext: Zeroizing::new(B64.encode(&plain[..])) })
}

pub async fn decrypt(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let req: DecryptRequest = call.json()?;
    let key = call.state.keys.get(call.name).await?;
    secret_json_reply(&open(&key, &req)?)
}

/// Most ciphertexts one bulk call may carry, as in KES.
const MAX_BULK: usize = 1000;

pub async fn bulk_decrypt(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let reqs: Vec<DecryptRequest> = call.json_any()?;
    if reqs.len() > MAX_BULK {
        return Err(ApiError::bad_request("too many ciphertexts"));
    }
    let key = call.state.keys.get(call.name).await?;
    let out = reqs.iter().map(|r| open(&key, r)).collect::<Result<Vec<_>, _>>()?;
    secret_json_reply(&out)
}

#[derive(Deserialize)]
pub(super) struct HmacRequest {
    #[serde(default)]
    message: B64Bytes,
}

#[derive(Serialize)]
struct HmacResponse {
    hmac: String,
}

pub async fn hmac(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let req: HmacRequest = call.json()?;
    let key = call.state.keys.get(call.name).await?;
    let Some(hmac_key) = key.hmac_key.as_ref() else {
        return Err(ApiError::new(StatusCode::CONFLICT, "key does not support HMAC"));
    };
    json_reply(&HmacResponse { hmac: B64.encode(hmac_key.sign(&req.message.0)) })
}
