//! Outbound HTTP for plugins granted hosts: the allow-list, and the client
//! that sends what it allows.
//!
//! One [`Outbound`] serves every instance of a loaded plugin, so the
//! instances of a networked keystore share keep-alive connections to its
//! backend instead of opening (and, for HTTPS, handshaking) one per request:
//! on loopback a new connection costs more than the request it carries.
//!
//! HTTPS trusts the public (webpki/Mozilla) roots, or, when the plugin's
//! grants name a CA file (`grants.ca`), only the certificates in that file:
//! a backend with a private CA (Vault and OpenBao usually have one) is
//! reached without trusting the world for it. With `grants.client_cert`, the
//! host presents that certificate to backends that require mutual TLS; the
//! plugin never sees the private key.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wasmtime_wasi_http::WasiBody;

use super::{ClientCert, Grants, PluginError};

type HttpResult<T> = Result<T, wasmtime_wasi_http::Error>;
/// The second half of what wasi:http's `send_request` hook returns: the
/// future that drives the connection. The pooled client drives its
/// connections itself, so this one has nothing left to do.
pub(crate) type IoFuture = Box<dyn Future<Output = HttpResult<()>> + Send>;

/// An HTTP origin as the allow-list compares them: lowercase scheme and host,
/// explicit port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an `http://` or `https://` URL (a bare origin such as
    /// `https://vault:8200` or a full URL with a path).
    pub(crate) fn parse(url: &str) -> Result<Origin, String> {
        let uri: http::Uri = url.trim().parse().map_err(|e| format!("not a URL: {e}"))?;
        Origin::of_uri(&uri).ok_or_else(|| "must be an http:// or https:// URL with a host and no credentials".into())
    }

    pub(crate) fn of_uri(uri: &http::Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = uri.authority()?;
        // Userinfo would end up in the address the sender connects to.
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Origin { scheme, host, port: authority.port_u16().unwrap_or(default_port) })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// What a loaded plugin may reach over HTTP, and the pool it reaches it with.
pub(crate) struct Outbound {
    allowed: Vec<Origin>,
    client: Client<HttpsConnector<HttpConnector>, WasiBody>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("allowed", &self.allowed).finish_non_exhaustive()
    }
}

impl Outbound {
    /// The allow-list and client for `grants`; `None` when no host is granted.
    pub(crate) fn new(plugin: &str, grants: &Grants) -> Result<Option<Arc<Outbound>>, PluginError> {
        if grants.hosts.is_empty() {
            return Ok(None);
        }
        let refuse = |message: String| PluginError::Sandbox { plugin: plugin.to_string(), message };
        let allowed = grants
            .hosts
            .iter()
            .map(|h| Origin::parse(h).map_err(|m| refuse(format!("grants.hosts: {h:?}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let roots = match &grants.ca {
            Some(path) => private_roots(path).map_err(|m| refuse(format!("grants.ca: {}: {m}", path.display())))?,
            None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() },
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| refuse(format!("TLS set-up: {e}")))?
            .with_root_certificates(roots);
        let tls = match &grants.client_cert {
            Some(client) => {
                let (chain, key) = client_identity(client).map_err(|m| refuse(format!("grants.client_cert: {m}")))?;
                tls.with_client_auth_cert(chain, key)
                    .map_err(|e| refuse(format!("grants.client_cert: unusable certificate or key: {e}")))?
            }
            None => tls.with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Some(Arc::new(Outbound { allowed, client })))
    }

    /// Whether `uri`'s origin is granted; the origin (or the URI) for messages.
    pub(crate) fn allows(&self, uri: &http::Uri) -> Result<(), String> {
        match Origin::of_uri(uri) {
            Some(origin) if self.allowed.contains(&origin) => Ok(()),
            Some(origin) => Err(origin.to_string()),
            None => Err(uri.to_string()),
        }
    }

    /// Sends an allowed request; it fails with `ConnectionTimeout` at
    /// `deadline` if it has not got its response head by then.
    pub(crate) async fn send(
        &self,
        request: http::Request<WasiBody>,
        deadline: Option<tokio::time::Instant>,
    ) -> HttpResult<http::Response<WasiBody>> {
        let send = self.client.request(request);
        let response = match deadline {
            Some(at) => {
                tokio::time::timeout_at(at, send).await.map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)?
            }
            None => send.await,
        }
        .map_err(client_error)?;
        Ok(response.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()))
    }
}

/// Maps the pooled client's failure onto wasi:http's error cases, so the
/// plugin sees what happened (refused, TLS certificate, protocol...).
fn client_error(e: hyper_util::client::legacy::Error) -> wasmtime_wasi_http::Error {
    use std::error::Error as _;
    let tls = |t: &rustls::Error| match t {
        rustls::Error::InvalidCertificate(_) => wasmtime_wasi_http::Error::TlsCertificateError,
        _ => wasmtime_wasi_http::Error::TlsProtocolError,
    };
    // A TLS failure first, wherever it sits in the chain (the connector
    // wraps it in I/O errors), then the first I/O error.
    let mut io_error = None;
    let mut source = e.source();
    while let Some(inner) = source {
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            return tls(t);
        }
        // An I/O error's `source()` skips the error it wraps: descend into
        // that one instead.
        source = match inner.downcast_ref::<std::io::Error>() {
            Some(io) => {
                io_error.get_or_insert_with(|| std::io::Error::new(io.kind(), io.to_string()));
                io.get_ref().map(|wrapped| wrapped as &(dyn std::error::Error + 'static))
            }
            None => inner.source(),
        };
    }
    match io_error {
        Some(io) => wasmtime_wasi_http::Error::Connect(io),
        None if e.is_connect() => wasmtime_wasi_http::Error::ConnectionRefused,
        None => wasmtime_wasi_http::Error::HttpProtocolError,
    }
}

/// The certificates of a PEM file, as the only roots trusted.
fn private_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("invalid PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in the file".to_string());
    }
    Ok(roots)
}

/// The certificate chain and key of `grants.client_cert`.
fn client_identity(client: &ClientCert) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let bytes = std::fs::read(&client.cert).map_err(|e| format!("{}: {e}", client.cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: invalid PEM: {e}", client.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", client.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&client.key).map_err(|e| format!("{}: {e}", client.key.display()))?;
    Ok((chain, key))
}
