//! TLS set-up and client identities.
//!
//! KES asks every client for a certificate but, by default, does not check it
//! against a CA: the identity is the hash of the certificate's public key, and
//! policies decide what that identity may do. We do the same. The handshake
//! still proves the client holds the private key (the signature over the
//! handshake is verified), so an identity cannot be claimed with a copied
//! certificate alone.
//!
//! A certificate is *requested*, never *required*, at the TLS layer: a client
//! without one gets a clear HTTP 400 instead of an opaque handshake failure, and
//! `/version` and `skip_auth` routes work without one.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::{ClientAuth, TlsSettings};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert: cannot read '{path}': {message}")]
    Cert { path: String, message: String },
    #[error("tls.key: cannot read '{path}': {message}")]
    Key { path: String, message: String },
    #[error("tls.ca: cannot read '{path}': {message}")]
    Ca { path: String, message: String },
    #[error("tls: {0}")]
    Config(String),
}

/// Why a peer's certificates do not yield an identity. The first two
/// messages are KES's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("tls: client certificate is required")]
    NoCertificate,
    #[error("tls: received more than one client certificate")]
    TooManyCertificates,
    #[error("tls: the client certificate is a CA certificate")]
    CaCertificate,
    #[error("tls: the client certificate cannot be parsed")]
    Unparseable,
}

/// The hex SHA-256 of a certificate's DER SubjectPublicKeyInfo, plus whether
/// the certificate is a CA. `None` if the certificate cannot be parsed.
fn spki_identity(cert: &[u8]) -> Option<(String, bool)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let is_ca = parsed.basic_constraints().ok().flatten().map(|bc| bc.value.ca).unwrap_or(false);
    let spki = parsed.tbs_certificate.subject_pki.raw;
    Some((hex::encode(Sha256::digest(spki)), is_ca))
}

/// Computes the KES identity of a client from its presented chain: the hash
/// of the first certificate's public key.
///
/// Only the first certificate is the end-entity whose private key signed the
/// handshake (TLS 1.2 and 1.3 both verify the signature against it), so only
/// its key is proven. Every other certificate is an unproven claim: the chain
/// is refused unless the first certificate is not a CA and all the others
/// are (intermediates). KES instead takes "the one non-CA certificate
/// anywhere in the chain", which lets a client that puts a self-signed CA of
/// its own first and someone else's public certificate second act as that
/// someone; keyward is stricter here.
pub fn identity_of_chain(chain: &[CertificateDer<'_>]) -> Result<String, IdentityError> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Err(IdentityError::NoCertificate);
    };
    let (identity, is_ca) = spki_identity(leaf.as_ref()).ok_or(IdentityError::Unparseable)?;
    if is_ca {
        return Err(IdentityError::CaCertificate);
    }
    for cert in rest {
        match spki_identity(cert.as_ref()) {
            Some((_, true)) => {}
            Some((_, false)) => return Err(IdentityError::TooManyCertificates),
            None => return Err(IdentityError::Unparseable),
        }
    }
    Ok(identity)
}

/// The identity of a single PEM or DER certificate, for `keyward identity of`.
pub fn identity_of_cert(bytes: &[u8]) -> Option<String> {
    let der = match CertificateDer::pem_slice_iter(bytes).next() {
        Some(Ok(c)) => c.as_ref().to_vec(),
        _ => bytes.to_vec(),
    };
    spki_identity(&der).map(|(id, _)| id)
}

/// Accepts any client certificate (the identity is its key hash) but checks
/// the handshake signature, so the client must hold the private key. Which
/// certificate of the chain is the identity is decided after the handshake
/// (see [`identity_of_chain`]). The benchmarks' baseline server uses it too,
/// with a certificate required.
#[derive(Debug)]
pub struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl AnyClientCert {
    /// A verifier for `provider`'s signature algorithms; `mandatory` refuses
    /// handshakes without a client certificate.
    pub fn new(provider: &CryptoProvider, mandatory: bool) -> AnyClientCert {
        AnyClientCert { algorithms: provider.signature_verification_algorithms, mandatory }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Loads all certificates from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<_, _>>().map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found".to_string());
    }
    Ok(certs)
}

/// Loads a private key from a PEM file, decrypting a PKCS#8
/// `ENCRYPTED PRIVATE KEY` with `password`.
pub fn load_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password else {
            return Err("the key is encrypted but tls.password is not set".to_string());
        };
        use pkcs8::der::Decode;
        let (_, doc) = pkcs8::SecretDocument::from_pem(&text).map_err(|e| format!("invalid PEM: {e}"))?;
        let encrypted = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes())
            .map_err(|e| format!("invalid encrypted key: {e}"))?;
        let plain =
            encrypted.decrypt(password).map_err(|_| "cannot decrypt the key: wrong tls.password?".to_string())?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec())));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| format!("no usable private key: {e}"))
}

/// Builds the rustls server configuration from the `[tls]` settings.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&settings.cert)
        .map_err(|message| TlsError::Cert { path: settings.cert.display().to_string(), message })?;
    let key = load_key(&settings.key, settings.password.as_ref().map(|p| p.expose()))
        .map_err(|message| TlsError::Key { path: settings.key.display().to_string(), message })?;
    let provider = provider();
    let verifier: Arc<dyn ClientCertVerifier> = match (settings.auth, &settings.ca) {
        (ClientAuth::Verify, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            let cas = load_certs(ca).map_err(|message| TlsError::Ca { path: ca.display().to_string(), message })?;
            for c in cas {
                roots.add(c).map_err(|e| TlsError::Ca { path: ca.display().to_string(), message: e.to_string() })?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?
        }
        // Without a certificate a client is still served: KES answers it 4xx.
        _ => Arc::new(AnyClientCert::new(&provider, false)),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kes/vectors.json"))
                .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn identity_vectors() {
        let v = vectors();
        let cases = v["identity"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let pem = case["cert_pem"].as_str().unwrap();
            let want = case["identity"].as_str().unwrap();
            let got = identity_of_cert(pem.as_bytes());
            assert_eq!(got.as_deref(), Some(want), "{}", case["name"]);
        }
    }

    #[test]
    fn no_certificate_is_refused() {
        assert_eq!(identity_of_chain(&[]), Err(IdentityError::NoCertificate));
    }

    fn cert(ca: bool) -> (CertificateDer<'static>, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let cert = params.self_signed(&key).unwrap();
        let id = identity_of_cert(cert.pem().as_bytes()).unwrap();
        (cert.der().clone(), id)
    }

    #[test]
    fn the_identity_is_the_first_certificate_and_the_rest_must_be_cas() {
        let (leaf, leaf_id) = cert(false);
        let (other, _) = cert(false);
        let (ca, _) = cert(true);
        assert_eq!(identity_of_chain(std::slice::from_ref(&leaf)), Ok(leaf_id.clone()));
        assert_eq!(identity_of_chain(&[leaf.clone(), ca.clone()]), Ok(leaf_id));
        // A CA first (its key signed the handshake) with someone's public
        // leaf after it must not make the client that someone.
        assert_eq!(identity_of_chain(&[ca.clone(), leaf.clone()]), Err(IdentityError::CaCertificate));
        assert_eq!(identity_of_chain(&[ca, other.clone()]), Err(IdentityError::CaCertificate));
        assert_eq!(identity_of_chain(&[leaf.clone(), other]), Err(IdentityError::TooManyCertificates));
        assert_eq!(
            identity_of_chain(&[leaf, CertificateDer::from(b"garbage".to_vec())]),
            Err(IdentityError::Unparseable)
        );
    }
}
