//! rustls set-up for the load generator (client) and the baseline (server),
//! with the `ring` provider, as the host uses.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    keyward_server::tls::load_certs(path).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Client configuration presenting `cert`/`key`, trusting `cacert` (or
/// anything, with `insecure`).
pub fn client_config(cacert: Option<&Path>, cert: &Path, key: &Path, insecure: bool) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoServerVerification(
            provider.signature_verification_algorithms,
        )))
    } else {
        let mut roots = RootCertStore::empty();
        let ca = cacert.ok_or_else(|| anyhow!("--cacert is required (or --insecure)"))?;
        for c in certs(ca)? {
            roots.add(c).with_context(|| format!("{}: unusable CA certificate", ca.display()))?;
        }
        builder.with_root_certificates(roots)
    };
    let chain = certs(cert)?;
    let key = keyward_server::tls::load_key(key, None).map_err(|e| anyhow!("{}: {e}", key.display()))?;
    let mut config = builder.with_client_auth_cert(chain, key).context("client certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Server configuration that *requires* a client certificate (any one; the
/// handshake signature is still verified), like KES and keyward by default.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let chain = certs(cert)?;
    let key = keyward_server::tls::load_key(key, None).map_err(|e| anyhow!("{}: {e}", key.display()))?;
    let verifier = Arc::new(keyward_server::tls::AnyClientCert::new(&provider, true));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any server certificate (handshake signatures are
/// still checked).
#[derive(Debug)]
struct NoServerVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
