//! TLS settings: client-chain verification with `tls.auth = "on"`, and
//! password-protected server keys.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

use crate::harness::{Ident, Setup, TestServer};

/// A CA and a client certificate it signed.
fn ca_and_client() -> (String, Ident) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let cert_pem = cert.pem();
    let id = keyward::tls::identity_of_cert(cert_pem.as_bytes()).unwrap();
    (ca_cert.pem(), Ident { cert_pem, key_pem: key.serialize_pem(), id })
}

#[tokio::test]
async fn auth_on_verifies_client_chains_against_the_ca() {
    let (ca_pem, admin) = ca_and_client();
    let dir = crate::harness::TempDir::new("ca");
    let ca_path = dir.0.join("ca.pem");
    std::fs::write(&ca_path, &ca_pem).unwrap();
    let s = TestServer::start_with(Setup {
        admin: Some(admin.clone()),
        tls_extra: format!("ca = \"{}\"\nauth = \"on\"\n", ca_path.display()),
        ..Setup::default()
    });
    s.admin_client().get("/v1/status").await.ok();
    // A self-signed certificate is refused in the handshake.
    let stranger = s.client(&Ident::new("self-signed"));
    let err = stranger.http.get(format!("{}/v1/status", stranger.base)).send().await;
    assert!(err.is_err(), "an unverified client certificate was accepted");
    // Without a certificate the HTTP layer answers.
    s.anonymous().get("/v1/status").await.expect(400, "tls: client certificate is required");
}

#[tokio::test]
async fn auth_off_accepts_any_certificate_but_the_ca_marked_one_is_not_the_identity() {
    // Default (auth off): a self-signed client works; identity = its key hash.
    let s = TestServer::start("");
    let me = s.client(&Ident::new("anyone")).get("/v1/identity/self/describe").await;
    me.ok();
}

#[tokio::test]
async fn encrypted_server_key_needs_the_right_password() {
    use pkcs8::der::Decode;
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.self_signed(&key).unwrap();
    let der = key.serialize_der();
    let info = pkcs8::PrivateKeyInfo::from_der(&der).unwrap();
    let encrypted = info.encrypt(rand::rngs::OsRng, "s3cret").unwrap();
    let pem = encrypted.to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF).unwrap();

    let s = TestServer::start_with(Setup {
        server_tls: Some((cert.pem(), pem.to_string())),
        tls_extra: "password = \"s3cret\"\n".into(),
        ..Setup::default()
    });
    s.admin_client().get("/v1/status").await.ok();
    drop(s);

    let err = TestServer::try_start(Setup {
        server_tls: Some((cert.pem(), pem.to_string())),
        tls_extra: "password = \"wrong\"\n".into(),
        ..Setup::default()
    })
    .err()
    .expect("started with a wrong password");
    assert!(err.contains("wrong tls.password"), "{err}");
}
