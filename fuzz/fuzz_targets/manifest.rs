//! The plugin manifest: `Manifest::parse(text, path, base)`.
//!
//! Checks, besides "never panics": an accepted manifest only grants what the
//! loader can rely on: unique, well-formed names; absolute (resolved) plugin
//! and host paths; absolute guest paths without `..`, each granted once;
//! environment variable names without `=`/NUL; sha256 pins of 64 lowercase
//! hex digits; memory in 1 B..=4 GiB and call timeouts in (0, 10 min].
#![no_main]

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use keyward_plugin_host::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let manifest = match Manifest::parse(&text, Path::new("plugins.toml"), Path::new("/etc/keyward")) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut names = HashSet::new();
    for e in &manifest.plugins {
        assert!(!e.name.is_empty() && e.name.len() <= 64, "{:?}", e.name);
        assert!(e.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{:?}", e.name);
        assert!(names.insert(e.name.clone()), "duplicate {:?}", e.name);
        assert_eq!(manifest.get(&e.name), Some(e));
        assert!(e.path.is_absolute(), "{:?}", e.path);
        if let Some(pin) = &e.sha256 {
            assert!(pin.len() == 64 && pin.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{pin:?}");
        }
        let mut guests = HashSet::new();
        for d in &e.grants.dirs {
            assert!(d.host.is_absolute(), "{:?}", d.host);
            assert!(d.guest.starts_with('/'), "{:?}", d.guest);
            assert!(!d.guest.split('/').any(|c| c == ".."), "{:?}", d.guest);
            assert!(guests.insert(d.guest.clone()), "{:?} granted twice", d.guest);
        }
        for v in &e.grants.env {
            assert!(!v.is_empty() && !v.contains(['=', '\0']), "{v:?}");
        }
        for h in &e.grants.hosts {
            assert!(h.starts_with("http://") || h.starts_with("https://"), "{h:?}");
        }
        assert!(e.limits.memory > 0 && e.limits.memory <= 4 << 30, "{}", e.limits.memory);
        assert!(!e.limits.call_timeout.is_zero() && e.limits.call_timeout <= Duration::from_secs(600));
        let spec = e.spec();
        assert_eq!(spec.name, e.name);
    }
    let pinned = manifest.plugins.iter().all(|e| e.sha256.is_some());
    assert_eq!(manifest.require_pins().is_ok(), pinned);
});
