//! The servers `compare` (and `soak`) start: generated certificates, keyward
//! configs, processes that die with the benchmark, and the audit file.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A server process, killed on drop.
pub(crate) struct Server {
    pub name: String,
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // SIGTERM first (graceful), then SIGKILL if it lingers.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Generated certificates and the identities they stand for.
pub(crate) struct Files {
    pub dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub admin_id: String,
    pub client_id: String,
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A command for `program`. The child gets SIGTERM if the benchmark dies, so
/// no server outlives an interrupted run.
pub(crate) fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    c
}

/// On SIGINT/SIGTERM: remove the temp dir and exit (the servers and load
/// generators get SIGTERM from the kernel, see [`command`]).
pub(super) fn cleanup_on_signal(tmp: PathBuf, keep: bool) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        eprintln!("keyward-bench compare: interrupted");
        if !keep {
            // Give the servers a moment to exit before removing their files.
            std::thread::sleep(Duration::from_millis(300));
            let _ = std::fs::remove_dir_all(&tmp);
        }
        std::process::exit(130);
    });
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

pub(crate) fn make_files(dir: &Path) -> Result<Files> {
    use keyward::dev::self_signed;
    std::fs::create_dir_all(dir)?;
    let (sc, sk) = self_signed("localhost", vec!["localhost".into(), "127.0.0.1".into()], false)?;
    let (cc, ck) = self_signed("keyward-bench-client", vec![], true)?;
    let (ac, _) = self_signed("keyward-bench-admin", vec![], true)?;
    let f = Files {
        dir: dir.to_path_buf(),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        admin_id: keyward_server::tls::identity_of_cert(ac.as_bytes()).ok_or_else(|| anyhow!("admin identity"))?,
        client_id: keyward_server::tls::identity_of_cert(cc.as_bytes()).ok_or_else(|| anyhow!("client identity"))?,
    };
    write(&f.server_cert, &sc)?;
    write(&f.server_key, &sk)?;
    write(&f.client_cert, &cc)?;
    write(&f.client_key, &ck)?;
    Ok(f)
}

/// A keyward config: a policy identity (not admin) allowed `/v1/key/*`, stdout
/// audit off, the `fs` keystore, optionally the `audit-file` sink and a long
/// cache expiry.
pub(super) fn keyward_config(f: &Files, dir: &Path, port: u16, audit: bool, long_cache: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut text = base_config(f, port, &["/v1/key/*"], &dir.join("keys"));
    if long_cache {
        text.push_str("[cache.expiry]\nany = \"1h\"\nunused = \"1h\"\n");
    }
    if audit {
        text.push_str(&format!(
            "[[audit]]\nplugin = \"audit-file\"\n[audit.config]\npath = \"{}\"\n",
            audit_path(dir).display()
        ));
    }
    let path = dir.join("keyward.toml");
    write(&path, &text)?;
    Ok(path)
}

/// What every keyward the benchmarks start has: the address, the admin,
/// TLS, stdout audit off, the client's policy allowing `allow`, and the `fs`
/// keystore on `keys`.
pub(crate) fn base_config(f: &Files, port: u16, allow: &[&str], keys: &Path) -> String {
    let allow = allow.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "address = \"127.0.0.1:{port}\"\n\
         [admin]\nidentity = \"{admin}\"\n\
         [tls]\nkey = \"{key}\"\ncert = \"{cert}\"\n\
         [log]\nerror = \"on\"\naudit = \"off\"\n\
         [policy.bench]\nallow = [{allow}]\nidentities = [\"{client}\"]\n\
         [keystore]\nplugin = \"fs\"\n[keystore.config]\npath = \"{keys}\"\n",
        admin = f.admin_id,
        client = f.client_id,
        key = f.server_key.display(),
        cert = f.server_cert.display(),
        keys = keys.display(),
    )
}

pub(super) fn audit_path(dir: &Path) -> PathBuf {
    dir.join("audit").join("audit.jsonl")
}

pub(crate) fn spawn_logged(mut cmd: Command, dir: &Path) -> Result<Child> {
    std::fs::create_dir_all(dir)?;
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("stdout.log"))?)
        .stderr(File::create(dir.join("stderr.log"))?);
    cmd.spawn().context("spawn server")
}

/// Counts lines and bytes of the audit file, then empties it (the sink opens
/// it for appending on every batch, so this is safe while it runs).
pub(super) fn drain_audit(path: &Path) -> (u64, u64) {
    let Ok(bytes) = std::fs::read(path) else {
        return (0, 0);
    };
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = f.set_len(0);
    }
    (lines, bytes.len() as u64)
}

/// `--keyward`, or the `keyward` binary next to this executable (both are
/// built into target/dist by the same cargo command).
pub(crate) fn keyward_binary(given: Option<&Path>) -> Result<PathBuf> {
    let keyward = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().context("current_exe")?.with_file_name("keyward"),
    };
    if !keyward.is_file() {
        bail!(
            "{} not found: build it with `cargo build --profile dist -p keyward -p keyward-bench` or pass --keyward",
            keyward.display()
        );
    }
    Ok(keyward)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_file_is_counted_and_emptied() {
        let dir = std::env::temp_dir().join(format!("keyward-bench-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "{}\n{}\n{}\n").unwrap();
        assert_eq!(drain_audit(&path), (3, 9));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(drain_audit(&dir.join("missing")), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keyward_config_has_policy_identity_and_audit_plugin() {
        let dir = std::env::temp_dir().join(format!("keyward-bench-config-{}", std::process::id()));
        let files = make_files(&dir).unwrap();
        let path = keyward_config(&files, &dir.join("k"), 7000, true, true).unwrap();
        // keyward itself accepts it…
        let settings = keyward_server::config::Settings::load(&path).unwrap();
        assert_eq!(settings.audit.len(), 1);
        // …and it says what the benchmark needs.
        let text = std::fs::read_to_string(path).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["policy"]["bench"]["identities"][0].as_str(), Some(files.client_id.as_str()));
        assert_ne!(files.client_id, files.admin_id);
        assert_eq!(value["log"]["audit"].as_str(), Some("off"));
        assert_eq!(value["audit"][0]["plugin"].as_str(), Some("audit-file"));
        assert_eq!(value["keystore"]["plugin"].as_str(), Some("fs"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
