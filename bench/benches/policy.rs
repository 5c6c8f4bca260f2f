//! Policy matching with 1k patterns: prefix patterns (trailing `*`, the new
//! semantics) and globs (old semantics), for a path that matches the last
//! pattern and one that matches none (every pattern is tried).

use criterion::{criterion_group, criterion_main, Criterion};
use keyward_server::auth::pattern::Policy;

fn bench(c: &mut Criterion) {
    let n = 1000;
    let prefix: Vec<String> = (0..n).map(|i| format!("/v1/key/encrypt/app-{i:04}-*")).collect();
    let glob: Vec<String> = (0..n).map(|i| format!("/v1/key/*/app-{i:04}-?x*")).collect();
    let none: Vec<String> = Vec::new();
    let last = format!("/v1/key/encrypt/app-{:04}-1x-tenant", n - 1);
    let miss = "/v1/key/decrypt/other-1x-tenant";

    let mut g = c.benchmark_group("policy/1k");
    for (kind, patterns) in [("prefix", &prefix), ("glob", &glob)] {
        let policy = Policy::from_config(patterns, &none);
        assert!(policy.is_allowed(&last), "{kind}: last pattern must match");
        assert!(!policy.is_allowed(miss), "{kind}: must not match");
        g.bench_function(format!("{kind}/match-last"), |b| b.iter(|| policy.is_allowed(&last)));
        g.bench_function(format!("{kind}/no-match"), |b| b.iter(|| policy.is_allowed(miss)));
    }
    // 1k deny patterns in front of one allow (every request checks all denies).
    let policy = Policy::from_config(&["/v1/key/*".to_string()], &glob);
    assert!(policy.is_allowed(miss));
    g.bench_function("glob-deny/allowed", |b| b.iter(|| policy.is_allowed(miss)));
    g.finish();

    let one = Policy::from_config(&["/v1/key/*".to_string()], &none);
    c.bench_function("policy/1/prefix", |b| b.iter(|| one.is_allowed(miss)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
