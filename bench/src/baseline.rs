//! `keyward-bench baseline`: the ceiling for this stack.
//!
//! Bare hyper 1 (HTTP/1.1, keep-alive) over tokio-rustls with client
//! certificates required, serving the KES encrypt/decrypt/generate/hmac JSON
//! routes on in-memory keys with exactly keyward's cryptography
//! (`keyward_core::crypto`: per-message key HMAC-SHA256(key, iv), AES-256-GCM, raw
//! ciphertext format). No policy, no audit, no metrics, no keystore.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keyward_core::crypto::{Algorithm, StoredKey};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(clap::Args, Clone, Debug)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7374")]
    pub listen: SocketAddr,
    /// Server certificate (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Runtime worker threads (default: one per CPU, like keyward).
    #[arg(long)]
    pub threads: Option<usize>,
}

type Keys = Arc<RwLock<HashMap<String, Arc<StoredKey>>>>;

pub async fn run(args: &BaselineArgs) -> Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("listen on {}", args.listen))?;
    eprintln!("baseline listening on https://{}", listener.local_addr()?);
    serve_on(listener, &args.cert, &args.key).await
}

/// Serves on `listener` until the task is dropped.
pub async fn serve_on(listener: TcpListener, cert: &std::path::Path, key: &std::path::Path) -> Result<()> {
    let acceptor = TlsAcceptor::from(crate::tls::server_config(cert, key)?);
    let keys: Keys = Arc::default();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => continue,
        };
        let acceptor = acceptor.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req| serve(keys.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(status, serde_json::json!({ "message": message }).to_string())
}

/// A refused request: status and message (turned into a JSON error reply).
struct Fail(StatusCode, &'static str);

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => reply(StatusCode::OK, body),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed"),
    }
}

#[derive(Deserialize)]
struct EncryptRequest {
    #[serde(default)]
    plaintext: String,
    #[serde(default)]
    context: String,
}

#[derive(Deserialize)]
struct DecryptRequest {
    #[serde(default)]
    ciphertext: String,
    #[serde(default)]
    context: String,
}

#[derive(Deserialize, Default)]
struct GenerateRequest {
    #[serde(default)]
    context: String,
}

#[derive(Deserialize)]
struct HmacRequest {
    #[serde(default)]
    message: String,
}

fn b64(s: &str) -> Result<Vec<u8>, Fail> {
    B64.decode(s).map_err(|_| Fail(StatusCode::BAD_REQUEST, "invalid base64"))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|_| Fail(StatusCode::BAD_REQUEST, "invalid JSON"))
}

async fn serve(keys: Keys, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(handle(keys, req).await.unwrap_or_else(|Fail(status, message)| error(status, message)))
}

async fn handle(keys: Keys, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Fail> {
    let path = req.uri().path().to_string();
    if path == "/version" {
        return Ok(reply(StatusCode::OK, r#"{"version":"baseline"}"#));
    }
    if req.method() != Method::PUT && req.method() != Method::POST {
        return Err(Fail(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    let Some(rest) = path.strip_prefix("/v1/key/") else {
        return Err(Fail(StatusCode::NOT_FOUND, "not found"));
    };
    let Some((op, name)) = rest.split_once('/') else {
        return Err(Fail(StatusCode::NOT_FOUND, "not found"));
    };
    let body = Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|_| Fail(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?
        .to_bytes();

    if op == "create" {
        let mut map = keys.write().unwrap();
        if map.contains_key(name) {
            return Err(Fail(StatusCode::BAD_REQUEST, "key already exists"));
        }
        map.insert(name.to_string(), Arc::new(StoredKey::generate(Algorithm::Aes256, "")));
        return Ok(reply(StatusCode::OK, Bytes::new()));
    }
    let key = keys.read().unwrap().get(name).cloned().ok_or(Fail(StatusCode::NOT_FOUND, "key does not exist"))?;
    match op {
        "encrypt" => {
            let r: EncryptRequest = parse(&body)?;
            let ct = key
                .key
                .encrypt(&b64(&r.plaintext)?, &b64(&r.context)?)
                .map_err(|_| Fail(StatusCode::INTERNAL_SERVER_ERROR, "failed to encrypt plaintext"))?;
            Ok(json(&serde_json::json!({ "ciphertext": B64.encode(ct) })))
        }
        "decrypt" => {
            let r: DecryptRequest = parse(&body)?;
            let pt = key
                .key
                .decrypt(&b64(&r.ciphertext)?, &b64(&r.context)?)
                .map_err(|_| Fail(StatusCode::BAD_REQUEST, "decryption failed: ciphertext is not authentic"))?;
            Ok(json(&serde_json::json!({ "plaintext": B64.encode(&pt[..]) })))
        }
        "generate" => {
            let r: GenerateRequest = if body.is_empty() { GenerateRequest::default() } else { parse(&body)? };
            let (pt, ct) = keyward_core::crypto::generate_data_key(&key.key, &b64(&r.context)?)
                .map_err(|_| Fail(StatusCode::INTERNAL_SERVER_ERROR, "failed to generate encryption key"))?;
            Ok(json(&serde_json::json!({ "plaintext": B64.encode(&pt[..]), "ciphertext": B64.encode(ct) })))
        }
        "hmac" => {
            let r: HmacRequest = parse(&body)?;
            let hmac_key = key.hmac_key.as_ref().ok_or(Fail(StatusCode::CONFLICT, "key does not support HMAC"))?;
            Ok(json(&serde_json::json!({ "hmac": B64.encode(hmac_key.sign(&b64(&r.message)?)) })))
        }
        _ => Err(Fail(StatusCode::NOT_FOUND, "not found")),
    }
}
