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
    let id = keyward_server::tls::identity_of_cert(cert_pem.as_bytes()).unwrap();
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
async fn auth_off_accepts_any_certificate_and_the_identity_is_its_key_hash() {
    let s = TestServer::start("");
    let who = Ident::new("anyone");
    let me = s.client(&who).get("/v1/identity/self/describe").await;
    assert_eq!(me.ok().json()["identity"], who.id.as_str());
    assert_eq!(me.json()["admin"], false);
    // An identity in no policy has no creation time: the field is left out,
    // as Go clients cannot parse "" as a time.
    assert!(me.json().get("created_at").is_none(), "{}", me.text());
}

/// A self-signed CA certificate of the attacker's own (whose key signs the
/// handshake) followed by the admin's *public* certificate.
fn spoofing_chain(victim: &Ident) -> Ident {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "attacker CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let own = params.self_signed(&key).unwrap();
    let id = keyward_server::tls::identity_of_cert(own.pem().as_bytes()).unwrap();
    Ident { cert_pem: format!("{}{}", own.pem(), victim.cert_pem), key_pem: key.serialize_pem(), id }
}

/// A client may not take its identity from a certificate whose key it does
/// not hold: with `tls.auth` off, a chain led by the client's own CA
/// certificate, or carrying a second end-entity certificate, is refused;
/// with `tls.auth` on the handshake already fails. Nothing is created.
#[tokio::test]
async fn a_chain_carrying_the_admins_public_certificate_does_not_make_the_client_admin() {
    let s = TestServer::start("");
    let spoof = s.client(&spoofing_chain(&s.admin));
    let me = spoof.get("/v1/identity/self/describe").await;
    me.expect(400, "tls: the client certificate is a CA certificate");
    spoof.put_empty("/v1/key/create/spoofed").await.expect(400, "tls: the client certificate is a CA certificate");
    // Two end-entity certificates: the attacker's own leaf first, the
    // admin's second.
    let own = Ident::new("attacker");
    let two = Ident { cert_pem: format!("{}{}", own.cert_pem, s.admin.cert_pem), ..own };
    s.client(&two)
        .get("/v1/identity/self/describe")
        .await
        .expect(400, "tls: received more than one client certificate");
    s.admin_client().get("/v1/key/describe/spoofed").await.expect(404, "key does not exist");

    let (ca_pem, admin) = ca_and_client();
    let dir = crate::harness::TempDir::new("spoof");
    let ca_path = dir.0.join("ca.pem");
    std::fs::write(&ca_path, &ca_pem).unwrap();
    let s = TestServer::start_with(Setup {
        admin: Some(admin.clone()),
        tls_extra: format!("ca = \"{}\"\nauth = \"on\"\n", ca_path.display()),
        ..Setup::default()
    });
    s.admin_client().get("/v1/status").await.ok();
    let spoof = s.client(&spoofing_chain(&admin));
    let err = spoof.http.get(format!("{}/v1/identity/self/describe", spoof.base)).send().await;
    assert!(err.is_err(), "a chain led by an untrusted CA was accepted: {err:?}");
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

/// A CA-signed client certificate for `ca`, valid for the given days relative
/// to now (negative: in the past).
fn client_signed_by(ca: &Issuer<'static, KeyPair>, not_before_days: i64, not_after_days: i64) -> Ident {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(not_before_days);
    params.not_after = now + time::Duration::days(not_after_days);
    let cert = params.signed_by(&key, ca).unwrap();
    let cert_pem = cert.pem();
    let id = keyward_server::tls::identity_of_cert(cert_pem.as_bytes()).unwrap();
    Ident { cert_pem, key_pem: key.serialize_pem(), id }
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// With `tls.auth = "on"`, a certificate from another CA (even with the same
/// subject, even sent with that CA's certificate) and an expired certificate
/// from the trusted CA are refused in the handshake; a policy naming the
/// identity does not help.
#[tokio::test]
async fn auth_on_refuses_untrusted_cas_and_expired_certificates() {
    let (trusted_pem, trusted) = new_ca("test CA");
    let (other_pem, other) = new_ca("test CA");
    let good = client_signed_by(&trusted, -1, 30);
    let foreign = client_signed_by(&other, -1, 30);
    let expired = client_signed_by(&trusted, -30, -1);
    let dir = crate::harness::TempDir::new("ca2");
    let ca_path = dir.0.join("ca.pem");
    std::fs::write(&ca_path, &trusted_pem).unwrap();
    let s = TestServer::start_with(Setup {
        tls_extra: format!("ca = \"{}\"\nauth = \"on\"\n", ca_path.display()),
        extra_config: format!(
            "[policy.all]\nallow = [\"/v1/*\"]\nidentities = [\"{}\", \"{}\", \"{}\"]\n",
            good.id, foreign.id, expired.id
        ),
        ..Setup::default()
    });
    s.client(&good).get("/v1/status").await.ok();
    let with_chain = Ident { cert_pem: format!("{}\n{}", foreign.cert_pem, other_pem), ..foreign.clone() };
    for (what, who) in [("another CA", &foreign), ("another CA, with its chain", &with_chain), ("expired", &expired)] {
        let c = s.client(who);
        let r = c.http.get(format!("{}/v1/status", c.base)).send().await;
        assert!(r.is_err(), "a client certificate from {what} was accepted: {:?}", r.map(|r| r.status()));
    }
    s.client(&good).get("/v1/status").await.ok();
}

/// A TLS record carrying a ClientHello that offers `version` as
/// `legacy_version` and no `supported_versions` extension, i.e. what a client
/// that cannot speak TLS 1.3 sends, with suites for both TLS 1.2 and older.
fn client_hello(version: u16) -> Vec<u8> {
    fn u16s(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    }
    fn with_len16(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }
    fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(with_len16(body));
        out
    }
    let mut sni = vec![0u8];
    sni.extend(with_len16(b"localhost"));
    let mut extensions = Vec::new();
    extensions.extend(extension(0x0000, &with_len16(&sni)));
    extensions.extend(extension(0x000a, &with_len16(&u16s(&[0x001d, 0x0017, 0x0018]))));
    extensions.extend(extension(0x000b, &[1, 0]));
    extensions.extend(extension(0x000d, &with_len16(&u16s(&[0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501]))));
    extensions.extend(extension(0x0017, &[]));
    extensions.extend(extension(0xff01, &[0]));
    let suites = [0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc009, 0xc013, 0xc00a, 0xc014, 0x002f, 0x0035];
    let mut hello = version.to_be_bytes().to_vec();
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend(with_len16(&u16s(&suites)));
    hello.extend_from_slice(&[1, 0]); // null compression
    hello.extend(with_len16(&extensions));
    let mut handshake = vec![1u8]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(with_len16(&handshake));
    record
}

/// Sends `hello` and returns what the server answers before closing (or
/// within 5 s).
fn server_answer(s: &TestServer, hello: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    tcp.write_all(hello).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > 5 && out[0] == 0x16 {
            break; // a ServerHello: enough
        }
    }
    out
}

/// TLS 1.2 and 1.3 only: a client offering SSL 3.0, TLS 1.0 or TLS 1.1 gets a
/// `protocol_version` alert and no ServerHello. The same ClientHello offering
/// TLS 1.2 gets a TLS 1.2 ServerHello, so it is the version that is refused,
/// not the message; and a real TLS 1.2-only client completes a request.
#[tokio::test]
async fn protocol_versions_below_tls_1_2_are_refused() {
    let s = TestServer::start("");
    let answer = server_answer(&s, &client_hello(0x0303));
    assert!(answer.len() > 11 && answer[0] == 0x16 && answer[5] == 2, "no ServerHello for TLS 1.2: {answer:02x?}");
    assert_eq!(answer[9..11], [0x03, 0x03], "ServerHello version");
    for (name, version) in [("SSL 3.0", 0x0300), ("TLS 1.0", 0x0301), ("TLS 1.1", 0x0302)] {
        let answer = server_answer(&s, &client_hello(version));
        // An alert record: type 21, fatal (2), protocol_version (70).
        assert!(answer.len() >= 7 && answer[0] == 0x15, "{name}: not an alert: {answer:02x?}");
        assert_eq!(answer[5..7], [2, 70], "{name}: alert {answer:02x?}");
    }

    // A rustls client limited to TLS 1.2 is served.
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(s.server_cert_pem.as_bytes()).unwrap()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(s.admin.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(s.admin.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    tls.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
}

/// rustls warns about every handshake that names an IP address as server
/// name (SNI), before any authentication: anyone who can connect could fill
/// the log. Such handshakes leave no line at the default log level.
#[tokio::test]
async fn handshakes_with_an_ip_address_as_server_name_are_not_logged() {
    let s = TestServer::start("");
    let openssl = std::process::Command::new("openssl").arg("version").output();
    if openssl.is_err() {
        return crate::skip::skip("handshakes_with_an_ip_address_as_server_name_are_not_logged", "no openssl command");
    }
    for _ in 0..5 {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &s.addr.to_string(), "-servername", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("BEGIN CERTIFICATE") || text.contains("Server certificate"), "no handshake: {text}");
    }
    s.admin_client().get("/v1/status").await.ok();
    let stderr = s.stderr();
    assert!(!stderr.contains("SNI") && !stderr.contains("WARN"), "{stderr}");
}
