//! Resolves where the server is and which credentials to present, and
//! builds the mutual-TLS HTTP client.
//!
//! Each setting comes from its flag first, then `KEYWARD_*`, then the KES
//! names (`KES_*`), then the names of today's `kes` CLI (`MINIO_KES_*`), so
//! scripts and environments set up for any generation of the `kes` tooling
//! work unchanged while an explicit flag or keyward name still wins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::{self as pki_pem, SectionKind};
use zeroize::Zeroizing;

use super::api::Api;
use super::apikey::ApiKey;
use super::ClientError;
use crate::cli::ClientArgs;

/// Where a client goes when nothing says otherwise (the KES CLI's default).
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7373";

/// How long establishing a connection (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment names of each setting, most specific first.
const SERVER_ENV: [&str; 3] = ["KEYWARD_SERVER", "KES_SERVER", "MINIO_KES_SERVER"];
const API_KEY_ENV: [&str; 3] = ["KEYWARD_API_KEY", "KES_API_KEY", "MINIO_KES_API_KEY"];
const CERT_ENV: [&str; 3] = ["KEYWARD_CLIENT_CERT", "KES_CLIENT_CERT", "MINIO_KES_CERT_FILE"];
const KEY_ENV: [&str; 3] = ["KEYWARD_CLIENT_KEY", "KES_CLIENT_KEY", "MINIO_KES_KEY_FILE"];

/// A setting and where it came from. `rank` orders the sources (0 is the
/// flag, then the environment names in order) so that an API key and a
/// certificate from different places can be told apart by specificity.
struct Found<T> {
    value: T,
    rank: usize,
    source: String,
}

/// The flag's value, else the first non-empty variable among `env`.
fn lookup<T>(flag: Option<T>, flag_name: &str, env: &[&str], parse: fn(String) -> T) -> Option<Found<T>> {
    if let Some(value) = flag {
        return Some(Found { value, rank: 0, source: flag_name.to_string() });
    }
    env.iter().enumerate().find_map(|(i, name)| {
        let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
        Some(Found { value: parse(value), rank: i + 1, source: name.to_string() })
    })
}

/// What the client proves its identity with.
pub enum Credentials {
    /// A `kes:v1:` API key, turned into a certificate for this run.
    ApiKey(Box<ApiKey>),
    /// A certificate and private key file.
    Files { cert: PathBuf, key: PathBuf },
}

/// Picks the credentials. An API key and a certificate may both be set, in
/// different places (a MinIO host's environment names a certificate, the
/// user passes `--api-key`): the more specific source wins, and when both
/// come from the same level the choice is ambiguous and refused, as `kes`
/// refuses both at once.
pub fn credentials(args: &ClientArgs) -> Result<Credentials, ClientError> {
    let api_key = lookup(args.api_key.clone(), "--api-key", &API_KEY_ENV, |v| v);
    let cert = lookup(args.cert.clone(), "--cert", &CERT_ENV, PathBuf::from);
    let key = lookup(args.key.clone(), "--key", &KEY_ENV, PathBuf::from);
    let files = [&cert, &key].into_iter().flatten().min_by_key(|f| f.rank);
    if let Some(api_key) = api_key {
        match files {
            Some(f) if f.rank < api_key.rank => {}
            Some(f) if f.rank == api_key.rank => {
                return Err(ClientError::Usage(format!(
                    "both an API key ({}) and a client certificate or key ({}) are set; use one",
                    api_key.source, f.source
                )))
            }
            _ => {
                let key = ApiKey::parse(&api_key.value)
                    .map_err(|e| ClientError::Usage(format!("{e} (from {})", api_key.source)))?;
                return Ok(Credentials::ApiKey(Box::new(key)));
            }
        }
    }
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Credentials::Files { cert: c.value, key: k.value }),
        (None, None) => Err(ClientError::Usage(
            "no client certificate or API key: use --cert FILE --key FILE or --api-key KEY, or set KES_CLIENT_CERT and KES_CLIENT_KEY or KES_API_KEY (the KEYWARD_* and MINIO_KES_* names work too)"
                .into(),
        )),
        (Some(_), None) => Err(ClientError::Usage(
            "a client certificate but no private key: use --key FILE or set KEYWARD_CLIENT_KEY".into(),
        )),
        (None, Some(_)) => Err(ClientError::Usage(
            "a private key but no client certificate: use --cert FILE or set KEYWARD_CLIENT_CERT".into(),
        )),
    }
}

/// The servers to try, in order: `--server` or the first variable set, a
/// comma-separated list as `KES_SERVER` may hold, else the default.
pub fn servers(args: &ClientArgs) -> Result<Vec<String>, ClientError> {
    let raw = lookup(args.server.clone(), "--server", &SERVER_ENV, |v| v)
        .map_or_else(|| DEFAULT_SERVER.to_string(), |f| f.value);
    let list =
        raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(server_url).collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(ClientError::Usage("the server address is empty".into()));
    }
    Ok(list)
}

fn path_or_env(flag: &Option<PathBuf>, names: &[&str]) -> Option<PathBuf> {
    lookup(flag.clone(), "", names, PathBuf::from).map(|f| f.value)
}

/// Normalises a server address: `host:port` gets `https://`, a trailing `/`
/// goes; plain `http://` is refused because the API only exists over TLS.
pub fn server_url(raw: &str) -> Result<String, ClientError> {
    let raw = raw.trim().trim_end_matches('/');
    if raw.is_empty() {
        return Err(ClientError::Usage("the server address is empty".into()));
    }
    let url = if raw.contains("://") { raw.to_string() } else { format!("https://{raw}") };
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| ClientError::Usage(format!("invalid server address '{raw}': {e}")))?;
    if parsed.scheme() != "https" {
        return Err(ClientError::Usage(format!(
            "invalid server address '{raw}': the KES API is only served over https"
        )));
    }
    if parsed.host_str().is_none() {
        return Err(ClientError::Usage(format!("invalid server address '{raw}': no host")));
    }
    Ok(url)
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Failed(format!("cannot read {what} '{}': {e}", path.display())))
}

/// The PEM sections of `bytes` (empty if it is not PEM); unknown labels
/// (e.g. `EC PARAMETERS`) are skipped.
fn pem_sections(bytes: &[u8]) -> Vec<(SectionKind, Vec<u8>)> {
    let mut reader = std::io::Cursor::new(bytes);
    let mut sections = Vec::new();
    while let Ok(Some(section)) = pki_pem::from_buf(&mut reader) {
        sections.push(section);
    }
    sections
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Re-encodes one section as PEM text (LF line endings). The DER copy is
/// wiped once encoded: for the private key it is key material.
fn pem_block(label: &str, der: Vec<u8>) -> Zeroizing<String> {
    let block = pem::Pem::new(label, der);
    let text = pem::encode_config(&block, pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF));
    drop(Zeroizing::new(block.into_contents()));
    Zeroizing::new(text)
}

/// Checks the client certificate and key files before handing them to the
/// TLS library, whose own errors do not say which file is wrong, and passes
/// on only the certificates and the key (other PEM blocks would make it fail).
fn client_identity(cert_path: &Path, key_path: &Path) -> Result<reqwest::Identity, ClientError> {
    let cert = read("client certificate", cert_path)?;
    // Private key material is wiped from memory once the TLS config has it.
    let key = Zeroizing::new(read("client key", key_path)?);
    let mut pem: Zeroizing<String> = Zeroizing::new(String::new());
    for (kind, der) in pem_sections(&cert) {
        if kind == SectionKind::Certificate {
            pem.push_str(&pem_block("CERTIFICATE", der));
        }
    }
    if pem.is_empty() {
        return Err(ClientError::Failed(format!("'{}' contains no PEM certificate", cert_path.display())));
    }
    if contains(&key, b"ENCRYPTED PRIVATE KEY") || contains(&key, b"Proc-Type: 4,ENCRYPTED") {
        return Err(ClientError::Failed(format!(
            "'{}' is an encrypted private key; the client needs an unencrypted one",
            key_path.display()
        )));
    }
    let usable = pem_sections(&key).into_iter().find_map(|(kind, der)| match kind {
        SectionKind::PrivateKey => Some(pem_block("PRIVATE KEY", der)),
        SectionKind::RsaPrivateKey => Some(pem_block("RSA PRIVATE KEY", der)),
        SectionKind::EcPrivateKey => Some(pem_block("EC PRIVATE KEY", der)),
        _ => {
            drop(Zeroizing::new(der));
            None
        }
    });
    let Some(block) = usable else {
        return Err(ClientError::Failed(format!("'{}' contains no PEM private key", key_path.display())));
    };
    pem.push_str(&block);
    reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
        ClientError::Failed(format!(
            "cannot use client certificate '{}' with key '{}': {}",
            cert_path.display(),
            key_path.display(),
            super::api::root_cause(&e)
        ))
    })
}

impl Credentials {
    /// The TLS client identity: the files as they are, or a certificate
    /// made for the API key just now.
    fn tls_identity(&self) -> Result<reqwest::Identity, ClientError> {
        match self {
            Credentials::Files { cert, key } => client_identity(cert, key),
            Credentials::ApiKey(api_key) => {
                let (cert, key) = api_key.client_certificate().map_err(|e| ClientError::Failed(e.to_string()))?;
                let mut pem = Zeroizing::new(cert);
                pem.push_str(&key);
                reqwest::Identity::from_pem(pem.as_bytes())
                    .map_err(|e| ClientError::Failed(format!("cannot use the API key: {}", super::api::root_cause(&e))))
            }
        }
    }

    /// Names the credentials in an error message (never the key itself).
    fn describe(&self) -> String {
        match self {
            Credentials::Files { cert, key } => {
                format!("client certificate '{}' with key '{}'", cert.display(), key.display())
            }
            Credentials::ApiKey(k) => format!("the API key of identity {}", k.identity()),
        }
    }
}

/// Makes `builder` trust only the CA file the user named, if any; returns
/// whether there was one.
fn trust_cacert(
    builder: reqwest::ClientBuilder,
    args: &ClientArgs,
) -> Result<(reqwest::ClientBuilder, bool), ClientError> {
    let Some(ca_path) = path_or_env(&args.cacert, &["KEYWARD_CACERT"]) else {
        return Ok((builder, false));
    };
    let bytes = read("CA certificate", &ca_path)?;
    let cas = reqwest::Certificate::from_pem_bundle(&bytes).map_err(|e| {
        ClientError::Failed(format!("'{}' is not a PEM certificate: {}", ca_path.display(), super::api::root_cause(&e)))
    })?;
    if cas.is_empty() {
        return Err(ClientError::Failed(format!("'{}' contains no PEM certificate", ca_path.display())));
    }
    // An explicit CA replaces the system roots: trusting both would let
    // any public CA impersonate a private key server.
    let mut builder = builder.tls_built_in_root_certs(false);
    for ca in cas {
        builder = builder.add_root_certificate(ca);
    }
    Ok((builder, true))
}

/// Builds an [`Api`] from the command line and environment.
pub fn connect(args: &ClientArgs) -> Result<Api, ClientError> {
    let servers = servers(args)?;
    let credentials = credentials(args)?;
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .identity(credentials.tls_identity()?)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")));
    let (mut builder, has_ca) = trust_cacert(builder, args)?;
    if args.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    let http = builder.build().map_err(|e| {
        let cause = super::api::root_cause(&e);
        let why = if cause.contains("KeyMismatch") {
            "the private key does not belong to the certificate".to_string()
        } else {
            cause
        };
        ClientError::Failed(format!("cannot use {}: {why}", credentials.describe()))
    })?;
    Ok(Api::new(http, servers, has_ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_normalised() {
        assert_eq!(server_url("127.0.0.1:7373").unwrap(), "https://127.0.0.1:7373");
        assert_eq!(server_url("https://kes.example:7373/").unwrap(), "https://kes.example:7373");
        assert!(matches!(server_url("http://127.0.0.1:7373"), Err(ClientError::Usage(_))));
        assert!(matches!(server_url("  "), Err(ClientError::Usage(_))));
    }

    #[test]
    fn a_server_list_is_split_on_commas() {
        let args = ClientArgs { server: Some(" a:7373, ,https://b:1/ ".into()), ..ClientArgs::default() };
        assert_eq!(servers(&args).unwrap(), ["https://a:7373", "https://b:1"]);
        let args = ClientArgs { server: Some(" , ".into()), ..ClientArgs::default() };
        assert!(matches!(servers(&args), Err(ClientError::Usage(_))));
    }

    #[test]
    fn pem_blocks_are_standard_pem() {
        let der = vec![0x30u8; 100];
        let text = pem_block("CERTIFICATE", der.clone());
        let first = text.lines().nth(1).unwrap();
        assert_eq!(first.len(), 64, "64-column lines");
        assert!(!text.contains('\r') && text.ends_with("-----END CERTIFICATE-----\n"), "{}", text.as_str());
        let back = pem_sections(text.as_bytes());
        assert_eq!(back, [(SectionKind::Certificate, der)]);
    }
}
