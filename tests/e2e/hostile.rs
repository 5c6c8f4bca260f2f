//! Hostile plugins through the real server: the `hostile` fixture as the
//! keystore (pinned in a manifest, `call_timeout = "300ms"`), switched at run
//! time through its mode file (`/data/mode`, see
//! `plugins/fixtures/hostile/src/lib.rs`). Each misbehaviour must become a
//! JSON 502/503 within about a second while the server keeps serving other
//! routes and other plugins; a bad pin or an unknown WIT version must stop
//! the server from starting, naming what is wrong.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{toml_str, unb64, Client, Setup, TempDir, TestServer};

fn fixture(name: &str) -> PathBuf {
    crate::component(&format!("{name}.wasm"))
}

fn sha256_of(path: &Path) -> String {
    keyward_plugin_host::sha256_hex(&std::fs::read(path).unwrap())
}

/// A manifest with one keystore entry `name` for the component at `wasm`,
/// pinned to `pin`, granted `<dir>/data` as `/data`.
fn write_manifest(dir: &Path, name: &str, wasm: &Path, pin: &str, limits: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let path = dir.join("plugins.toml");
    std::fs::write(
        &path,
        format!(
            "[[plugin]]\nname = \"{name}\"\nkind = \"keystore\"\npath = {}\nsha256 = \"{pin}\"\n[plugin.grants]\ndirs = [{{ host = {}, guest = \"/data\" }}]\n[plugin.limits]\n{limits}\n",
            toml_str(&wasm.display().to_string()),
            toml_str(&dir.join("data").display().to_string()),
        ),
    )
    .unwrap();
    path
}

/// The config section making plugin `name` of `manifest` the keystore, in
/// store mode with the mode file.
fn keystore_section(manifest: &Path, name: &str) -> String {
    format!(
        "[plugins]\nmanifest = {}\n[keystore]\nplugin = \"{name}\"\n[keystore.config]\nstore = \"/data/keys\"\nmode = \"/data/mode\"\n",
        toml_str(&manifest.display().to_string())
    )
}

/// A server whose keystore is the hostile fixture.
struct Hostile {
    server: TestServer,
    dir: TempDir,
}

impl Hostile {
    /// `limits`: the manifest's `[plugin.limits]` lines; `extra`: more
    /// server config.
    fn start(limits: &str, extra: &str) -> Hostile {
        let dir = TempDir::new("hostile");
        let wasm = fixture("hostile");
        let manifest = write_manifest(&dir.0, "hostile", &wasm, &sha256_of(&wasm), limits);
        let server = TestServer::start_with(Setup {
            extra_config: extra.to_string(),
            keystore: Some(keystore_section(&manifest, "hostile")),
            ..Setup::default()
        });
        Hostile { server, dir }
    }

    /// Switches the plugin's behaviour (takes effect on its next call).
    fn mode(&self, mode: &str) {
        // Written whole and renamed, so a call never reads half a mode.
        let tmp = self.dir.0.join("data").join(".mode.tmp");
        std::fs::write(&tmp, mode).unwrap();
        std::fs::rename(&tmp, self.dir.0.join("data").join("mode")).unwrap();
    }

    fn client(&self) -> Client {
        self.server.admin_client()
    }
}

/// Asserts a JSON error answer with `status` whose message contains `needle`.
#[track_caller]
fn assert_error(r: &crate::harness::Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    let m = r.message();
    assert!(m.contains(needle), "message {m:?} lacks {needle:?}");
}

/// Proves the server is fine: version, status, a cached key, a new key.
async fn still_serving(c: &Client, cached: &str, ct: &[u8]) {
    c.get("/version").await.ok();
    c.get("/v1/status").await.ok();
    c.get("/v1/metrics").await.ok();
    let r = c.decrypt(cached, ct, None).await;
    r.ok();
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"secret");
}

#[tokio::test]
async fn an_infinite_loop_is_a_503_within_a_second_and_everything_else_keeps_serving() {
    let logs = TempDir::new("hostile-audit");
    let audit = logs.0.join("audit.jsonl");
    let h = Hostile::start(
        "call_timeout = \"300ms\"",
        &format!(
            "[[audit]]\nplugin = \"audit-file\"\n[audit.config]\npath = {}\n",
            toml_str(&audit.display().to_string())
        ),
    );
    let c = h.client();
    c.put_empty("/v1/key/create/cached").await.ok();
    let ct = c.encrypt("cached", b"secret", None).await;
    c.put_empty("/v1/key/create/stored").await.ok();
    // "stored" is cached by its create; a restart-free way to need the store
    // is a name the server has not seen, so copy its file under a new name.
    let keys = h.dir.0.join("data").join("keys");
    std::fs::copy(keys.join("stored"), keys.join("uncached")).unwrap();

    h.mode("get=loop");
    let looping = {
        let c = c.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = c.get("/v1/key/describe/uncached").await;
            (r, started.elapsed())
        })
    };
    // While the plugin spins, every other route answers promptly.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let started = Instant::now();
    still_serving(&c, "cached", &ct).await;
    let others = started.elapsed();
    let (r, took) = looping.await.unwrap();
    assert_error(&r, 503, "timed out");
    assert!(r.content_type.starts_with("application/json"));
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1500), "503 after {took:?}");
    assert!(others < Duration::from_secs(1), "other routes took {others:?} while the plugin looped");

    // Several looping calls at once (more than the pool's instances) all end.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.get("/v1/key/describe/uncached").await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Back to normal: the same key, read through fresh instances.
    h.mode("ok");
    c.get("/v1/key/describe/uncached").await.ok();
    c.put_empty("/v1/key/create/after-loop").await.ok();
    still_serving(&c, "cached", &ct).await;

    // The other plugin (the audit sink) kept working, and saw the 503s.
    let mut codes = Vec::new();
    for _ in 0..250 {
        codes = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["response"]["code"].as_u64().unwrap())
            .collect();
        if codes.iter().filter(|c| **c == 503).count() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 7, "{codes:?}");
}

#[tokio::test]
async fn a_trap_is_a_502_and_shows_on_the_error_log() {
    let h = Hostile::start("call_timeout = \"300ms\"", "");
    let c = h.client();
    c.put_empty("/v1/key/create/cached").await.ok();
    let ct = c.encrypt("cached", b"secret", None).await;

    let mut errors = c.http.get(format!("{}/v1/log/error", c.base)).send().await.unwrap();
    assert_eq!(errors.status(), 200);
    h.mode("get=trap create=trap");
    let r = c.get("/v1/key/describe/never-cached").await;
    assert_error(&r, 502, "keystore error");
    let r = c.put_empty("/v1/key/create/on-a-trap").await;
    assert_error(&r, 502, "keystore error");
    still_serving(&c, "cached", &ct).await;

    // The 5xx answers are on the error stream, with their paths.
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(seen.contains("/v1/key/describe/never-cached") && seen.contains("/v1/key/create/on-a-trap")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, errors.chunk())
            .await
            .unwrap_or_else(|_| panic!("error log so far: {seen:?}"))
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // Each says what the plugin did (the client is told only "keystore error").
    for line in seen.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let message = v["message"].as_str().unwrap();
        assert!(message.contains("keystore error") && message.contains("failed during"), "{line}");
    }
    assert!(!r.text().contains("failed during"), "the plugin's account reached the client: {}", r.text());

    // A fresh instance serves the next call; nothing was half-created.
    h.mode("ok");
    c.get("/v1/key/describe/on-a-trap").await.expect(404, "key does not exist");
    c.put_empty("/v1/key/create/on-a-trap").await.ok();
    let metrics = c.get("/v1/metrics").await.text();
    assert!(
        metrics.lines().any(|l| l.starts_with("keyward_keystore_errors{") && l.contains("internal")),
        "keystore failures are counted:\n{metrics}"
    );
}

#[tokio::test]
async fn a_huge_allocation_is_contained() {
    let h = Hostile::start("call_timeout = \"2s\"\nmemory = \"64MiB\"", "");
    let c = h.client();
    c.put_empty("/v1/key/create/cached").await.ok();
    let ct = c.encrypt("cached", b"secret", None).await;
    h.mode("get=alloc");
    let started = Instant::now();
    let r = c.get("/v1/key/describe/big").await;
    assert!(r.status == 502 || r.status == 503, "status {} body {}", r.status, r.text());
    r.message();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    still_serving(&c, "cached", &ct).await;
    // The 1 GiB never reached the host process.
    let heap = c.get("/v1/status").await.json()["mem_heap_used"].as_i64().unwrap();
    assert!(heap < 512 << 20, "server memory grew to {heap} bytes");
    h.mode("ok");
    c.put_empty("/v1/key/create/after-alloc").await.ok();
    c.get("/v1/key/describe/after-alloc").await.ok();
}

#[tokio::test]
async fn status_reports_an_unavailable_keystore_as_unreachable() {
    let h = Hostile::start("call_timeout = \"300ms\"", "");
    let c = h.client();
    let st = c.get("/v1/status").await.json();
    assert!(st["keystore_latency"].as_u64().is_some(), "{st}");
    assert!(st.get("keystore_unreachable").is_none(), "{st}");

    h.mode("status=unavailable");
    let st = c.get("/v1/status").await;
    st.ok();
    let st = st.json();
    assert_eq!(st["keystore_unreachable"], true, "{st}");
    assert_eq!(st["keystore_unavailable"], true, "{st}");
    assert!(st.get("keystore_latency").is_none(), "{st}");
    assert!(c.get("/v1/ready").await.status >= 500);

    // A status call that hangs is unreachable too, and answered in time.
    h.mode("status=loop");
    let started = Instant::now();
    let st = c.get("/v1/status").await;
    st.ok();
    assert_eq!(st.json()["keystore_unreachable"], true);
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());

    h.mode("ok");
    let st = c.get("/v1/status").await.json();
    assert!(st.get("keystore_unreachable").is_none(), "{st}");
    c.get("/v1/ready").await.ok();
}

/// `cache.expiry.offline`: once the keystore is seen unreachable, cached keys
/// keep serving (even past an `any` expiry) while keys that are not cached
/// get 503.
#[tokio::test]
async fn offline_cache_keeps_cached_keys_serving_while_the_keystore_is_down() {
    let h =
        Hostile::start("call_timeout = \"300ms\"", "[cache.expiry]\nany = \"2s\"\nunused = \"0s\"\noffline = \"1m\"\n");
    let c = h.client();
    c.put_empty("/v1/key/create/cached").await.ok();
    let ct = c.encrypt("cached", b"secret", None).await;
    let keys = h.dir.0.join("data").join("keys");
    std::fs::copy(keys.join("cached"), keys.join("uncached")).unwrap();

    h.mode("unavailable");
    // An uncached key needs the store: 503, and the server learns it is offline.
    let r = c.encrypt_resp("uncached", b"x").await;
    assert_error(&r, 503, "unavailable");
    still_serving(&c, "cached", &ct).await;
    // Past the `any` expiry (2 s), the cached key is still there.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = c.decrypt("cached", &ct, None).await;
    r.ok();
    c.encrypt("cached", b"more", None).await;
    assert_error(&c.encrypt_resp("uncached", b"x").await, 503, "unavailable");

    // The keystore is back: the uncached key (a real key) works.
    h.mode("ok");
    c.encrypt("uncached", b"x", None).await;
}

/// `[api."/v1/key/create"] timeout`: a create stuck in the plugin is answered
/// 503 `request timeout exceeded` at the route's deadline, not the plugin's.
#[tokio::test]
async fn route_timeout_cuts_a_slow_create() {
    let h = Hostile::start("call_timeout = \"10s\"", "[api.\"/v1/key/create\"]\ntimeout = \"1s\"\n");
    let c = h.client();
    h.mode("create=sleep:5000");
    let started = Instant::now();
    let r = c.put_empty("/v1/key/create/slow").await;
    let took = started.elapsed();
    r.expect(503, "request timeout exceeded");
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(2500), "{took:?}");
    c.get("/version").await.ok();
    // Other routes keep their own timeouts; create works again once the
    // plugin is quick (on a fresh instance: the stuck one was dropped).
    h.mode("ok");
    let started = Instant::now();
    c.put_empty("/v1/key/create/quick").await.ok();
    assert!(started.elapsed() < Duration::from_secs(1));
    c.get("/v1/key/describe/quick").await.ok();
    let api = c.get("/v1/api").await.json();
    let create = api.as_array().unwrap().iter().find(|r| r["path"] == "/v1/key/create/").unwrap();
    assert_eq!(create["timeout"], 1);
}

/// Start-up failures: the process exits, and stderr names what is wrong.
fn refused(manifest: &Path, name: &str) -> String {
    match TestServer::try_start(Setup { keystore: Some(keystore_section(manifest, name)), ..Setup::default() }) {
        Ok(_) => panic!("the server started"),
        Err(message) => message,
    }
}

#[test]
fn a_wrong_sha256_pin_stops_the_server_naming_both_digests() {
    let dir = TempDir::new("bad-pin");
    let wasm = fixture("hostile");
    let real = sha256_of(&wasm);
    let pin = "0123456789abcdef".repeat(4);
    let manifest = write_manifest(&dir.0, "pinned-wrong", &wasm, &pin, "");
    let err = refused(&manifest, "pinned-wrong");
    assert!(err.contains("server exited"), "{err}");
    assert!(err.contains("pinned-wrong") && err.contains(&pin) && err.contains(&real), "{err}");
    assert!(err.contains("sha256"), "{err}");
}

#[test]
fn a_component_for_an_unknown_wit_version_stops_the_server_naming_both_versions() {
    let dir = TempDir::new("future-wit");
    let wasm = fixture("future_wit");
    let manifest = write_manifest(&dir.0, "from-the-future", &wasm, &sha256_of(&wasm), "");
    let err = refused(&manifest, "from-the-future");
    assert!(err.contains("server exited"), "{err}");
    assert!(
        err.contains("from-the-future") && err.contains("keyward:plugin@0.2.0") && err.contains("keyward:plugin@0.1.0"),
        "{err}"
    );
}

#[test]
fn an_audit_sink_configured_as_the_keystore_stops_the_server() {
    let dir = TempDir::new("wrong-world");
    let wasm = fixture("audit_file");
    let manifest = write_manifest(&dir.0, "not-a-keystore", &wasm, &sha256_of(&wasm), "");
    let err = refused(&manifest, "not-a-keystore");
    assert!(err.contains("not-a-keystore") && err.contains("keystore"), "{err}");
}

#[test]
fn a_plugin_whose_init_hangs_stops_the_server_in_time() {
    let dir = TempDir::new("init-hangs");
    let wasm = fixture("hostile");
    let manifest = write_manifest(&dir.0, "hangs", &wasm, &sha256_of(&wasm), "call_timeout = \"300ms\"");
    let started = Instant::now();
    let err = match TestServer::try_start(Setup {
        keystore: Some(format!(
            "[plugins]\nmanifest = {}\n[keystore]\nplugin = \"hangs\"\n[keystore.config]\nhang = true\n",
            toml_str(&manifest.display().to_string())
        )),
        ..Setup::default()
    }) {
        Ok(_) => panic!("the server started"),
        Err(m) => m,
    };
    assert!(err.contains("hangs") && err.contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
