//! The `keyward` command line as a user drives it: `server --dev` in the
//! background, then every client command as a subprocess using exactly the
//! credentials the dev banner printed; `config import` on KES YAML fixtures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::harness::{free_port, TempDir};

mod habits;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// Every environment variable the client reads: cleared for each run so the
/// developer's own settings cannot leak into a test.
const CLIENT_ENV: &[&str] = &[
    "KEYWARD_SERVER",
    "KEYWARD_CLIENT_CERT",
    "KEYWARD_CLIENT_KEY",
    "KEYWARD_CACERT",
    "KES_SERVER",
    "KES_CLIENT_CERT",
    "KES_CLIENT_KEY",
    "KES_API_KEY",
    "KEYWARD_API_KEY",
    "MINIO_KES_SERVER",
    "MINIO_KES_CERT_FILE",
    "MINIO_KES_KEY_FILE",
    "MINIO_KES_API_KEY",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kes").join(name)
}

/// Runs `keyward ARGS` with only `env` set among the client variables.
fn kw_env(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_BACKTRACE", "1");
    for v in CLIENT_ENV {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn kw(args: &[&str]) -> Output {
    kw_env(args, &[], None)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The ciphertext of `key encrypt`'s output, which is JSON when piped.
#[track_caller]
fn ciphertext(o: &Output) -> String {
    let text = ok(o);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    v["ciphertext"].as_str().unwrap_or_else(|| panic!("no ciphertext in {text:?}")).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    stdout(o)
}

/// Asserts exit code `code` and exactly one stderr line, free of Rust debug
/// output; returns that line.
#[track_caller]
fn fails(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err:?}");
    assert!(lines[0].starts_with("keyward: "), "{err:?}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "Os {", "Error {", "kind:"] {
        assert!(!err.contains(bad), "debug output {bad:?} in {err:?}");
    }
    lines[0].to_string()
}

/// A `keyward server --dev` process and what its banner said.
struct DevServer {
    child: Child,
    _dir: TempDir,
    banner: String,
    url: String,
    cert: String,
    key: String,
    ca: String,
    identity: String,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = Path::new(&self.cert).parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn banner_value(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no '{label}' in banner:\n{banner}"))
        .trim()
        .to_string()
}

impl DevServer {
    fn start() -> DevServer {
        let dir = TempDir::new("cli");
        let port = free_port();
        let err = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
        let child = Command::new(BIN)
            .args(["server", "--dev", "--addr", &format!("127.0.0.1:{port}")])
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let banner = loop {
            let text = std::fs::read_to_string(dir.0.join("stderr.log")).unwrap_or_default();
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up && text.contains("keyward status") {
                break text;
            }
            assert!(Instant::now() < deadline, "dev server did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(25));
        };
        DevServer {
            url: banner_value(&banner, "address:"),
            cert: banner_value(&banner, "admin cert:"),
            key: banner_value(&banner, "admin key:"),
            ca: banner_value(&banner, "server CA:"),
            identity: banner_value(&banner, "admin identity:"),
            banner,
            child,
            _dir: dir,
        }
    }

    /// The connection flags built from the banner.
    fn flags(&self) -> Vec<&str> {
        vec!["--server", &self.url, "--cert", &self.cert, "--key", &self.key, "--cacert", &self.ca]
    }

    /// Runs a client command with the banner's credentials as flags.
    fn run(&self, args: &[&str]) -> Output {
        self.run_in(args, None)
    }

    fn run_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(self.flags());
        kw_env(&all, &[], stdin)
    }
}

#[test]
fn dev_banner_credentials_drive_every_key_command() {
    let s = DevServer::start();
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.banner);
    assert_eq!(s.identity.len(), 64);

    // create, duplicate, ls (text and JSON, prefix)
    assert_eq!(ok(&s.run(&["key", "create", "app-1", "app-2", "other"])), "");
    assert_eq!(fails(&s.run(&["key", "create", "app-1"]), 1), "keyward: key already exists");
    let names: Vec<String> = ok(&s.run(&["key", "ls"])).lines().map(str::to_string).collect();
    assert_eq!(names, ["app-1", "app-2", "other"]);
    assert_eq!(ok(&s.run(&["key", "ls", "app-"])), "app-1\napp-2\n");
    let json: Value = serde_json::from_str(&ok(&s.run(&["key", "ls", "--json", "oth"]))).unwrap();
    assert_eq!(json, serde_json::json!(["other"]));

    // describe
    let text = ok(&s.run(&["key", "describe", "app-1"]));
    assert!(text.contains("Name:") && text.contains("app-1") && text.contains("Algorithm:"), "{text}");
    assert!(text.contains(&s.identity), "created by the admin: {text}");
    let json: Value = serde_json::from_str(&ok(&s.run(&["key", "describe", "--json", "app-1"]))).unwrap();
    assert_eq!(json["name"], "app-1");
    assert_eq!(fails(&s.run(&["key", "describe", "no-such-key"]), 1), "keyward: key does not exist");

    // encrypt / decrypt, with and without context, from arguments and stdin
    let ct = ciphertext(&s.run(&["key", "encrypt", "app-1", "hello world", "--context", "ctx"]));
    assert!(B64.decode(&ct).is_ok(), "{ct}");
    assert_eq!(ok(&s.run(&["key", "decrypt", "app-1", &ct, "--context", "ctx"])), "hello world");
    assert_eq!(
        fails(&s.run(&["key", "decrypt", "app-1", &ct]), 1),
        "keyward: decryption failed: ciphertext is not authentic"
    );
    let ct2 = ciphertext(&s.run_in(&["key", "encrypt", "app-2"], Some(b"from stdin\n")));
    assert_eq!(ok(&s.run_in(&["key", "decrypt", "app-2"], Some(ct2.as_bytes()))), "from stdin\n");
    let json: Value = serde_json::from_str(&ok(&s.run(&["key", "decrypt", "--json", "app-2", &ct2]))).unwrap();
    assert_eq!(B64.decode(json["plaintext"].as_str().unwrap()).unwrap(), b"from stdin\n");
    assert_eq!(
        fails(&s.run(&["key", "decrypt", "app-2", "not base64!"]), 2),
        "keyward: the ciphertext is not valid base64"
    );

    // dek: the encrypted copy decrypts to the plaintext copy
    let dek: Value = serde_json::from_str(&ok(&s.run(&["key", "dek", "--json", "app-1"]))).unwrap();
    let plain = B64.decode(dek["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(plain.len(), 32);
    let back: Value =
        serde_json::from_str(&ok(&s.run(&["key", "decrypt", "--json", "app-1", dek["ciphertext"].as_str().unwrap()])))
            .unwrap();
    assert_eq!(B64.decode(back["plaintext"].as_str().unwrap()).unwrap(), plain);
    let text = ok(&s.run(&["key", "dek", "app-1"]));
    assert!(text.starts_with("{\"plaintext\":") && text.contains("\"ciphertext\":"), "JSON when piped: {text}");

    // hmac: hex, deterministic, JSON is base64 of the same bytes
    let mac = ok(&s.run(&["key", "hmac", "app-1", "message"])).trim().to_string();
    assert_eq!(mac.len(), 64);
    assert_eq!(ok(&s.run(&["key", "hmac", "app-1", "message"])).trim(), mac);
    let json: Value = serde_json::from_str(&ok(&s.run(&["key", "hmac", "--json", "app-1", "message"]))).unwrap();
    assert_eq!(hex::encode(B64.decode(json["hmac"].as_str().unwrap()).unwrap()), mac);

    // import: known key material, usable right away
    let material = B64.encode([7u8; 32]);
    assert_eq!(ok(&s.run(&["key", "import", "imported", &material])), "");
    let ct = ciphertext(&s.run(&["key", "encrypt", "imported", "x"]));
    assert_eq!(ok(&s.run(&["key", "decrypt", "imported", &ct])), "x");
    assert_eq!(fails(&s.run(&["key", "import", "bad", "%%%"]), 2), "keyward: the key is not valid base64");
    let short = B64.encode([1u8; 16]);
    let line = fails(&s.run(&["key", "import", "short", &short]), 1);
    assert!(line.contains("invalid key size"), "{line}");

    // rm
    assert_eq!(ok(&s.run(&["key", "rm", "app-2", "imported"])), "");
    assert_eq!(ok(&s.run(&["key", "ls"])), "app-1\nother\n");
    assert_eq!(fails(&s.run(&["key", "rm", "app-2"]), 1), "keyward: key does not exist");
}

#[test]
fn dev_banner_credentials_drive_policy_identity_status_metrics_and_logs() {
    let s = DevServer::start();

    // policy: the dev server has none
    assert_eq!(ok(&s.run(&["policy", "ls"])), "");
    assert_eq!(ok(&s.run(&["policy", "ls", "--json"])).trim(), "[]");
    assert_eq!(fails(&s.run(&["policy", "show", "nope"]), 1), "keyward: policy does not exist");

    // identity self / ls / describe
    let text = ok(&s.run(&["identity", "self"]));
    assert!(text.contains(&s.identity) && text.contains("Admin:") && text.contains("yes"), "{text}");
    let json: Value = serde_json::from_str(&ok(&s.run(&["identity", "self", "--json"]))).unwrap();
    assert_eq!((json["identity"].as_str(), json["admin"].as_bool()), (Some(s.identity.as_str()), Some(true)));
    assert!(ok(&s.run(&["identity", "ls"])).lines().any(|l| l == s.identity));
    let text = ok(&s.run(&["identity", "describe", &s.identity]));
    assert!(text.contains("Admin:") && text.contains("yes"), "{text}");
    assert_eq!(fails(&s.run(&["identity", "describe", &"ab".repeat(32)]), 1), "keyward: identity does not exist");

    // status / metrics
    let text = ok(&s.run(&["status"]));
    for label in ["Server:", "Version:", "Uptime:", "Keystore:"] {
        assert!(text.contains(label), "{label} missing in {text}");
    }
    let json: Value = serde_json::from_str(&ok(&s.run(&["status", "--json"]))).unwrap();
    assert!(json["version"].is_string(), "{json}");
    assert!(ok(&s.run(&["metrics"])).contains("kes_http_request_success"));
    let json: Value = serde_json::from_str(&ok(&s.run(&["metrics", "--json"]))).unwrap();
    assert!(json["kes_http_request_success"].is_u64(), "{json}");

    // log audit follows the stream: a request made afterwards shows up.
    let mut args = vec!["log", "audit", "--json"];
    args.extend(s.flags());
    let mut follower = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        // Repeated: the follower may subscribe after the first request.
        let _ = s.run(&["key", "describe", "--json", "app-followed"]);
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["request"]["path"] == "/v1/key/describe/app-followed" {
                assert_eq!(v["response"]["code"], 404);
                seen = true;
                break;
            }
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen, "the audit follower never printed the request");

    // log error starts following (and keeps running) without complaint.
    let mut args = vec!["log", "error"];
    args.extend(s.flags());
    let mut follower = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let still_running = follower.try_wait().unwrap().is_none();
    let _ = follower.kill();
    let out = follower.wait_with_output().unwrap();
    assert!(still_running, "log error exited: {}", String::from_utf8_lossy(&out.stderr));
}

/// Server log lines written to a file (not a terminal) carry no ANSI colour
/// escapes, and the dev directory's name is not guessable from the pid.
#[test]
fn dev_server_logs_are_plain_text_and_its_directory_name_is_random() {
    let s = DevServer::start();
    let log = s._dir.0.join("stderr.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening") {
            break text;
        }
        assert!(Instant::now() < deadline, "no 'listening' log line:\n{text}");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(!text.contains('\x1b'), "colour escapes in a log file: {text:?}");
    let dir = Path::new(&s.key).parent().unwrap();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(name, format!("keyward-dev-{}", s.child.id()), "{}", dir.display());
    let suffix = name.strip_prefix("keyward-dev-").unwrap_or_else(|| panic!("{name}"));
    assert!(suffix.len() >= 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
}

#[test]
fn banner_examples_work_exactly_as_printed() {
    let s = DevServer::start();
    let export = s
        .banner
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("export "))
        .unwrap_or_else(|| panic!("no export line:\n{}", s.banner));
    let examples: Vec<&str> = s
        .banner
        .lines()
        .skip_while(|l| !l.starts_with("Try:"))
        .map(str::trim)
        .filter(|l| l.starts_with("keyward "))
        .collect();
    assert!(examples.len() >= 2, "no keyward examples in:\n{}", s.banner);
    // Run them through a shell with the binary first on PATH: as a user would paste them.
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -e\n{export}\n{}\n", examples.join("\n"));
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&script).env("PATH", path);
    for v in CLIENT_ENV {
        cmd.env_remove(v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "script:\n{script}\nstdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Keystore:"), "{}", stdout(&out));

    // The KES variable names work too (no CA variable in KES: -k).
    let env =
        [("KES_SERVER", s.url.as_str()), ("KES_CLIENT_CERT", s.cert.as_str()), ("KES_CLIENT_KEY", s.key.as_str())];
    ok(&kw_env(&["key", "ls", "-k"], &env, None));
    // …and KEYWARD_* take precedence over them.
    let env = [
        ("KES_SERVER", "https://127.0.0.1:1"),
        ("KEYWARD_SERVER", s.url.as_str()),
        ("KES_CLIENT_CERT", s.cert.as_str()),
        ("KES_CLIENT_KEY", s.key.as_str()),
        ("KEYWARD_CACERT", s.ca.as_str()),
    ];
    ok(&kw_env(&["status"], &env, None));

    // The curl example, when curl is installed.
    if let Some(curl) = s.banner.lines().map(str::trim).find(|l| l.starts_with("curl ")) {
        if Command::new("curl").arg("--version").output().is_ok() {
            let out =
                Command::new("sh").arg("-c").arg(format!("{curl} --silent --show-error --fail")).output().unwrap();
            assert!(out.status.success(), "{curl}: {}", stderr(&out));
        }
    }
}

#[test]
fn bad_usage_prints_one_clear_line() {
    let s = DevServer::start();
    let dir = TempDir::new("cli-bad");
    let other_key = dir.0.join("other.key");
    let other_crt = dir.0.join("other.crt");
    let (ok_, oc) = (other_key.to_str().unwrap(), other_crt.to_str().unwrap());
    ok(&kw(&["identity", "new", "--key", ok_, "--cert", oc, "other"]));

    // missing credentials: usage
    let line = fails(&kw(&["key", "ls", "--server", &s.url]), 2);
    assert!(line.contains("no client certificate"), "{line}");
    let line = fails(&kw(&["key", "ls", "--server", &s.url, "--cert", &s.cert]), 2);
    assert!(line.contains("no private key"), "{line}");
    // unreadable credential files
    let line = fails(&kw(&["key", "ls", "--cert", "/nonexistent/c.crt", "--key", &s.key]), 1);
    assert!(line.contains("/nonexistent/c.crt"), "{line}");
    // a key that does not belong to the certificate
    let line = fails(&kw(&["status", "--server", &s.url, "--cert", &s.cert, "--key", ok_, "--cacert", &s.ca]), 1);
    assert!(line.contains("does not belong"), "{line}");

    // unreachable server
    let dead = format!("https://127.0.0.1:{}", free_port());
    let line = fails(&kw(&["status", "--server", &dead, "--cert", &s.cert, "--key", &s.key, "--cacert", &s.ca]), 1);
    assert!(line.contains(&dead) && line.contains("connection refused"), "{line}");

    // wrong CA, and no CA at all (system roots do not know the dev server)
    let line = fails(&kw(&["status", "--server", &s.url, "--cert", &s.cert, "--key", &s.key, "--cacert", oc]), 1);
    assert!(line.contains("not trusted"), "{line}");
    let line = fails(&kw(&["status", "--server", &s.url, "--cert", &s.cert, "--key", &s.key]), 1);
    assert!(line.contains("not trusted") && line.contains("--cacert"), "{line}");
    // …which --insecure skips
    ok(&kw(&["status", "--server", &s.url, "--cert", &s.cert, "--key", &s.key, "--insecure"]));

    // plain http and clap usage errors
    let http = s.url.replace("https://", "http://");
    fails(&kw(&["status", "--server", &http, "--cert", &s.cert, "--key", &s.key]), 2);
    assert_eq!(kw(&["key", "frobnicate"]).status.code(), Some(2));
    assert_eq!(kw(&["key", "create"]).status.code(), Some(2));

    // an identity without a policy: the server says no
    let args = ["key", "ls", "--cert", oc, "--key", ok_, "--server", &s.url, "--cacert", &s.ca];
    assert_eq!(fails(&kw(&args), 1), "keyward: not authorized: insufficient permissions");
    let self_args = ["identity", "self", "--json", "--cert", oc, "--key", ok_, "--server", &s.url, "--cacert", &s.ca];
    let json: Value = serde_json::from_str(&ok(&kw(&self_args))).unwrap();
    assert_eq!(json["admin"], false);
    assert_eq!(json["identity"].as_str().unwrap(), ok(&kw(&["identity", "of", oc])).trim());
}

#[test]
fn identity_new_writes_private_files_and_refuses_to_overwrite() {
    let dir = TempDir::new("cli-ident");
    let key = dir.0.join("app.key");
    let crt = dir.0.join("app.crt");
    let (k, c) = (key.to_str().unwrap(), crt.to_str().unwrap());
    let id = ok(&kw(&["identity", "new", "--ip", "10.0.0.1", "--dns", "app.internal", "--key", k, "--cert", c, "app"]));
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(ok(&kw(&["identity", "of", c])).trim(), id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [&key, &crt] {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
    }
    let line = fails(&kw(&["identity", "new", "--key", k, "--cert", c, "app"]), 1);
    assert!(line.contains("exists") && line.contains("--force"), "{line}");
    assert_eq!(ok(&kw(&["identity", "of", c])).trim(), id, "a refused run must not touch the files");
    let id2 = ok(&kw(&["identity", "new", "--force", "--key", k, "--cert", c, "app"]));
    assert_ne!(id2.trim(), id);

    // Default file names in the working directory; JSON output.
    let out = Command::new(BIN).args(["identity", "new", "--json", "svc"]).current_dir(&dir.0).output().unwrap();
    let json: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!((json["key"].as_str(), json["cert"].as_str()), (Some("svc.key"), Some("svc.crt")));
    assert!(dir.0.join("svc.key").exists() && dir.0.join("svc.crt").exists());
    fails(&kw(&["identity", "new", "../escape"]), 2);
    let line = fails(&kw(&["identity", "of", k]), 1);
    assert!(line.contains("not a certificate"), "{line}");
}

#[test]
fn completions_and_help_examples() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(&kw(&["completions", shell]));
        assert!(out.contains("keyward") && out.contains("encrypt"), "{shell}");
    }
    assert_eq!(kw(&["completions", "tcsh"]).status.code(), Some(2));
    let commands: &[&[&str]] = &[
        &["server"],
        &["key", "create"],
        &["key", "import"],
        &["key", "describe"],
        &["key", "ls"],
        &["key", "rm"],
        &["key", "encrypt"],
        &["key", "decrypt"],
        &["key", "dek"],
        &["key", "hmac"],
        &["policy", "ls"],
        &["policy", "show"],
        &["identity", "of"],
        &["identity", "new"],
        &["identity", "ls"],
        &["identity", "self"],
        &["identity", "describe"],
        &["status"],
        &["metrics"],
        &["log", "audit"],
        &["log", "error"],
        &["config", "import"],
        &["completions"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let help = ok(&kw(&args));
        assert!(help.contains("Example: keyward "), "{c:?} --help has no example:\n{help}");
    }
}

// ---- config import ----------------------------------------------------------

/// Converts a fixture with the real binary; returns the TOML.
fn import(name: &str) -> String {
    ok(&kw(&["config", "import", fixture(name).to_str().unwrap()]))
}

fn load(toml: &str) -> keyward_server::config::Settings {
    let file =
        keyward_server::config::File::parse(Path::new("imported.toml"), toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    keyward_server::config::Settings::from_file(file).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

#[test]
fn config_import_converts_every_section() {
    use keyward_server::config::{Admin, ClientAuth};
    let s = load(&import("full.yml"));
    assert_eq!(s.address.to_string(), "0.0.0.0:7373");
    assert_eq!(s.admin, Admin::Identity("3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22".into()));
    assert_eq!(s.tls.key, Path::new("./server.key"));
    assert_eq!(s.tls.cert, Path::new("./server.cert"));
    assert_eq!(s.tls.password.as_ref().map(|p| p.expose()), Some("s3cret"));
    assert_eq!(s.tls.ca.as_deref(), Some(Path::new("./ca.pem")));
    assert_eq!(s.tls.auth, ClientAuth::Verify);
    assert_eq!(s.cache.any, Duration::from_secs(300));
    assert_eq!(s.cache.unused, Duration::from_secs(20));
    assert_eq!(s.cache.offline, Duration::from_secs(5400));
    assert!(s.log.error && !s.log.audit);
    assert!(s.api["/v1/ready"].skip_auth);
    assert_eq!(s.api["/v1/ready"].timeout, Some(Duration::from_secs(15)));
    assert!(!s.api["/v1/status"].skip_auth);
    assert_eq!(s.api["/v1/status"].timeout, Some(Duration::from_millis(1500)));
    let app = &s.policies["my-app"];
    assert_eq!(app.allow, ["/v1/key/create/my-app*", "/v1/key/generate/my-app*", "/v1/key/decrypt/my-app*"]);
    assert_eq!(app.deny, ["/v1/key/generate/my-app-internal*"]);
    assert_eq!(app.identities, ["aa21fd0bbd7bd6a1fb6ef5e30b3c1a3a6ab6b3fd0de3c9ebd83dcb85f0a4cc1a"]);
    assert_eq!(s.policies["monitoring"].identities.len(), 2);
    assert!(s.policies["monitoring"].deny.is_empty());
    assert_eq!(s.keys, ["minio-default-key", "backup-key"]);
    let ks = s.keystore.as_ref().unwrap();
    assert_eq!(ks.plugin, "fs");
    assert_eq!(ks.config_json, r#"{"path":"./keys"}"#);

    // Standard input gives the same config (only the header names the source).
    let yaml = std::fs::read(fixture("full.yml")).unwrap();
    let from_stdin = ok(&kw_env(&["config", "import", "-"], &[], Some(&yaml)));
    let body = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&from_stdin), body(&import("full.yml")));
}

#[test]
fn config_import_keeps_env_references_verbatim() {
    let toml = import("env.yml");
    for var in [
        "KES_ADDRESS",
        "KES_ADMIN_IDENTITY",
        "KES_TLS_KEY",
        "KES_TLS_PASSWORD",
        "KES_CACHE_ANY",
        "APP_IDENTITY",
        "KES_BOOT_KEY",
        "KES_KEYSTORE_DIR",
    ] {
        assert!(toml.contains(&format!("\"${{{var}}}\"")), "${{{var}}} not kept:\n{toml}");
    }
    // Still valid TOML for keyward as written…
    keyward_server::config::File::parse(Path::new("imported.toml"), &toml).unwrap();
    // …and a valid config once the variables have values.
    let id = "ab".repeat(32);
    let app = "cd".repeat(32);
    let expanded = toml
        .replace("${KES_ADDRESS}", "127.0.0.1:7373")
        .replace("${KES_ADMIN_IDENTITY}", &id)
        .replace("${KES_TLS_KEY}", "/etc/kes/server.key")
        .replace("${KES_TLS_PASSWORD}", "pw")
        .replace("${KES_CACHE_ANY}", "10m")
        .replace("${APP_IDENTITY}", &app)
        .replace("${KES_BOOT_KEY}", "boot")
        .replace("${KES_KEYSTORE_DIR}", "/var/lib/keyward");
    let s = load(&expanded);
    assert_eq!(s.admin, keyward_server::config::Admin::Identity(id));
    assert_eq!(s.policies["app"].identities, [app]);
    assert_eq!(s.keys, ["boot"]);
    assert_eq!(s.keystore.unwrap().config_json, r#"{"path":"/var/lib/keyward"}"#);
}

#[test]
fn config_import_handles_old_layouts_and_refuses_what_it_cannot_convert() {
    let s = load(&import("old.yml"));
    assert_eq!(s.keystore.unwrap().config_json, r#"{"path":"/var/lib/kes"}"#);

    let run = |name: &str| kw(&["config", "import", fixture(name).to_str().unwrap()]);
    // KES's Vault keystore becomes the bundled `vault` plugin.
    let vault = load(&import("vault.yml").replace("${VAULT_APPROLE_ID}", "r").replace("${VAULT_APPROLE_SECRET}", "s"));
    assert_eq!(vault.keystore.as_ref().unwrap().plugin, "vault");
    assert!(vault.keystore.unwrap().config_json.contains(r#""approle":{"id":"r","secret":"s"}"#));
    let line = fails(&run("aws.yml"), 1);
    assert!(line.contains("'aws.secretsmanager'"), "{line}");
    let line = fails(&run("proxy.yml"), 1);
    assert!(line.contains("tls.proxy"), "{line}");
    let line = fails(&run("typo.yml"), 1);
    assert!(line.contains("unsued") && line.contains("line 9"), "{line}");
    let line = fails(&kw(&["config", "import", "/nonexistent/kes.yml"]), 1);
    assert!(line.contains("/nonexistent/kes.yml"), "{line}");
    // Nothing reaches stdout when the conversion fails.
    assert!(run("aws.yml").stdout.is_empty());
}
