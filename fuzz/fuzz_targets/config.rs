//! The server's TOML config: `File::parse`, `File::expand_env`, then
//! `Settings::from_file`, and the `Authority` built from the settings.
//!
//! Checks, besides "never panics": what validates is what the server relies
//! on later: the admin and every policy identity are 64 lowercase hex digits,
//! no identity is in two policies or is the admin, boot key names are valid
//! and unique, and authorization of each policy's identities follows its
//! allow/deny patterns, while an identity the config does not name can do
//! nothing.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use keyward_core::names::valid_name_new;
use keyward_server::auth::pattern::Policy;
use keyward_server::auth::Authority;
use keyward_server::config::{Admin, File, Settings};
use keyward_server::state::RouteOverrides;
use libfuzzer_sys::fuzz_target;

fn hex_identity(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(mut file) = File::parse(Path::new("fuzz.toml"), &text) else {
        return;
    };
    if file.expand_env().is_err() {
        return;
    }
    let Ok(settings) = Settings::from_file(file) else {
        return;
    };

    let admin = match &settings.admin {
        Admin::Identity(id) => {
            assert!(hex_identity(id), "admin {id:?}");
            Some(id.as_str())
        }
        Admin::Disabled => None,
    };
    let mut seen = HashSet::new();
    for p in settings.policies.values() {
        for id in &p.identities {
            assert!(hex_identity(id), "policy identity {id:?}");
            assert_ne!(Some(id.as_str()), admin, "admin identity has a policy");
            assert!(seen.insert(id.clone()), "identity {id:?} in two policies");
        }
    }
    let mut keys = HashSet::new();
    for k in &settings.keys {
        assert!(valid_name_new(k), "boot key {k:?}");
        assert!(keys.insert(k), "boot key {k:?} twice");
    }

    let _ = RouteOverrides::new(&settings.api);
    let authority = Authority::from_settings(&settings, time::OffsetDateTime::UNIX_EPOCH);
    let mut paths: Vec<&str> = vec!["/v1/key/create/k", "/v1/status", "/version"];
    for p in settings.policies.values() {
        paths.extend(p.allow.iter().chain(&p.deny).map(String::as_str));
    }
    paths.truncate(64);
    for p in settings.policies.values() {
        let policy = Policy::from_config(&p.allow, &p.deny);
        for id in &p.identities {
            for path in &paths {
                assert_eq!(authority.authorize(id, path).is_ok(), policy.is_allowed(path), "{id} {path:?}");
            }
        }
    }
    let stranger = "f".repeat(63) + "e";
    if admin != Some(stranger.as_str()) && !seen.contains(&stranger) {
        for path in &paths {
            assert!(authority.authorize(&stranger, path).is_err(), "unknown identity allowed {path:?}");
        }
    }
    if let Some(admin) = admin {
        for path in &paths {
            assert!(authority.authorize(admin, path).is_ok());
        }
    }
});
