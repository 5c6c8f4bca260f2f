//! keyward over a replicated OpenBao (integrated Raft storage, three nodes)
//! and over one that is stopped and started again: what "several keyward
//! instances over one Vault" and "Vault went away" mean to a client.
//!
//! - Two keyward instances, each pointed at a different standby node, share
//!   keys; a create of one name racing on both succeeds exactly once.
//! - The active node is killed under create + encrypt traffic: no
//!   acknowledged create is lost, cached keys never stop answering, creates
//!   answer 503 only until a new leader is elected and succeed afterwards,
//!   without restarting keyward.
//! - A single-node OpenBao stopped under traffic: cached keys keep serving,
//!   uncached ones and creates answer 503 naming the outage, `/v1/status`
//!   says the keystore is unreachable; started again, everything recovers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{b64, unb64, Client, Setup, TestServer};
use crate::openbao_cluster::BaoCluster;

/// Cached keys stay cached through the whole test; the outage rule keeps
/// them while the store is unreachable.
const CACHE: &str = "[cache.expiry]\nany = \"10m\"\nunused = \"10m\"\noffline = \"1h\"\n";

fn server(cluster: &BaoCluster, node: usize, prefix: &str) -> TestServer {
    TestServer::start_with(Setup {
        keystore: Some(cluster.keystore(node, prefix)),
        extra_config: CACHE.to_string(),
        ..Setup::default()
    })
}

/// What one client saw: `(time since start, status, message)` per request.
type Log = Arc<Mutex<Vec<(Duration, u16, String)>>>;

/// Encrypts with `key` until `stop`, logging every answer.
fn encrypt_loop(c: Client, key: &'static str, started: Instant, stop: Arc<AtomicBool>, log: Log) {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let r = c.put(&format!("/v1/key/encrypt/{key}"), &json!({"plaintext": b64(b"x")})).await;
            let message = if r.status == 200 { String::new() } else { r.text() };
            log.lock().unwrap().push((started.elapsed(), r.status, message));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Creates `{tag}-0`, `{tag}-1`, ... until `stop`, logging every answer
/// with the name in the message of a success.
fn create_loop(c: Client, tag: &'static str, started: Instant, stop: Arc<AtomicBool>, log: Log) {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let name = format!("{tag}-{n}");
            n += 1;
            let r = c.put_empty(&format!("/v1/key/create/{name}")).await;
            let message = if r.status == 200 { name } else { r.text() };
            log.lock().unwrap().push((started.elapsed(), r.status, message));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keywards_over_a_raft_cluster_share_keys_and_survive_losing_the_leader() {
    let test = "two_keywards_over_a_raft_cluster_share_keys_and_survive_losing_the_leader";
    let Some(mut cluster) = BaoCluster::start(test, 3).await else { return };
    let leader = cluster.leader().await.expect("a leader");
    let standbys: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let a = server(&cluster, standbys[0], "keyward");
    let b = server(&cluster, standbys[1], "keyward");
    let (ca, cb) = (a.admin_client(), b.admin_client());

    // A key created on one instance is usable on the other.
    ca.put_empty("/v1/key/create/shared").await.ok();
    let ct = ca.encrypt("shared", b"across nodes", None).await;
    let plain = cb.decrypt("shared", &ct, None).await;
    assert_eq!(unb64(plain.ok().json()["plaintext"].as_str().unwrap()), b"across nodes");

    // Racing creates of one name: exactly one wins, and both instances then
    // hold the winner's key (each decrypts what the other encrypts).
    for i in 0..10 {
        let path = format!("/v1/key/create/race-{i}");
        let (ra, rb) = tokio::join!(ca.put_empty(&path), cb.put_empty(&path));
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(statuses, [200, 400], "race-{i}: {} / {}", ra.text(), rb.text());
        let loser = if ra.status == 400 { &ra } else { &rb };
        assert_eq!(loser.message(), "key already exists");
        let name = format!("race-{i}");
        let ct = ca.encrypt(&name, b"r", None).await;
        cb.decrypt(&name, &ct, None).await.ok();
        let ct = cb.encrypt(&name, b"r", None).await;
        ca.decrypt(&name, &ct, None).await.ok();
    }
    cb.encrypt("shared", b"warm b's cache", None).await;

    // Traffic on both instances, then the active node crashes.
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (encrypts, creates): (Log, Log) = Default::default();
    encrypt_loop(ca.clone(), "shared", started, stop.clone(), encrypts.clone());
    encrypt_loop(cb.clone(), "shared", started, stop.clone(), encrypts.clone());
    create_loop(ca.clone(), "live-a", started, stop.clone(), creates.clone());
    create_loop(cb.clone(), "live-b", started, stop.clone(), creates.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = started.elapsed();
    cluster.kill(leader);

    // Wait for a new leader, then for creates to go through again on both.
    let deadline = Instant::now() + Duration::from_secs(60);
    let new_leader = loop {
        if let Some(l) = cluster.leader().await {
            break l;
        }
        assert!(Instant::now() < deadline, "no new leader in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elected_at = started.elapsed();
    let recovered = |tag: &str| {
        let tag = format!("{tag}-");
        creates.lock().unwrap().iter().any(|(t, s, m)| *t > elected_at && *s == 200 && m.starts_with(&tag))
    };
    while !(recovered("live-a") && recovered("live-b")) {
        assert!(Instant::now() < deadline, "creates did not recover after the election: {:?}", creates.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let encrypts = encrypts.lock().unwrap().clone();
    let creates = creates.lock().unwrap().clone();
    let failed: Vec<_> = encrypts.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of {} encrypts with a cached key failed: {failed:?}", failed.len(), encrypts.len());
    let refused: Vec<_> = creates.iter().filter(|(_, s, _)| *s != 200).collect();
    for (t, status, message) in &refused {
        assert_eq!(*status, 503, "at {t:?}: {message}");
        assert!(message.contains("keystore unavailable"), "at {t:?}: {message}");
        assert!(*t >= killed_at, "a create failed before the leader was killed: {message}");
    }
    let last_refusal = refused.iter().map(|(t, _, _)| *t).max();
    eprintln!(
        "leader n{leader} killed at {killed_at:.1?}, n{new_leader} elected at {elected_at:.1?}; \
         {} encrypts, all answered; {} creates, {} refused with 503, the last at {last_refusal:.1?}",
        encrypts.len(),
        creates.len(),
        refused.len()
    );
    // Creates fail only while there is no leader: the surviving standby
    // keeps redirecting to the dead one until it learns of the election.
    if let Some(last) = last_refusal {
        assert!(last < elected_at + Duration::from_secs(5), "creates still refused 5 s after the election");
    }

    // No acknowledged create is lost: each is in OpenBao and served by the
    // instance that did not create it.
    let acknowledged: Vec<&String> = creates.iter().filter(|(_, s, _)| *s == 200).map(|(_, _, m)| m).collect();
    assert!(acknowledged.len() >= 20, "only {} creates went through", acknowledged.len());
    for name in &acknowledged {
        let (status, secret) =
            cluster.raw(new_leader, "GET", &format!("kv2/data/keyward/{name}"), Value::Null, true).await;
        assert_eq!(status, 200, "acknowledged create of {name} is not in OpenBao: {secret}");
        let other = if name.starts_with("live-a") { &cb } else { &ca };
        other.get(&format!("/v1/key/describe/{name}")).await.ok();
    }
    // And both instances create again, without a restart.
    ca.put_empty("/v1/key/create/after-a").await.ok();
    cb.put_empty("/v1/key/create/after-b").await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_openbao_leaves_cached_keys_serving_and_recovers_when_started() {
    let test = "a_stopped_openbao_leaves_cached_keys_serving_and_recovers_when_started";
    let Some(mut cluster) = BaoCluster::start(test, 1).await else { return };
    let s = server(&cluster, 0, "keyward");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/cached").await.ok();
    c.encrypt("cached", b"x", None).await;
    // A key this keyward has never read (another instance created it).
    c.put_empty("/v1/key/create/seed").await.ok();
    let seed = cluster.call(0, "GET", "kv2/data/keyward/seed", Value::Null).await;
    let value = seed["data"]["data"]["seed"].clone();
    cluster.call(0, "POST", "kv2/data/keyward/cold", json!({"data": {"cold": value}})).await;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let encrypts: Log = Default::default();
    encrypt_loop(c.clone(), "cached", started, stop.clone(), encrypts.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop(0);

    // While it is down: cached keys serve, the rest answer 503 with the reason.
    let r = c.put("/v1/key/encrypt/cold", &json!({"plaintext": b64(b"x")})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.message().contains("keystore unavailable"), "{}", r.message());
    let r = c.put_empty("/v1/key/create/while-down").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.message().contains("keystore unavailable"), "{}", r.message());
    let status = c.get("/v1/status").await;
    assert_eq!(status.ok().json()["keystore_unreachable"], true, "{}", status.text());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Started again (and unsealed, as an operator or auto-unseal would).
    cluster.restart(0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.put_empty("/v1/key/create/after").await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after the restart: {}", r.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.encrypt("cold", b"x", None).await;
    let status = c.get("/v1/status").await.json();
    assert!(!status["keystore_unreachable"].as_bool().unwrap_or(false), "{status}");
    let encrypts = encrypts.lock().unwrap().clone();
    let failed: Vec<_> = encrypts.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of {} encrypts with a cached key failed: {failed:?}", failed.len(), encrypts.len());
    assert!(encrypts.len() > 50, "only {} encrypts ran", encrypts.len());
}
