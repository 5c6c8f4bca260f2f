//! `keyward server --dev`: a complete server with nothing on disk beforehand.
//!
//! Writes a self-signed server certificate and an admin client key/cert into a
//! fresh temporary directory (files 0600) and prints how to use them.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

use crate::config::{
    Admin, CacheSettings, ClientAuth, KeystoreSettings, LimitSettings, LogSettings, Settings, TlsSettings,
};

/// Why dev mode could not prepare its files.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("dev: cannot write '{path}': {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("dev: cannot generate certificates: {0}")]
    Cert(#[from] rcgen::Error),
}

/// Files written for a dev server.
#[derive(Debug, Clone)]
pub struct DevFiles {
    pub dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub admin_identity: String,
}

/// Writes `contents` to `path`, readable only by the owner.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), DevError> {
    let err = |source| DevError::Write { path: path.to_path_buf(), source };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)
}

/// A self-signed certificate and key for `names` (DNS names or IP addresses).
pub fn self_signed(common_name: &str, names: Vec<String>, client: bool) -> Result<(String, String), DevError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages =
        vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Creates a temp directory with a server and an admin certificate.
pub fn prepare() -> Result<DevFiles, DevError> {
    let dir = std::env::temp_dir().join(format!("keyward-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DevError::Write { path: dir.clone(), source })?;
    let (server_cert, server_key) =
        self_signed("localhost", vec!["localhost".into(), "127.0.0.1".into(), "::1".into()], false)?;
    let (admin_cert, admin_key) = self_signed("keyward-admin", vec![], true)?;
    let files = DevFiles {
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        admin_identity: crate::tls::identity_of_cert(admin_cert.as_bytes()).unwrap_or_default(),
        dir,
    };
    write_private(&files.server_cert, server_cert.as_bytes())?;
    write_private(&files.server_key, server_key.as_bytes())?;
    write_private(&files.admin_cert, admin_cert.as_bytes())?;
    write_private(&files.admin_key, admin_key.as_bytes())?;
    Ok(files)
}

/// Settings for a dev server on `address` using `files`.
pub fn settings(files: &DevFiles, address: SocketAddr) -> Settings {
    Settings {
        address,
        admin: Admin::Identity(files.admin_identity.clone()),
        tls: TlsSettings {
            key: files.server_key.clone(),
            cert: files.server_cert.clone(),
            password: None,
            ca: None,
            auth: ClientAuth::Any,
        },
        cache: CacheSettings::default(),
        log: LogSettings { error: true, audit: true },
        api: BTreeMap::new(),
        policies: BTreeMap::new(),
        keys: Vec::new(),
        plugin_manifest: None,
        keystore: Some(KeystoreSettings {
            plugin: "fs".into(),
            config_json: serde_json::json!({ "path": files.dir.join("keys") }).to_string(),
            seal: None,
        }),
        audit: Vec::new(),
        limits: LimitSettings::default(),
        dev: true,
    }
}

/// The banner printed at start-up (to stderr, so stdout stays audit lines).
///
/// Every command in it must work when pasted: a wildcard listen address is
/// shown as the loopback address, which the server certificate covers.
pub fn banner(files: &DevFiles, address: SocketAddr) -> String {
    let d = files.dir.display();
    let mut reach = address;
    let mut note = "";
    if reach.ip().is_unspecified() {
        note = " (listening on all interfaces)";
        reach.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!(
        "keyward dev server\n\
         \x20 address:        https://{reach}{note}\n\
         \x20 admin identity: {id}\n\
         \x20 admin cert:     {d}/admin.crt\n\
         \x20 admin key:      {d}/admin.key\n\
         \x20 server CA:      {d}/server.crt\n\
         \n\
         Try:\n\
         \x20 curl --cacert {d}/server.crt --cert {d}/admin.crt --key {d}/admin.key https://{reach}/v1/status\n\
         \x20 export KEYWARD_SERVER=https://{reach} KEYWARD_CLIENT_CERT={d}/admin.crt KEYWARD_CLIENT_KEY={d}/admin.key KEYWARD_CACERT={d}/server.crt\n\
         \x20 keyward key create my-key\n\
         \x20 keyward key encrypt my-key 'hello world'\n\
         \x20 keyward status\n",
        id = files.admin_identity,
    )
}
