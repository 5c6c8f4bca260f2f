//! The WebAssembly plugin host: a keystore `get` through the bundled `fs`
//! plugin against the same file read natively, loading a component from the
//! precompiled cache, and starting an instance (instantiate + `init`).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward_core::audit_sink::{AuditBatch, AuditSink};
use keyward_core::crypto::{Algorithm, StoredKey};
use keyward_core::keystore::Keystore;
use keyward_plugin_host::{
    EngineOptions, Grants, PluginAuditSink, PluginEngine, PluginKeystore, PluginKind, PluginSpec, PoolOptions,
};

const CONFIG: &str = r#"{"path":"/data"}"#;

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench(c: &mut Criterion) {
    let tmp = Tmp(std::env::temp_dir().join(format!("keyward-bench-plugin-{}", std::process::id())));
    let keys = tmp.0.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let value = StoredKey::generate(Algorithm::Aes256, "bench").encode();
    std::fs::write(keys.join("k1"), &value).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let engine = PluginEngine::new(EngineOptions { cache_dir: Some(tmp.0.join("cache")) }).unwrap();
    let bytes = keyward_plugin_host::bundled::find("fs").expect("bundled fs plugin");
    let spec = PluginSpec::embedded("fs", PluginKind::Keystore, bytes, Grants::dir(&keys, "/data"));
    // First load compiles and fills the cache; later loads read the artifact.
    let loaded = engine.load(&spec).unwrap();
    let ks = rt.block_on(PluginKeystore::start(loaded.clone(), CONFIG, PoolOptions::default())).unwrap();
    assert_eq!(rt.block_on(ks.get("k1")).unwrap(), *value);

    let mut g = c.benchmark_group("keystore_get");
    g.bench_function("fs plugin (wasm)", |b| b.to_async(&rt).iter(|| ks.get("k1")));
    let path = keys.join("k1");
    g.bench_function("native std::fs::read", |b| b.iter(|| std::fs::read(&path).unwrap()));
    g.bench_function("native tokio::fs::read", |b| {
        b.to_async(&rt).iter(|| async { tokio::fs::read(&path).await.unwrap() })
    });
    g.finish();

    let mut g = c.benchmark_group("plugin");
    g.bench_function("load from precompiled cache", |b| b.iter(|| engine.load(&spec).unwrap()));
    g.bench_function("start instance (instantiate + init)", |b| {
        b.to_async(&rt).iter(|| PluginKeystore::start(loaded.clone(), CONFIG, PoolOptions::default()))
    });
    g.finish();
    drop(ks);

    // One batch of 256 events (what a sink gets per call under load) through
    // the bundled audit-file plugin vs appending the same lines natively.
    let logs = tmp.0.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let lines: Vec<u8> = (0..256).flat_map(|i| sample_line(i).into_bytes().into_iter().chain([b'\n'])).collect();
    let batch = AuditBatch::new(&lines);
    let bytes = keyward_plugin_host::bundled::find("audit-file").expect("bundled audit-file plugin");
    let spec = PluginSpec::embedded("audit-file", PluginKind::AuditSink, bytes, Grants::dir(&logs, "/logs"));
    let loaded = engine.load(&spec).unwrap();
    let sink =
        rt.block_on(PluginAuditSink::start(loaded, r#"{"path":"/logs/audit.jsonl"}"#, PoolOptions::default())).unwrap();
    let native_path = logs.join("native.jsonl");
    let mut g = c.benchmark_group("audit_write_256_events");
    g.throughput(criterion::Throughput::Elements(batch.len() as u64));
    g.bench_function("audit-file plugin (wasm)", |b| b.to_async(&rt).iter(|| sink.write(batch)));
    g.bench_function("native append", |b| b.iter(|| append_natively(&native_path, batch)));
    g.finish();

    // What every audited request pays on its own path: writing its line.
    let mut g = c.benchmark_group("audit_event");
    g.bench_function("build one line", |b| b.iter(|| sample_line(7)));
    g.finish();
}

fn sample_line(i: usize) -> String {
    keyward_server::audit::line(&keyward_server::audit::Answered {
        received: std::time::SystemTime::now(),
        ip: Some("127.0.0.1"),
        path: &format!("/v1/key/encrypt/bench-{i}"),
        identity: Some("3f7c0a1b2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"),
        status: 200,
        duration: std::time::Duration::from_micros(42),
        answered: std::time::Instant::now(),
    })
}

/// What the plugin does, natively: open for append, one write of the batch.
fn append_natively(path: &std::path::Path, batch: AuditBatch<'_>) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(batch.lines()).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
