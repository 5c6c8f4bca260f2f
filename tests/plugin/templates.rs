//! `keyward plugin new`: the project it writes builds, as its README says,
//! into a component that passes the keystore contract (pooled instances
//! included) and `keyward plugin add` + `check`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use keyward_plugin_host::{sha256_hex, Grants, PluginKeystore, PluginKind, PluginSource, PluginSpec, PoolOptions};

use crate::contract::keystore_contract;
use crate::{engine, guests, TempDir};

fn keyward(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Builds a generated Rust project with its README's command (the outer
/// build's settings scrubbed, a target directory that outlives the test so
/// reruns are quick); the component `krate` it makes.
fn build_rust_template(project: &Path, krate: &str) -> std::path::PathBuf {
    guests::ensure_target();
    let target = guests::native_target_dir().with_file_name("templates");
    let status = guests::guest_cargo()
        .current_dir(project)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "the generated project {} does not build", project.display());
    target.join(format!("wasm32-wasip2/release/{krate}.wasm"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_keystore_template_builds_into_a_plugin_that_passes_the_contract() {
    let parent = TempDir::new("template");
    let (ok, out) = keyward(
        &["plugin", "new", "--lang", "rust", "--kind", "keystore", "my-store", "--dir"]
            .into_iter()
            .chain([parent.path().to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(ok, "{out}");
    let project = parent.path().join("my-store");
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("cargo build --release --target wasm32-wasip2"), "{readme}");

    let wasm = build_rust_template(&project, "my_store");

    let keys = TempDir::new("template-keys");
    let spec = PluginSpec {
        name: "my-store".into(),
        kind: PluginKind::Keystore,
        source: PluginSource::File(wasm.clone()),
        sha256: Some(sha256_hex(&std::fs::read(&wasm).unwrap())),
        grants: Grants::dir(keys.path(), "/data"),
        limits: Default::default(),
    };
    let ks = PluginKeystore::load(&engine(), &spec, r#"{"path": "/data"}"#, PoolOptions { max_instances: 4 })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stats = ks.stats();
    keystore_contract(Arc::new(ks)).await;
    assert!(stats.instances_created.load(std::sync::atomic::Ordering::Relaxed) > 1, "one instance only");

    // `plugin test` says the same.
    let (ok, out) = keyward(&["plugin", "test", wasm.to_str().unwrap()]);
    assert!(ok && out.contains("passes the keystore contract"), "{out}");

    // And the manifest tools take it as it is.
    let manifest = parent.path().join("plugins.toml");
    let grant = format!("{}:/data", keys.path().display());
    let m = manifest.to_str().unwrap();
    let (ok, out) = keyward(&["plugin", "add", wasm.to_str().unwrap(), "--manifest", m, "--grant-dir", &grant]);
    assert!(ok && out.contains("world:   keyward:plugin/keystore@0.1.0"), "{out}");
    let (ok, out) = keyward(&["plugin", "check", m]);
    assert!(ok && out.contains("ok    my_store (keystore, "), "{out}");
    assert!(Path::new(&manifest).is_file());
}

/// Writes project `name` with `plugin new --lang LANG --kind KIND` under
/// `parent` and builds it with its own `build.sh` (Python and JavaScript);
/// the project's directory.
fn new_project_built_by_its_script(lang: &str, kind: &str, name: &str, parent: &Path) -> std::path::PathBuf {
    let dir = parent.to_str().unwrap();
    let (ok, out) = keyward(&["plugin", "new", "--lang", lang, "--kind", kind, name, "--dir", dir]);
    assert!(ok, "{out}");
    let project = parent.join(name);
    let built = Command::new(project.join("build.sh")).output().unwrap();
    assert!(built.status.success(), "{lang} {kind}: {}", String::from_utf8_lossy(&built.stderr));
    project
}

/// The Python template builds with its own `build.sh` (componentize-py, as
/// the Python example tests install it) into a component `plugin add` and
/// `check` accept.
#[test]
fn the_python_keystore_template_builds_into_a_plugin_that_plugin_check_accepts() {
    // Installs componentize-py if needed; `None`: skipped (a failure under CI).
    if crate::python::python_plugin().is_none() {
        return;
    }
    let parent = TempDir::new("py-template");
    let project = new_project_built_by_its_script("python", "keystore", "py-store", parent.path());
    let wasm = project.join("target/python-plugin/keystore_py.wasm");
    let keys = TempDir::new("py-template-keys");
    let manifest = parent.path().join("plugins.toml");
    let m = manifest.to_str().unwrap();
    let grant = format!("{}:/data", keys.path().display());
    let wasm_path = wasm.to_str().unwrap();
    let args = [
        "plugin",
        "add",
        wasm_path,
        "--name",
        "py_store",
        "--manifest",
        m,
        "--grant-dir",
        &grant,
        "--call-timeout",
        "5s",
    ];
    let (ok, out) = keyward(&args);
    assert!(ok && out.contains("world:   keyward:plugin/keystore@0.1.0"), "{out}");
    let (ok, out) = keyward(&["plugin", "check", m]);
    assert!(ok && out.contains("ok    py_store (keystore, "), "{out}");
}

/// The JavaScript template builds with its own `build.sh` (npm ci and
/// ComponentizeJS, as the JavaScript example tests have them) into a
/// component that passes `plugin test`.
#[test]
fn the_js_keystore_template_builds_into_a_plugin_that_passes_plugin_test() {
    // Checks node/npm and the example's tools; `None`: skipped (a failure under CI).
    if crate::js::js_plugin().is_none() {
        return;
    }
    let parent = TempDir::new("js-template");
    let project = new_project_built_by_its_script("js", "keystore", "js-store", parent.path());
    let wasm = project.join("target/js-plugin/keystore_js.wasm");
    let (ok, out) = keyward(&["plugin", "test", wasm.to_str().unwrap(), "--call-timeout", "5s"]);
    assert!(ok && out.contains("passes the keystore contract"), "{out}");
}

/// `wasm` is an audit sink that takes a batch, and `plugin add` and `check`
/// accept it as one, named `name`.
async fn takes_batches_and_is_accepted(wasm: &Path, name: &str, parent: &Path) {
    use keyward_core::audit_sink::{AuditBatch, AuditSink};
    use keyward_plugin_host::{Limits, PluginAuditSink};

    let spec = PluginSpec {
        name: name.into(),
        kind: PluginKind::AuditSink,
        source: PluginSource::File(wasm.to_path_buf()),
        sha256: Some(sha256_hex(&std::fs::read(wasm).unwrap())),
        grants: Grants::default(),
        limits: Limits { call_timeout: std::time::Duration::from_secs(5), ..Default::default() },
    };
    let sink = PluginAuditSink::load(&engine(), &spec, "{}", PoolOptions { max_instances: 1 })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lines = b"{\"time\":\"2026-12-07T00:00:00Z\"}\n{\"time\":\"2026-12-07T00:00:01Z\"}\n";
    sink.write(AuditBatch::new(lines)).await.unwrap_or_else(|e| panic!("{name}: {e}"));

    let manifest = parent.join("plugins.toml");
    let m = manifest.to_str().unwrap();
    let (ok, out) =
        keyward(&["plugin", "add", wasm.to_str().unwrap(), "--manifest", m, "--name", name, "--call-timeout", "5s"]);
    assert!(ok && out.contains("world:   keyward:plugin/audit-lines@0.1.0"), "{out}");
    let (ok, out) = keyward(&["plugin", "check", m]);
    assert!(ok && out.contains(&format!("ok    {name} (audit-sink, ")), "{out}");
}

/// The Rust audit-sink template builds into a sink that takes batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_audit_sink_template_builds_into_a_sink_that_takes_batches() {
    let parent = TempDir::new("sink-template");
    let dir = parent.path().to_str().unwrap();
    let (ok, out) = keyward(&["plugin", "new", "--kind", "audit-sink", "my-sink", "--dir", dir]);
    assert!(ok, "{out}");
    let wasm = build_rust_template(&parent.path().join("my-sink"), "my_sink");
    takes_batches_and_is_accepted(&wasm, "my_sink", parent.path()).await;
}

/// The Python and JavaScript audit-sink templates build, with the scripts
/// the keystore examples use, into sinks that take batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_js_audit_sink_templates_build_into_sinks_that_take_batches() {
    // Each installs its tools if needed; `None`: skipped (a failure under CI).
    if crate::python::python_plugin().is_none() || crate::js::js_plugin().is_none() {
        return;
    }
    let parent = TempDir::new("sink-templates");
    for (lang, built) in
        [("python", "target/python-plugin/audit_lines_py.wasm"), ("js", "target/js-plugin/audit_lines_js.wasm")]
    {
        let name = format!("{lang}-sink");
        let project = new_project_built_by_its_script(lang, "audit-sink", &name, parent.path());
        let wasm = project.join(built);
        takes_batches_and_is_accepted(&wasm, &name.replace('-', "_"), &project).await;
    }
}
