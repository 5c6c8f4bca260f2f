//! Starts the real `keyward` binary with a generated config and certificates,
//! and gives tests HTTPS clients with client certificates.
//!
//! Every server keeps its keys through the embedded `keystore-fs` plugin (on
//! `<server dir>/keys`) unless its [`Setup::keystore`] says otherwise, so the
//! whole suite runs against the real plugin host. All servers of a run share
//! one precompiled-plugin cache ([`plugin_cache_dir`]).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use serde_json::Value;

/// A client identity: certificate, key and its KES identity hash.
#[derive(Clone)]
pub struct Ident {
    pub cert_pem: String,
    pub key_pem: String,
    pub id: String,
}

impl Ident {
    pub fn new(name: &str) -> Ident {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).unwrap();
        let cert_pem = cert.pem();
        let id = keyward_server::tls::identity_of_cert(cert_pem.as_bytes()).unwrap();
        Ident { cert_pem, key_pem: key.serialize_pem(), id }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "keyward-e2e-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running server process.
pub struct TestServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub admin: Ident,
    pub server_cert_pem: String,
    pub config_path: PathBuf,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What goes into a test server's config besides address, admin and TLS.
#[derive(Default, Clone)]
pub struct Setup {
    pub extra_config: String,
    pub admin: Option<Ident>,
    /// Write `identity = "disabled"` instead of the admin's identity.
    pub disable_admin: bool,
    /// Server certificate and key PEM (default: a fresh self-signed pair).
    pub server_tls: Option<(String, String)>,
    /// Lines added to the `[tls]` section.
    pub tls_extra: String,
    /// The keystore part of the config (`[keystore]`, `[keystore.config]`,
    /// `[plugins]`, ...), appended after `extra_config`. `None` (the default)
    /// is the `fs` plugin on `<server dir>/keys` (see [`fs_keystore`]);
    /// `Some(String::new())` leaves the section out, i.e. the built-in
    /// in-memory store.
    pub keystore: Option<String>,
    /// Extra environment variables for the server process (e.g. `KEYWARD_LOG`).
    pub env: Vec<(String, String)>,
}

/// The config section that makes the embedded `fs` plugin the keystore, with
/// its keys in `dir`.
pub fn fs_keystore(dir: &Path) -> String {
    format!("[keystore]\nplugin = \"fs\"\n[keystore.config]\npath = {}\n", toml_str(&dir.display().to_string()))
}

/// `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::Value::String(s.to_string()).to_string()
}

impl TestServer {
    /// Starts a server whose config is the basics plus `extra` TOML.
    pub fn start(extra: &str) -> TestServer {
        Self::start_with(Setup { extra_config: extra.to_string(), ..Setup::default() })
    }

    pub fn start_with(setup: Setup) -> TestServer {
        let dir = TempDir::new("srv");
        let admin = setup.admin.unwrap_or_else(|| Ident::new("admin"));
        let (cert, key) = setup.server_tls.clone().unwrap_or_else(|| {
            keyward::dev::self_signed("localhost", vec!["localhost".into(), "127.0.0.1".into()], false).unwrap()
        });
        std::fs::write(dir.0.join("server.crt"), &cert).unwrap();
        std::fs::write(dir.0.join("server.key"), &key).unwrap();
        let port = free_port();
        let keystore = setup.keystore.clone().unwrap_or_else(|| fs_keystore(&dir.0.join("keys")));
        let config = format!(
            "address = \"127.0.0.1:{port}\"\n[admin]\nidentity = \"{}\"\n[tls]\nkey = \"{}\"\ncert = \"{}\"\n{}\n{}\n{}",
            if setup.disable_admin { "disabled" } else { admin.id.as_str() },
            dir.0.join("server.key").display(),
            dir.0.join("server.crt").display(),
            setup.tls_extra,
            setup.extra_config,
            keystore
        );
        let config_path = dir.0.join("keyward.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = spawn_with_env(&config_path, &dir.0, &setup.env);
        let server = TestServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            admin,
            server_cert_pem: cert,
            config_path,
        };
        server.wait_ready();
        server
    }

    /// Like [`TestServer::start_with`] but returns `None` (with stderr) if the
    /// process exits instead of listening.
    pub fn try_start(setup: Setup) -> Result<TestServer, String> {
        std::panic::catch_unwind(|| Self::start_with(setup))
            .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
    }

    /// Polls `/version` until the server answers (or panics after 20 s).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child_status() {
                panic!("server exited ({status}); stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not start; stderr:\n{}", self.stderr());
    }

    fn child_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // try_wait needs &mut; poll /proc instead to keep &self.
        let alive = std::path::Path::new(&format!("/proc/{}", self.child.id())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default().contains(") Z ");
        if alive {
            Ok(None)
        } else {
            use std::os::unix::process::ExitStatusExt;
            Ok(Some(std::process::ExitStatus::from_raw(1 << 8)))
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stdout.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(self.server_cert_pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .resolve("localhost", self.addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
    }

    /// An HTTPS client presenting `who`'s certificate.
    pub fn client(&self, who: &Ident) -> Client {
        let pem = format!("{}\n{}", who.cert_pem, who.key_pem);
        let identity = reqwest::Identity::from_pem(pem.as_bytes()).unwrap();
        Client { http: self.builder().identity(identity).build().unwrap(), base: self.url("") }
    }

    pub fn admin_client(&self) -> Client {
        self.client(&self.admin.clone())
    }

    /// An HTTPS client without a client certificate.
    pub fn anonymous(&self) -> Client {
        Client { http: self.builder().build().unwrap(), base: self.url("") }
    }

    /// The key directory of the default `fs` keystore.
    pub fn keys_dir(&self) -> PathBuf {
        self.dir.0.join("keys")
    }

    /// Kills the server with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

pub fn spawn(config: &Path, dir: &Path) -> Child {
    spawn_with_env(config, dir, &[])
}

/// [`spawn`] with extra environment variables.
pub fn spawn_with_env(config: &Path, dir: &Path, env: &[(String, String)]) -> Child {
    let stdout = std::fs::File::create(dir.join("stdout.log")).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        // One compile cache for every server the tests start, so each plugin
        // is compiled once per test run rather than once per server.
        .env("KEYWARD_CACHE_DIR", plugin_cache_dir())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["server", "--config"])
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// The precompiled-plugin cache shared by the servers of this test run.
pub fn plugin_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("keyward-plugin-cache")
}

/// A response, read fully.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `message` of an error answer; asserts it is JSON.
    pub fn message(&self) -> String {
        assert!(
            self.content_type.starts_with("application/json"),
            "error content type {:?} body {:?}",
            self.content_type,
            self.text()
        );
        self.json()["message"].as_str().unwrap_or_else(|| panic!("no message in {}", self.text())).to_string()
    }

    /// ndjson lines as JSON values.
    pub fn lines(&self) -> Vec<Value> {
        self.text().lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.status, 200, "body: {}", self.text());
        self
    }

    #[track_caller]
    pub fn expect(&self, status: u16, message: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.message(), message);
    }
}

/// A thin HTTPS client.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub async fn send(&self, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Resp {
        self.try_send(method, path, body, headers).await.unwrap_or_else(|e| panic!("request {path} failed: {e:?}"))
    }

    /// Like [`Client::send`], but a failed connection or transfer (e.g. the
    /// server was killed) is an `Err` instead of a panic.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body = r.bytes().await?.to_vec();
        Ok(Resp { status, content_type, headers, body })
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, &[]).await
    }

    pub async fn get_json(&self, path: &str) -> Resp {
        self.send("GET", path, None, &[("accept", "application/json")]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send("PUT", path, Some(body.to_string().as_bytes()), &[("content-type", "application/json")]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send("POST", path, Some(body.to_string().as_bytes()), &[("content-type", "application/json")]).await
    }

    pub async fn put_empty(&self, path: &str) -> Resp {
        self.send("PUT", path, None, &[]).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None, &[]).await
    }

    /// Encrypts `plaintext` with key `name`; returns the ciphertext bytes.
    pub async fn encrypt(&self, name: &str, plaintext: &[u8], context: Option<&[u8]>) -> Vec<u8> {
        let mut body = serde_json::json!({ "plaintext": B64.encode(plaintext) });
        if let Some(c) = context {
            body["context"] = Value::String(B64.encode(c));
        }
        let r = self.put(&format!("/v1/key/encrypt/{name}"), &body).await;
        r.ok();
        B64.decode(r.json()["ciphertext"].as_str().unwrap()).unwrap()
    }

    /// Encrypts `plaintext` with key `name`; returns the response.
    pub async fn encrypt_resp(&self, name: &str, plaintext: &[u8]) -> Resp {
        self.put(&format!("/v1/key/encrypt/{name}"), &serde_json::json!({ "plaintext": B64.encode(plaintext) })).await
    }

    /// Decrypts with key `name`; returns the response.
    pub async fn decrypt(&self, name: &str, ciphertext: &[u8], context: Option<&[u8]>) -> Resp {
        let mut body = serde_json::json!({ "ciphertext": B64.encode(ciphertext) });
        if let Some(c) = context {
            body["context"] = Value::String(B64.encode(c));
        }
        self.put(&format!("/v1/key/decrypt/{name}"), &body).await
    }
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).unwrap()
}

/// The shared test vectors.
pub fn vectors() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/kes/vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A TLS connection to `server`, presenting `who`'s certificate, or none.
pub async fn tls_connect(
    server: &TestServer,
    who: Option<&Ident>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server.server_cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match who {
        Some(who) => {
            let certs = vec![CertificateDer::from_pem_slice(who.cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(who.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// Sends `request` verbatim over TLS with `who`'s certificate and returns the
/// raw response (the connection is closed by the request's `Connection: close`).
/// For requests an HTTP client library would normalise (`..` segments).
pub async fn raw_request(server: &TestServer, who: &Ident, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(server, Some(who)).await;
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
