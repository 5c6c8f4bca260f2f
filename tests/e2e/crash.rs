//! Crash safety of `keystore-fs` through the server: `kill -9` in the middle
//! of a burst of key creates, then a restart on the same key directory.
//! Every create that was acknowledged must be there and open the ciphertext
//! made right after it; nothing half-written may be visible.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::crypto::StoredKey;

use crate::harness::{b64, fs_keystore, unb64, Ident, Setup, TempDir, TestServer};

const TASKS: usize = 8;
const PER_TASK: usize = 50;
/// Acknowledged creates before the kill: well inside the burst.
const KILL_AFTER: usize = 120;

/// What one client task saw: names it tried, and for each acknowledged
/// create the ciphertext made right after it (if the encrypt got through).
#[derive(Default)]
struct Seen {
    tried: Vec<String>,
    acked: Vec<(String, Option<Vec<u8>>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_burst_of_creates_loses_no_acknowledged_key() {
    let keys = TempDir::new("crash-keys");
    let setup = Setup { admin: Some(Ident::new("admin")), keystore: Some(fs_keystore(&keys.0)), ..Setup::default() };
    let mut s = TestServer::start_with(setup.clone());
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = s.admin_client();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            for i in 0..PER_TASK {
                let name = format!("burst-{t}-{i:02}");
                seen.tried.push(name.clone());
                let r = match c.try_send("PUT", &format!("/v1/key/create/{name}"), None, &[]).await {
                    Ok(r) => r,
                    Err(_) => break, // the server is gone
                };
                assert_eq!(r.status, 200, "create {name}: {}", r.text());
                acked.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::json!({ "plaintext": b64(name.as_bytes()) });
                let ct = match c
                    .try_send("PUT", &format!("/v1/key/encrypt/{name}"), Some(body.to_string().as_bytes()), &[])
                    .await
                {
                    Ok(r) if r.status == 200 => Some(unb64(r.json()["ciphertext"].as_str().unwrap())),
                    Ok(r) => panic!("encrypt {name}: {} {}", r.status, r.text()),
                    Err(_) => None,
                };
                let gone = ct.is_none();
                seen.acked.push((name, ct));
                if gone {
                    break;
                }
            }
            seen
        }));
    }

    // Kill the server in the middle of the burst.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(Instant::now() < deadline, "the burst stalled at {} creates", acked.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.kill9();
    let at_kill = acked.load(Ordering::SeqCst);

    let mut tried = HashSet::new();
    let mut acknowledged = Vec::new();
    for t in tasks {
        let seen = tokio::time::timeout(Duration::from_secs(30), t).await.expect("a client hung").unwrap();
        tried.extend(seen.tried);
        acknowledged.extend(seen.acked);
    }
    assert!(
        acknowledged.len() < TASKS * PER_TASK,
        "the kill came after the burst ({} of {} acknowledged)",
        acknowledged.len(),
        TASKS * PER_TASK
    );
    eprintln!("killed after {at_kill} acknowledged creates; {} in total", acknowledged.len());

    // Restart on the same directory.
    let s = TestServer::start_with(setup);
    let c = s.admin_client();
    let mut decrypted = 0;
    for (name, ct) in &acknowledged {
        c.get(&format!("/v1/key/describe/{name}")).await.ok();
        if let Some(ct) = ct {
            let r = c.decrypt(name, ct, None).await;
            r.ok();
            assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), name.as_bytes());
            decrypted += 1;
        }
    }
    assert!(decrypted >= KILL_AFTER - TASKS, "only {decrypted} ciphertexts to check");

    // The listing shows keys only: every acknowledged one, nothing temporary,
    // nothing that was never asked for.
    let listed = c.get_json("/v1/key/list/*").await;
    listed.ok();
    let listed: Vec<String> =
        listed.json()["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    for name in &listed {
        assert!(tried.contains(name), "listed {name:?} was never created");
    }
    for (name, _) in &acknowledged {
        assert!(listed_set.contains(name.as_str()), "acknowledged {name} is not listed");
    }
    // Old-generation listing too.
    let old = c.get("/v1/key/list/*").await;
    assert_eq!(old.lines().len(), listed.len());

    // On disk: every key file is complete, decodable and private; crash
    // leftovers, if any, are temporary files that no listing shows.
    let mut leftovers = 0;
    for entry in std::fs::read_dir(&keys.0).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with('.') {
            assert!(name.starts_with(".tmp-"), "unexpected file {name}");
            leftovers += 1;
            continue;
        }
        let value = std::fs::read(entry.path()).unwrap();
        assert!(!value.is_empty(), "{name} is empty");
        StoredKey::decode(&value).unwrap_or_else(|e| panic!("{name} is not a key: {e}"));
        assert!(listed_set.contains(name.as_str()), "{name} is on disk but not listed");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        }
    }
    eprintln!("{} keys on disk, {leftovers} temporary leftovers", listed.len());

    // And the restarted server carries on creating keys.
    c.put_empty("/v1/key/create/after-crash").await.ok();
}
