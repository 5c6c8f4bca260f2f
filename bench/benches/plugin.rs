//! The WebAssembly plugin host: a keystore `get` through the bundled `fs`
//! plugin against the same file read natively, loading a component from the
//! precompiled cache, and starting an instance (instantiate + `init`).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::crypto::{Algorithm, StoredKey};
use keyward::keys::store::Keystore;
use keyward::plugin::{EngineOptions, Grants, PluginEngine, PluginKeystore, PluginKind, PluginSpec, PoolOptions};

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
    let bytes = keyward::bundled::find("fs").expect("bundled fs plugin");
    let spec = PluginSpec::embedded("fs", PluginKind::Keystore, bytes, Grants::dir(&keys, "/data"));
    // First load compiles and fills the cache; later loads read the artifact.
    let loaded = engine.load(&spec).unwrap();
    let ks = rt.block_on(PluginKeystore::start(loaded.clone(), CONFIG, PoolOptions::default())).unwrap();
    assert_eq!(rt.block_on(ks.get("k1")).unwrap(), value);

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
