//! What every phase of `compare` works with: the binaries, the generated
//! files, and how servers are started, probed and loaded.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::ServerName;

use super::servers::{audit_path, command, drain_audit, free_port, keyward_config, spawn_logged, Files, Server};
use super::{AUDIT_SETTLE, TARGET_BASELINE, TARGET_KEYWARD, TARGET_NOAUDIT};
use crate::load::{self, Report, Route};

pub(super) struct Ctx {
    pub(super) exe: PathBuf,
    pub(super) keyward: PathBuf,
    pub(super) files: Files,
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) probe_config: Arc<rustls::ClientConfig>,
}

impl Ctx {
    pub(super) fn spawn_keyward(
        &self,
        name: &str,
        audit: bool,
        long_cache: bool,
        cache_dir: &Path,
    ) -> Result<(Server, Instant)> {
        let dir = self.files.dir.join(name);
        let port = free_port()?;
        let config = keyward_config(&self.files, &dir, port, audit, long_cache)?;
        let mut cmd = command(&self.keyward);
        cmd.arg("server").arg("--config").arg(&config).env("KEYWARD_CACHE_DIR", cache_dir);
        let started = Instant::now();
        let child = spawn_logged(cmd, &dir)?;
        Ok((Server { name: name.to_string(), child, port, dir }, started))
    }

    pub(super) fn spawn_baseline(&self) -> Result<(Server, Instant)> {
        let dir = self.files.dir.join(TARGET_BASELINE);
        let port = free_port()?;
        let mut cmd = command(&self.exe);
        cmd.arg("baseline")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cert")
            .arg(&self.files.server_cert)
            .arg("--key")
            .arg(&self.files.server_key);
        let started = Instant::now();
        let child = spawn_logged(cmd, &dir)?;
        Ok((Server { name: TARGET_BASELINE.into(), child, port, dir }, started))
    }

    /// Polls `/version` until it answers 2xx; the time since `since`.
    pub(super) fn wait_ready(&self, server: &mut Server, since: Instant) -> Result<Duration> {
        let limit = Duration::from_secs(120);
        let name = ServerName::try_from("localhost").expect("valid name");
        loop {
            let probe = load::get_status(self.probe_config.clone(), server.addr(), name.clone(), "/version");
            let ok = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), probe).await });
            if let Ok(Ok(status)) = ok {
                if status.is_success() {
                    return Ok(since.elapsed());
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("{} exited ({status}) before serving:\n{}", server.name, server.stderr());
            }
            if since.elapsed() > limit {
                bail!("{} did not answer /version within {limit:?}:\n{}", server.name, server.stderr());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Runs the load generator against one server.
    pub(super) fn load_one(&self, server: &Server, route: Route, extra: &[String], label: &str) -> Result<Report> {
        let mut reports = self.load(&[server], route, extra, &[label.to_string()])?;
        reports.pop().ok_or_else(|| anyhow!("load generator printed no report"))
    }

    /// Runs the load generator against `servers` (taking turns when more
    /// than one): one report per server, in order.
    pub(super) fn load(
        &self,
        servers: &[&Server],
        route: Route,
        extra: &[String],
        labels: &[String],
    ) -> Result<Vec<Report>> {
        let mut cmd = command(&self.exe);
        cmd.arg("load");
        for (server, label) in servers.iter().zip(labels) {
            cmd.arg("--url")
                .arg(server.url())
                .arg("--server-pid")
                .arg(server.pid().to_string())
                .arg("--label")
                .arg(label);
        }
        cmd.arg("--server-name")
            .arg("localhost")
            .arg("--cacert")
            .arg(&self.files.server_cert)
            .arg("--cert")
            .arg(&self.files.client_cert)
            .arg("--key")
            .arg(&self.files.client_key)
            .arg("--route")
            .arg(route.as_str())
            .arg("--json")
            .args(extra);
        let out = cmd.stdin(Stdio::null()).output().context("run load generator")?;
        let names = || servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
        if !out.status.success() {
            let logs: String = servers.iter().map(|s| format!("{} stderr:\n{}\n", s.name, s.stderr())).collect();
            bail!(
                "load generator against {} failed ({}):\n{}\n{logs}",
                names(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
            );
        }
        let reports: Vec<Report> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        if reports.len() != servers.len() {
            bail!("load generator printed {} reports for {} servers ({})", reports.len(), servers.len(), names());
        }
        Ok(reports)
    }
}

/// The servers one round of a workload measures. Started afresh for every
/// round: two identical keyward processes measured in turns differ by up to
/// ±3 % (where their memory and threads happen to land), so one process kept
/// for a whole run would bias all its rounds the same way.
pub(super) struct Round {
    baseline: Server,
    keyward: Server,
    noaudit: Option<Server>,
}

impl Round {
    /// Baseline, keyward, then keyward without audit if started: keyward
    /// second, so that `run_order` puts it next to each of the others.
    pub(super) fn servers(&self) -> impl Iterator<Item = &Server> {
        [Some(&self.baseline), Some(&self.keyward), self.noaudit.as_ref()].into_iter().flatten()
    }

    pub(super) fn stop(self) {
        self.baseline.stop();
        self.keyward.stop();
        if let Some(s) = self.noaudit {
            s.stop();
        }
    }
}

impl Ctx {
    /// Starts the servers of one round and waits until each answers; the
    /// audit lines of the readiness probes are discarded, so that a round's
    /// audit check counts only its own requests.
    pub(super) fn start_round(&self, cache: &Path, with_noaudit: bool) -> Result<Round> {
        let (mut baseline, t0) = self.spawn_baseline()?;
        self.wait_ready(&mut baseline, t0)?;
        let (mut keyward, t0) = self.spawn_keyward(TARGET_KEYWARD, true, false, cache)?;
        self.wait_ready(&mut keyward, t0)?;
        let mut noaudit = None;
        if with_noaudit {
            let (mut s, t0) = self.spawn_keyward(TARGET_NOAUDIT, false, false, cache)?;
            self.wait_ready(&mut s, t0)?;
            noaudit = Some(s);
        }
        // The probes' lines reach the file within the sink's linger.
        std::thread::sleep(AUDIT_SETTLE);
        drain_audit(&audit_path(&keyward.dir));
        Ok(Round { baseline, keyward, noaudit })
    }
}
