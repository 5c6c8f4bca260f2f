//! KES API keys (`kes:v1:…`): an Ed25519 seed in text form, as printed by
//! `kes identity new` and read from `KES_API_KEY`.
//!
//! A KES server knows no API keys: it sees a TLS client certificate and
//! hashes its public key. The `kes` CLI therefore turns the key into an
//! Ed25519 key pair and a throw-away self-signed certificate on every run;
//! this module does the same, so the identity a policy names is the one the
//! `kes` tooling computes for the same key (format: minio/kms-go
//! `kes/apikey.go`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ED25519,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What every API key starts with (version 1 of the format).
pub const PREFIX: &str = "kes:v1:";

/// The key-type byte of an Ed25519 API key, the only type there is.
const ED25519_TYPE: u8 = 0;

/// An Ed25519 seed's length (RFC 8032).
const SEED_LEN: usize = 32;

/// PKCS#8 v1 wrapping of an Ed25519 seed, up to the seed itself (RFC 8410).
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// SubjectPublicKeyInfo of an Ed25519 key, up to the 32-byte public key: the
/// bytes a server hashes into the identity.
const SPKI_ED25519_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// How long the generated client certificate is valid, as with `kes`.
const CERT_VALIDITY_DAYS: i64 = 90;

/// Why a string is not a usable API key. The messages never repeat the key:
/// it is a secret and error lines end up in logs.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("the API key is not valid: it is not base64 after '{PREFIX}'")]
    NotBase64,
    #[error("the API key is not valid: it holds {0} bytes, not 33")]
    Length(usize),
    #[error("the API key is not valid: key type {0} is not supported (only 0, Ed25519)")]
    Type(u8),
    #[error("the API key is not valid: {0}")]
    Key(String),
    #[error("cannot create a certificate for the API key: {0}")]
    Certificate(String),
}

/// A parsed API key: the Ed25519 key pair it stands for.
pub struct ApiKey {
    seed: Zeroizing<[u8; SEED_LEN]>,
    key_pair: KeyPair,
}

impl ApiKey {
    /// Parses `kes:v1:<base64 of 0x00 || seed>`. The prefix may be left out,
    /// as minio/kms-go accepts it; surrounding whitespace (a pasted line) is
    /// ignored.
    pub fn parse(text: &str) -> Result<ApiKey, ApiKeyError> {
        let text = text.trim();
        let body = text.strip_prefix(PREFIX).unwrap_or(text);
        let bytes = Zeroizing::new(B64.decode(body).map_err(|_| ApiKeyError::NotBase64)?);
        if bytes.len() != 1 + SEED_LEN {
            return Err(ApiKeyError::Length(bytes.len()));
        }
        if bytes[0] != ED25519_TYPE {
            return Err(ApiKeyError::Type(bytes[0]));
        }
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        seed.copy_from_slice(&bytes[1..]);
        Self::from_seed(seed)
    }

    /// A new API key from 32 random bytes.
    pub fn generate() -> Result<ApiKey, ApiKeyError> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed[..]);
        Self::from_seed(seed)
    }

    fn from_seed(seed: Zeroizing<[u8; SEED_LEN]>) -> Result<ApiKey, ApiKeyError> {
        let mut pkcs8 = Zeroizing::new(PKCS8_ED25519_PREFIX.to_vec());
        pkcs8.extend_from_slice(&seed[..]);
        let der = PrivatePkcs8KeyDer::from(&pkcs8[..]);
        let key_pair =
            KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ED25519).map_err(|e| ApiKeyError::Key(e.to_string()))?;
        Ok(ApiKey { seed, key_pair })
    }

    /// The key in its text form, `kes:v1:…`.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(vec![ED25519_TYPE]);
        bytes.extend_from_slice(&self.seed[..]);
        Zeroizing::new(format!("{PREFIX}{}", B64.encode(&bytes[..])))
    }

    /// The identity a server computes for this key's certificates: SHA-256
    /// over the public key's SubjectPublicKeyInfo DER, in lowercase hex.
    pub fn identity(&self) -> String {
        let mut spki = SPKI_ED25519_PREFIX.to_vec();
        spki.extend_from_slice(self.key_pair.public_key_raw());
        hex::encode(Sha256::digest(&spki))
    }

    /// A self-signed client certificate for this key and the key itself, as
    /// PEM: subject CN = the identity, a random 128-bit serial, valid from
    /// now for 90 days, client authentication only, not a CA (what `kes`
    /// generates; only the public key matters to the server).
    pub fn client_certificate(&self) -> Result<(String, Zeroizing<String>), ApiKeyError> {
        let fail = |e: rcgen::Error| ApiKeyError::Certificate(e.to_string());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, self.identity());
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
        // Positive and below 2^128, as Go's rand.Int(2^128) gives.
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now;
        params.not_after = now + time::Duration::days(CERT_VALIDITY_DAYS);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.is_ca = IsCa::ExplicitNoCa;
        let cert = params.self_signed(&self.key_pair).map_err(fail)?;
        Ok((cert.pem(), Zeroizing::new(self.key_pair.serialize_pem())))
    }
}

/// Whether `text` is meant as an API key rather than a file name.
pub fn looks_like_api_key(text: &str) -> bool {
    text.trim_start().starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys and identities from /tmp/kes-client-research.md section 8,
    /// checked there independently (Python `cryptography`).
    const VECTORS: [(&str, &str); 3] = [
        (
            "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs",
            "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6",
        ),
        (
            "kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw",
            "0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb",
        ),
        (
            "kes:v1:AMxvd2uV1l5dDSRwuKZxSjuM5BDemlr+685+JAHA1TuJ",
            "ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7",
        ),
    ];

    #[test]
    fn known_keys_give_known_identities() {
        for (key, identity) in VECTORS {
            let parsed = ApiKey::parse(key).unwrap();
            assert_eq!(parsed.identity(), identity, "{key}");
            assert_eq!(parsed.encode().as_str(), key, "the key survives a round trip");
        }
    }

    #[test]
    fn the_certificate_carries_the_identity_the_server_computes() {
        use rcgen::PublicKeyData as _;
        use rustls_pki_types::pem::PemObject as _;
        let (key, identity) = VECTORS[0];
        let parsed = ApiKey::parse(key).unwrap();
        assert_eq!(parsed.key_pair.subject_public_key_info()[..12], SPKI_ED25519_PREFIX);
        let (cert, key_pem) = parsed.client_certificate().unwrap();
        assert_eq!(keyward_server::tls::identity_of_cert(cert.as_bytes()).as_deref(), Some(identity));
        assert!(key_pem.contains("BEGIN PRIVATE KEY"));
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = x509.subject().iter_common_name().next().and_then(|c| c.as_str().ok());
        assert_eq!(cn, Some(identity));
        assert_eq!(x509.issuer(), x509.subject(), "self-signed");
        let days = (x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp()) / 86_400;
        assert_eq!(days, CERT_VALIDITY_DAYS);
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!x509.is_ca());
    }

    #[test]
    fn generated_keys_parse_back_to_the_same_identity() {
        let key = ApiKey::generate().unwrap();
        let text = key.encode();
        assert!(text.starts_with(PREFIX) && text.len() == PREFIX.len() + 44, "{}", text.as_str());
        assert_eq!(ApiKey::parse(&text).unwrap().identity(), key.identity());
        assert_ne!(ApiKey::generate().unwrap().identity(), key.identity());
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        let wrong_type = "kes:v1:sbDvZFqUPFFwxRS4EkuoEb2nyyInkdKSUEYHXFHeTouW";
        let short = format!("{PREFIX}{}", B64.encode([0u8; 32]));
        let cases: [(&str, &str); 4] = [
            (wrong_type, "key type 177"),
            ("kes:v1:not base64!", "not base64"),
            (&short, "32 bytes, not 33"),
            ("kes:v1:", "0 bytes"),
        ];
        for (text, why) in cases {
            let err = ApiKey::parse(text).err().unwrap_or_else(|| panic!("{text} was accepted")).to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(text.len() <= PREFIX.len() || !err.contains(&text[PREFIX.len()..]), "{err}");
        }
        // kms-go trims the prefix rather than requiring it.
        let bare = VECTORS[1].0.strip_prefix(PREFIX).unwrap();
        assert_eq!(ApiKey::parse(bare).unwrap().identity(), VECTORS[1].1);
        assert!(looks_like_api_key(VECTORS[1].0) && !looks_like_api_key("client.crt"));
    }
}
