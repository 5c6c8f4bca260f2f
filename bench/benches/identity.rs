//! Client identity hashing: SHA-256 of the certificate's SubjectPublicKeyInfo,
//! from the DER chain rustls hands over (once per connection) and from PEM.

use criterion::{criterion_group, criterion_main, Criterion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

fn bench(c: &mut Criterion) {
    let (pem, _) = keyward::dev::self_signed("bench-client", vec![], true).unwrap();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let chain = [der];
    let id = keyward_server::tls::identity_of_chain(&chain).unwrap();
    assert_eq!(keyward_server::tls::identity_of_cert(pem.as_bytes()).as_deref(), Some(id.as_str()));
    c.bench_function("identity/of_chain (DER, per connection)", |b| {
        b.iter(|| keyward_server::tls::identity_of_chain(&chain).unwrap())
    });
    c.bench_function("identity/of_cert (PEM)", |b| {
        b.iter(|| keyward_server::tls::identity_of_cert(pem.as_bytes()).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
