//! `keyward server --dev`: a complete server with nothing on disk beforehand.
//!
//! Writes a self-signed server certificate and an admin client key/cert into a
//! fresh temporary directory (directory 0700, files 0600) and prints how to use them.
//!
//! The temp directory is shared with every local user, so nothing here may
//! follow a name someone else could have planted: the directory name carries
//! a random suffix and must not exist yet (a `mkdir`, which never follows a
//! symlink), and every file is created new. Otherwise another user could
//! pre-create `/tmp/keyward-dev-<pid>` (or a symlink of that name) and be
//! handed the admin private key.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

use keyward_server::config::{
    Admin, CacheSettings, ClientAuth, KeystoreSettings, LimitSettings, LogSettings, Settings, TlsSettings,
};

/// Why dev mode could not prepare its files.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("dev: cannot write '{path}': {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("dev: cannot create the private directory '{path}': {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    /// The certificate just generated did not parse back; an empty admin
    /// identity would silently lock the admin out, so this is an error.
    #[error("dev: cannot compute the identity of the generated admin certificate")]
    Identity,
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

/// Writes `contents` to a new file at `path`, readable only by the owner.
///
/// The file must not exist: `create_new` is `O_CREAT|O_EXCL`, which also
/// refuses a symlink planted at `path`, so the key can never land in a file
/// (or through a link) that someone else prepared.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), DevError> {
    let err = |source| DevError::Write { path: path.to_path_buf(), source };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
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

/// Creates `dir` itself (not its parents) with mode 0700; it must not exist.
///
/// A single `mkdir` fails with `AlreadyExists` on anything already at `dir`,
/// a directory or a symlink alike, so a planted name is refused rather than
/// reused. The parent must already exist: creating missing parents would
/// mean trusting whatever is at those names.
fn create_private_dir(dir: &Path) -> Result<(), DevError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| DevError::Dir { path: dir.to_path_buf(), source })
}

/// A fresh directory name under `parent`: 64 random bits, so it cannot be
/// guessed in advance (unlike the process id).
fn random_dir_name(parent: &Path) -> PathBuf {
    parent.join(format!("keyward-dev-{:016x}", rand::random::<u64>()))
}

/// Creates a private temp directory with a server and an admin certificate.
pub fn prepare() -> Result<DevFiles, DevError> {
    prepare_in(&random_dir_name(&std::env::temp_dir()))
}

/// [`prepare`] into `dir`, which must not exist yet.
fn prepare_in(dir: &Path) -> Result<DevFiles, DevError> {
    create_private_dir(dir)?;
    let dir = dir.to_path_buf();
    let (server_cert, server_key) =
        self_signed("localhost", vec!["localhost".into(), "127.0.0.1".into(), "::1".into()], false)?;
    let (admin_cert, admin_key) = self_signed("keyward-admin", vec![], true)?;
    let files = DevFiles {
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        admin_identity: keyward_server::tls::identity_of_cert(admin_cert.as_bytes()).ok_or(DevError::Identity)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch parent directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = random_dir_name(&std::env::temp_dir()).with_extension(tag);
            std::fs::create_dir(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directory_names_are_not_predictable() {
        let parent = Path::new("/tmp");
        let (a, b) = (random_dir_name(parent), random_dir_name(parent));
        assert_ne!(a, b, "two calls gave the same name");
        assert_ne!(a, parent.join(format!("keyward-dev-{}", std::process::id())));
    }

    #[cfg(unix)]
    #[test]
    fn fresh_directory_and_files_are_private() {
        let s = Scratch::new("fresh");
        let dir = s.0.join("dev");
        let files = prepare_in(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in [&files.server_cert, &files.server_key, &files.admin_cert, &files.admin_key] {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        assert_eq!(files.admin_identity.len(), 64);
    }

    #[test]
    fn a_pre_existing_directory_is_refused() {
        let s = Scratch::new("taken");
        let dir = s.0.join("dev");
        std::fs::create_dir(&dir).unwrap();
        let err = prepare_in(&dir).unwrap_err();
        assert!(matches!(&err, DevError::Dir { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists));
        assert!(err.to_string().contains("private directory"), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing may be written into it");
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        let s = Scratch::new("link");
        let target = s.0.join("attacker");
        std::fs::create_dir(&target).unwrap();
        let dir = s.0.join("dev");
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        assert!(prepare_in(&dir).is_err());
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "the admin key leaked through the link");
        // A dangling link is refused too (mkdir does not create its target).
        let dangling = s.0.join("dangling");
        std::os::unix::fs::symlink(s.0.join("nowhere"), &dangling).unwrap();
        assert!(prepare_in(&dangling).is_err());
        assert!(!s.0.join("nowhere").exists());
    }

    #[cfg(unix)]
    #[test]
    fn files_are_created_new_never_reused() {
        let s = Scratch::new("files");
        // A file that exists already keeps its content.
        let existing = s.0.join("admin.key");
        std::fs::write(&existing, b"planted").unwrap();
        assert!(matches!(write_private(&existing, b"secret"), Err(DevError::Write { .. })));
        assert_eq!(std::fs::read(&existing).unwrap(), b"planted");
        // A symlink at the name is not followed.
        let target = s.0.join("target");
        let link = s.0.join("server.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_private(&link, b"secret").is_err());
        assert!(!target.exists());
    }
}
