//! Resolves where the server is and which credentials to present, from flags
//! first, then `KEYWARD_*`, then the KES environment names, and builds the
//! mutual-TLS HTTP client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::{self, SectionKind};
use zeroize::Zeroizing;

use super::api::Api;
use super::ClientError;
use crate::cli::ClientArgs;

/// Where a client goes when nothing says otherwise (the KES CLI's default).
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7373";

/// How long establishing a connection (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first non-empty value among the environment variables `names`.
fn env_first(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

fn path_or_env(flag: &Option<PathBuf>, names: &[&str]) -> Option<PathBuf> {
    flag.clone().or_else(|| env_first(names).map(PathBuf::from))
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
    while let Ok(Some(section)) = pem::from_buf(&mut reader) {
        sections.push(section);
    }
    sections
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Re-encodes one section as PEM text.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Checks the client certificate and key files before handing them to the
/// TLS library, whose own errors do not say which file is wrong, and passes
/// on only the certificates and the key (other PEM blocks would make it fail).
fn client_identity(cert_path: &Path, key_path: &Path) -> Result<reqwest::Identity, ClientError> {
    let cert = read("client certificate", cert_path)?;
    // Private key material is wiped from memory once the TLS config has it.
    let key = Zeroizing::new(read("client key", key_path)?);
    let mut pem: Zeroizing<String> = Zeroizing::new(String::new());
    pem.push_str(
        &pem_sections(&cert)
            .iter()
            .filter(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| pem_block("CERTIFICATE", der))
            .collect::<String>(),
    );
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
        SectionKind::PrivateKey => Some(pem_block("PRIVATE KEY", &der)),
        SectionKind::RsaPrivateKey => Some(pem_block("RSA PRIVATE KEY", &der)),
        SectionKind::EcPrivateKey => Some(pem_block("EC PRIVATE KEY", &der)),
        _ => None,
    });
    let Some(block) = usable else {
        return Err(ClientError::Failed(format!("'{}' contains no PEM private key", key_path.display())));
    };
    pem.push_str(&Zeroizing::new(block));
    reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
        ClientError::Failed(format!(
            "cannot use client certificate '{}' with key '{}': {}",
            cert_path.display(),
            key_path.display(),
            super::api::root_cause(&e)
        ))
    })
}

/// Builds an [`Api`] from the command line and environment.
pub fn connect(args: &ClientArgs) -> Result<Api, ClientError> {
    let server = match &args.server {
        Some(s) => s.clone(),
        None => env_first(&["KEYWARD_SERVER", "KES_SERVER"]).unwrap_or_else(|| DEFAULT_SERVER.to_string()),
    };
    let base = server_url(&server)?;
    let cert = path_or_env(&args.cert, &["KEYWARD_CLIENT_CERT", "KES_CLIENT_CERT"]);
    let key = path_or_env(&args.key, &["KEYWARD_CLIENT_KEY", "KES_CLIENT_KEY"]);
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => {
            return Err(ClientError::Usage(
                "no client certificate: use --cert FILE --key FILE or set KEYWARD_CLIENT_CERT and KEYWARD_CLIENT_KEY (or KES_CLIENT_CERT and KES_CLIENT_KEY)"
                    .into(),
            ))
        }
        (Some(_), None) => {
            return Err(ClientError::Usage(
                "a client certificate but no private key: use --key FILE or set KEYWARD_CLIENT_KEY".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ClientError::Usage(
                "a private key but no client certificate: use --cert FILE or set KEYWARD_CLIENT_CERT".into(),
            ))
        }
    };
    let identity = client_identity(&cert, &key)?;

    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .identity(identity)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")));
    let cacert = path_or_env(&args.cacert, &["KEYWARD_CACERT"]);
    if let Some(ca_path) = &cacert {
        let bytes = read("CA certificate", ca_path)?;
        let cas = reqwest::Certificate::from_pem_bundle(&bytes).map_err(|e| {
            ClientError::Failed(format!(
                "'{}' is not a PEM certificate: {}",
                ca_path.display(),
                super::api::root_cause(&e)
            ))
        })?;
        if cas.is_empty() {
            return Err(ClientError::Failed(format!("'{}' contains no PEM certificate", ca_path.display())));
        }
        // An explicit CA replaces the system roots: trusting both would let
        // any public CA impersonate a private key server.
        builder = builder.tls_built_in_root_certs(false);
        for ca in cas {
            builder = builder.add_root_certificate(ca);
        }
    }
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
        ClientError::Failed(format!(
            "cannot use client certificate '{}' with key '{}': {why}",
            cert.display(),
            key.display(),
        ))
    })?;
    Ok(Api::new(http, base, cacert.is_some()))
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
}
