//! The keyward under test: its config per generation, reloads, readiness,
//! shutdown, and what its log and metrics say.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rustls::pki_types::ServerName;
use serde::Serialize;

use super::audit::audit_file;
use super::traffic::Counts;
use crate::compare::{self, Files, Server};
use crate::load;

/// How long a reload may take before it counts as failed.
pub(super) const RELOAD_LIMIT: Duration = Duration::from_secs(20);
/// How long the server may take to exit after SIGTERM (4 s of in-flight grace
/// plus 2 s of audit flush, with room) before it is killed.
pub(super) const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

/// How the server ended after SIGTERM.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Shutdown {
    pub(super) ms: f64,
    pub(super) exit_code: Option<i32>,
    /// Exited by itself with status 0 within the limit.
    pub(super) graceful: bool,
}

/// What the server's log says about reloads and problems.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct LogSummary {
    pub(super) reloaded: u64,
    pub(super) reload_failed: u64,
    pub(super) warnings: u64,
    pub(super) errors: u64,
    /// The first few WARN/ERROR lines.
    pub(super) first: Vec<String>,
}

pub(super) fn summarize_log(text: &str) -> LogSummary {
    let mut s = LogSummary::default();
    for line in text.lines() {
        s.reloaded += u64::from(line.contains("configuration reloaded"));
        s.reload_failed += u64::from(line.contains("reload failed"));
        let (warn, error) = (line.contains(" WARN "), line.contains(" ERROR "));
        s.warnings += u64::from(warn);
        s.errors += u64::from(error);
        if (warn || error) && s.first.len() < 5 {
            s.first.push(line.to_string());
        }
    }
    s
}

/// The keyward under test: its process, config and current generation.
pub(super) struct Keyward {
    pub(super) server: Server,
    pub(super) files: Files,
    pub(super) config: PathBuf,
    pub(super) audit_dir: PathBuf,
    pub(super) generation: u64,
}

/// The config of generation `generation`: `compare`'s (plus `/v1/metrics`
/// for the final check) with the audit-file sink writing that generation's
/// file, so that every reload really builds a different sink.
pub(super) fn config_text(files: &Files, port: u16, dir: &Path, generation: u64) -> String {
    let mut text = compare::base_config(files, port, &["/v1/key/*", "/v1/metrics"], &dir.join("keys"));
    text.push_str(&format!(
        "[[audit]]\nplugin = \"audit-file\"\n[audit.config]\npath = \"{}\"\n",
        audit_file(&dir.join("audit"), generation).display()
    ));
    text
}

impl Keyward {
    pub(super) fn config_text(&self) -> String {
        config_text(&self.files, self.server.port, &self.server.dir, self.generation)
    }

    pub(super) fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is our own child's.
        unsafe {
            libc::kill(self.server.pid() as libc::pid_t, signal);
        }
    }

    pub(super) fn stderr_tail(&self) -> String {
        let text = self.server.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Rewrites the config with the next audit file and sends SIGHUP; returns
    /// once the new sink has opened its file, i.e. the plugins were rebuilt.
    pub(super) async fn reload(&mut self) -> Result<Duration> {
        self.generation += 1;
        compare::write(&self.config, &self.config_text())?;
        let file = audit_file(&self.audit_dir, self.generation);
        let sent = Instant::now();
        self.signal(libc::SIGHUP);
        while !file.exists() {
            if sent.elapsed() > RELOAD_LIMIT {
                bail!("reload {}: no new audit sink within {RELOAD_LIMIT:?}", self.generation);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(sent.elapsed())
    }

    pub(super) fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.server.child.try_wait()?)
    }

    /// SIGTERM, then waits (at most [`SHUTDOWN_LIMIT`]) for the exit.
    pub(super) async fn shut_down(&mut self) -> Result<Shutdown> {
        let sent = Instant::now();
        self.signal(libc::SIGTERM);
        loop {
            if let Some(status) = self.exited()? {
                let ms = sent.elapsed().as_secs_f64() * 1e3;
                return Ok(Shutdown { ms, exit_code: status.code(), graceful: status.success() });
            }
            if sent.elapsed() > SHUTDOWN_LIMIT {
                let _ = self.server.child.kill();
                let _ = self.server.child.wait();
                return Ok(Shutdown { ms: sent.elapsed().as_secs_f64() * 1e3, exit_code: None, graceful: false });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Writes the first config and starts `keyward server --config` in `dir`.
pub(super) fn start(keyward: &Path, files: Files, dir: &Path) -> Result<Keyward> {
    let audit_dir = dir.join("audit");
    std::fs::create_dir_all(&audit_dir)?;
    let port = compare::free_port()?;
    let config = dir.join("keyward.toml");
    compare::write(&config, &config_text(&files, port, dir, 0))?;
    let mut cmd = compare::command(keyward);
    cmd.arg("server").arg("--config").arg(&config).env("KEYWARD_CACHE_DIR", dir.join("cache"));
    let child = compare::spawn_logged(cmd, dir)?;
    let server = Server { name: "keyward".into(), child, port, dir: dir.to_path_buf() };
    Ok(Keyward { server, files, config, audit_dir, generation: 0 })
}

/// Polls `/version` until it answers 200 (every answer is audited, so each
/// is counted).
pub(super) async fn wait_ready(k: &mut Keyward, config: Arc<rustls::ClientConfig>, counts: &mut Counts) -> Result<()> {
    let since = Instant::now();
    let name = ServerName::try_from("localhost").expect("valid name");
    loop {
        let probe = load::get_status(config.clone(), k.server.addr(), name.clone(), "/version");
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
            counts.add(status);
            if status.is_success() {
                return Ok(());
            }
        }
        if let Some(status) = k.exited()? {
            bail!("keyward exited ({status}) before serving:\n{}", k.stderr_tail());
        }
        if since.elapsed() > Duration::from_secs(120) {
            bail!("keyward did not answer /version within 120 s:\n{}", k.stderr_tail());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One value of a Prometheus text exposition.
pub(super) fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).map(|v| v as u64)
}
