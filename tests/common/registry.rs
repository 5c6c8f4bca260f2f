//! A real OCI registry on 127.0.0.1 for the `plugin add/push/pull` tests:
//! the CNCF distribution registry Debian packages as `docker-registry`, run
//! in the foreground on a temporary storage directory, optionally behind
//! htpasswd (basic) authentication. And `oras` (the ORAS Python client,
//! from PyPI), an independent OCI implementation to check interop with.
//!
//! When `docker-registry` is not installed, the package is downloaded with
//! `apt-get download` and unpacked under the target directory (no root, no
//! service started); `oras` is installed with pip into the target directory.

// Each crate uses only part of this.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user and password of an authenticating registry, and their bcrypt
/// htpasswd line (distribution accepts only bcrypt; the line is the one
/// oci-client's own tests use).
pub const USER: &str = "testuser";
pub const PASSWORD: &str = "testpassword";
const HTPASSWD: &str = "testuser:$2y$05$8/q2bfRcX74EuxGf0qOcSuhWDQJXrgWiy6Fi73/JM2tKC66qSrLve\n";

/// A running registry (stopped when dropped).
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Where it keeps blobs and manifests.
    pub storage: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oci-tools")
}

/// The `docker-registry` binary: installed, or unpacked from Debian's
/// package (once per test process).
pub fn registry_binary() -> Option<PathBuf> {
    static BINARY: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            let installed = PathBuf::from("/usr/bin/docker-registry");
            if installed.exists() {
                return Some(installed);
            }
            let dir = tools_dir().join("docker-registry");
            let unpacked = dir.join("usr/bin/docker-registry");
            if unpacked.exists() {
                return Some(unpacked);
            }
            std::fs::create_dir_all(&dir).ok()?;
            let download =
                Command::new("apt-get").args(["download", "docker-registry"]).current_dir(&dir).output().ok()?;
            if !download.status.success() {
                return None;
            }
            let deb = std::fs::read_dir(&dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))?;
            let unpack = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir).status().ok()?;
            (unpack.success() && unpacked.exists()).then_some(unpacked)
        })
        .clone()
}

impl Registry {
    /// Starts a registry, with basic authentication when `auth`; `None`
    /// (the test skipped, a failure under CI) when none can be had.
    pub fn start(test: &str, auth: bool) -> Option<Registry> {
        Self::start_with(test, auth, None)
    }

    /// Like [`Registry::start`], serving HTTPS with `tls` (certificate and
    /// key PEM) when given.
    pub fn start_with(test: &str, auth: bool, tls: Option<(&str, &str)>) -> Option<Registry> {
        let Some(binary) = registry_binary() else {
            crate::skip::skip(test, "no docker-registry, and `apt-get download docker-registry` failed");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("keyward-registry-").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: keyward-tests\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            let (cert_path, key_path) = (dir.path().join("registry.crt"), dir.path().join("registry.key"));
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert_path.display(),
                key_path.display()
            ));
        }
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, HTPASSWD).unwrap();
            config
                .push_str(&format!("auth:\n  htpasswd:\n    realm: keyward-tests\n    path: {}\n", htpasswd.display()));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let registry = Registry { child, host, storage, dir };
        registry.wait_ready();
        Some(registry)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.host).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen on {}: {}", self.host, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The file holding blob `digest` (`sha256:…`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

/// A `PYTHONPATH` where `import oras` works (PyPI's `oras` 0.2.43, the ORAS
/// Python client), installing it there if needed; `None` if it cannot be.
pub fn oras_path() -> Option<PathBuf> {
    static PATH: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tools_dir().join("oras");
        let works = |dir: &Path| {
            Command::new("python3")
                .args(["-c", "import oras.client"])
                .env("PYTHONPATH", dir)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if works(&dir) {
            return Some(dir);
        }
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&dir)
            .arg("oras==0.2.43")
            .status();
        works(&dir).then_some(dir)
    })
    .clone()
}

/// Runs `script` with `oras` importable, in `cwd`; its stdout, or a panic
/// naming what it printed.
pub fn oras(oras_path: &Path, cwd: &Path, script: &str) -> String {
    let out =
        Command::new("python3").args(["-c", script]).env("PYTHONPATH", oras_path).current_dir(cwd).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "oras script failed:\n{script}\n{stdout}\n{stderr}");
    stdout.into_owned()
}
