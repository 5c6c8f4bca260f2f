//! `keyward plugin push/add/pull` against a real OCI registry on 127.0.0.1
//! (Debian's `docker-registry`, the CNCF distribution registry), and interop
//! with an independent OCI client (`oras`, the ORAS Python client).

use std::path::Path;

use crate::harness::{toml_str, Setup, TempDir, TestServer};
use crate::plugin_cli::{keyward_with_env as keyward, sha256_of, wasm};
use crate::registry::{oras, oras_path, Registry, PASSWORD, USER};

/// A registry (with basic authentication when `auth`) and a `PYTHONPATH`
/// with `oras`; `None`: the test is skipped (a failure under CI).
fn registry_and_oras(test: &str, auth: bool) -> Option<(Registry, std::path::PathBuf)> {
    let registry = Registry::start(test, auth)?;
    let Some(oras_dir) = oras_path() else {
        crate::skip::skip(test, "`pip install oras==0.2.43` failed");
        return None;
    };
    Some((registry, oras_dir))
}

/// The digest-pinned reference `plugin push` printed.
fn pushed(out: &str) -> String {
    let line = out.lines().find_map(|l| l.strip_prefix("pushed ")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("@sha256:"), "{out}");
    line.to_string()
}

/// The registry's manifest of `reference` (a tag or digest in `repo`), as oras sees it.
fn manifest_of(oras_dir: &Path, cwd: &Path, registry: &Registry, reference: &str) -> serde_json::Value {
    let script = format!(
        "import json, oras.client\nc = oras.client.OrasClient(hostname='{host}', insecure=True)\nprint(json.dumps(c.get_manifest('{host}/{reference}')))",
        host = registry.host
    );
    serde_json::from_str(&oras(oras_dir, cwd, &script)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_component_is_added_by_digest_served_and_not_moved_by_its_tag() {
    let test = "a_pushed_component_is_added_by_digest_served_and_not_moved_by_its_tag";
    let Some((registry, oras_dir)) = registry_and_oras(test, false) else { return };
    let cache = TempDir::new("oci-cache");
    let dir = TempDir::new("oci");
    let env = [("KEYWARD_OCI_PLAIN_HTTP", registry.host.as_str())];
    let fs = wasm("keystore_fs.wasm");
    let tag = format!("oci://{}/keyward/store:1.0", registry.host);

    // Push: the artifact is the WebAssembly OCI layout.
    let (code, out, err) = keyward(&["plugin", "push", fs.to_str().unwrap(), &tag], &cache, &env);
    assert_eq!(code, 0, "{err}");
    let first = pushed(&out);
    assert!(out.contains("world:   keyward:plugin/keystore@0.1.0"), "{out}");
    let m = manifest_of(&oras_dir, &dir.0, &registry, "keyward/store:1.0");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{m}");
    assert_eq!(m["config"]["mediaType"], "application/vnd.wasm.config.v0+json", "{m}");
    assert_eq!(m["layers"].as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m["layers"][0]["mediaType"], "application/wasm", "{m}");
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(layer_digest, format!("sha256:{}", sha256_of(&fs)));

    // Add by tag: the manifest records the digest the tag named.
    let manifest = dir.0.join("plugins.toml");
    let m = manifest.to_str().unwrap();
    let keys = dir.0.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let grant = format!("{}:/data", keys.display());
    let components = dir.0.join("components");
    let add = ["plugin", "add", &tag, "--manifest", m, "--dir", components.to_str().unwrap(), "--grant-dir", &grant];
    let (code, out, err) = keyward(&add, &cache, &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added 'store'") && out.contains("world:   keyward:plugin/keystore@0.1.0"), "{out}");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains(&format!("source = \"{first}\"")), "{text}");
    assert!(text.contains(&format!("sha256 = \"{}\"", sha256_of(&fs))), "{text}");
    let file = components.join("store.wasm");
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&fs).unwrap());

    // The server loads the local file the manifest pins, and serves keys.
    let server = || {
        TestServer::start_with(Setup {
            keystore: Some(format!(
                "[plugins]\nmanifest = {}\n[keystore]\nplugin = \"store\"\n[keystore.config]\npath = \"/data\"\n",
                toml_str(m)
            )),
            ..Setup::default()
        })
    };
    let s = server();
    let c = s.admin_client();
    c.put_empty("/v1/key/create/from-a-registry").await.ok();
    let ct = c.encrypt("from-a-registry", b"pulled by digest", None).await;
    assert!(keys.join("from-a-registry").exists());
    drop(s);

    // The tag moves to other bytes: pull still fetches the pinned digest.
    let audit = wasm("audit_file.wasm");
    let (code, out, err) = keyward(&["plugin", "push", audit.to_str().unwrap(), &tag], &cache, &env);
    assert_eq!(code, 0, "{err}");
    assert_ne!(pushed(&out), first);
    std::fs::remove_file(&file).unwrap();
    let (code, out, err) = keyward(&["plugin", "pull", "--manifest", m], &cache, &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pulled 'store'"), "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&fs).unwrap());
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);
    let s = server();
    let c = s.admin_client();
    let plain = c.decrypt("from-a-registry", &ct, None).await;
    plain.ok();
    assert_eq!(crate::harness::unb64(plain.json()["plaintext"].as_str().unwrap()), b"pulled by digest");
    drop(s);

    // The registry serves other bytes for the pinned layer: refused, both
    // digests named, nothing written.
    let blob = registry.blob_file(&layer_digest);
    std::fs::write(&blob, std::fs::read(&audit).unwrap()).unwrap();
    std::fs::remove_file(&file).unwrap();
    let (code, _, err) = keyward(&["plugin", "pull", "--manifest", m], &cache, &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&layer_digest) && err.contains(&format!("sha256:{}", sha256_of(&audit))), "{err}");
    assert!(!file.exists(), "bytes that do not match their digest were written");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);
}

#[test]
fn what_is_not_a_component_artifact_is_refused_and_the_manifest_kept() {
    let test = "what_is_not_a_component_artifact_is_refused_and_the_manifest_kept";
    let Some((registry, oras_dir)) = registry_and_oras(test, false) else { return };
    let cache = TempDir::new("oci-refuse-cache");
    let dir = TempDir::new("oci-refuse");
    let env = [("KEYWARD_OCI_PLAIN_HTTP", registry.host.as_str())];
    let manifest = dir.0.join("plugins.toml");
    let original = "# plugins of this host\n";
    std::fs::write(&manifest, original).unwrap();
    let m = manifest.to_str().unwrap();

    // Pushed by oras: a text layer, a core module and garbage, the last two
    // with the WebAssembly media types.
    std::fs::write(dir.0.join("notes.txt"), "not wasm").unwrap();
    std::fs::write(dir.0.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.0.join("garbage.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    std::fs::write(dir.0.join("config.json"), "{}").unwrap();
    let push = |repo: &str, file: &str, layer_type: &str, config_type: &str| {
        oras(
            &oras_dir,
            &dir.0,
            &format!(
                "import oras.client\nc = oras.client.OrasClient(hostname='{host}', insecure=True)\n\
                 c.push(target='{host}/{repo}:1', files=['{file}:{layer_type}'], manifest_config='config.json:{config_type}')",
                host = registry.host
            ),
        );
    };
    let wasm_config = "application/vnd.wasm.config.v0+json";
    push("refuse/text", "notes.txt", "text/plain", wasm_config);
    push("refuse/image", "core.wasm", "application/wasm", "application/vnd.oci.image.config.v1+json");
    push("refuse/core", "core.wasm", "application/wasm", wasm_config);
    push("refuse/garbage", "garbage.wasm", "application/wasm", wasm_config);
    for (repo, expected) in [
        ("refuse/text", "text/plain"),
        ("refuse/image", "application/vnd.oci.image.config.v1+json"),
        ("refuse/core", "component"),
        ("refuse/garbage", ""),
    ] {
        let source = format!("oci://{}/{repo}:1", registry.host);
        let (code, out, err) = keyward(&["plugin", "add", &source, "--manifest", m], &cache, &env);
        assert_eq!(code, 1, "{repo} was accepted: {out}");
        assert!(err.contains(expected), "{repo}: {err}");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), original, "{repo}");
    }

    // No such tag, and a registry that is down: clear errors naming the reference.
    for source in [format!("oci://{}/refuse/none:1", registry.host), "oci://127.0.0.1:9/keyward/store:1".to_string()] {
        let plain = format!("{},127.0.0.1:9", registry.host);
        let (code, _, err) =
            keyward(&["plugin", "add", &source, "--manifest", m], &cache, &[("KEYWARD_OCI_PLAIN_HTTP", &plain)]);
        assert_eq!(code, 1);
        assert!(err.contains(&source), "{err}");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), original);
    }
}

#[test]
fn oras_and_keyward_exchange_components_through_an_authenticating_registry() {
    let test = "oras_and_keyward_exchange_components_through_an_authenticating_registry";
    let Some((registry, oras_dir)) = registry_and_oras(test, true) else { return };
    let cache = TempDir::new("oci-auth-cache");
    let dir = TempDir::new("oci-auth");
    let host = registry.host.as_str();
    let plain = [("KEYWARD_OCI_PLAIN_HTTP", host)];
    let with_password =
        [("KEYWARD_OCI_PLAIN_HTTP", host), ("KEYWARD_OCI_USERNAME", USER), ("KEYWARD_OCI_PASSWORD", PASSWORD)];
    let login = format!(
        "import oras.client\nc = oras.client.OrasClient(hostname='{host}', insecure=True, auth_backend='basic')\nc.auth.set_basic_auth('{USER}', '{PASSWORD}')\n"
    );

    // keyward pushes; oras pulls the same bytes.
    let fs = wasm("keystore_fs.wasm");
    let target = format!("oci://{host}/keyward/fs:2.0");
    let (code, _, err) = keyward(&["plugin", "push", fs.to_str().unwrap(), &target], &cache, &plain);
    assert_eq!(code, 1, "pushed without credentials");
    assert!(err.contains(&target), "{err}");
    let (code, out, err) = keyward(&["plugin", "push", fs.to_str().unwrap(), &target], &cache, &with_password);
    assert_eq!(code, 0, "{err}");
    let digest = pushed(&out).rsplit('@').next().unwrap().to_string();
    let pulled = dir.0.join("pulled");
    oras(&oras_dir, &dir.0, &format!("{login}c.pull(target='{host}/keyward/fs@{digest}', outdir='pulled')"));
    assert_eq!(std::fs::read(pulled.join("keystore_fs.wasm")).unwrap(), std::fs::read(&fs).unwrap());

    // oras pushes a component in the layout wkg writes; keyward adds it,
    // with the password from docker's config.json.
    let audit = wasm("audit_file.wasm");
    std::fs::copy(&audit, dir.0.join("audit.wasm")).unwrap();
    let config = serde_json::json!({
        "created": "2026-12-07T00:00:00Z", "author": null, "architecture": "wasm", "os": "wasip2",
        "layerDigests": [format!("sha256:{}", sha256_of(&audit))],
        "component": {"exports": [], "imports": [], "target": null}
    });
    std::fs::write(dir.0.join("config.json"), config.to_string()).unwrap();
    oras(
        &oras_dir,
        &dir.0,
        &format!(
            "{login}c.push(target='{host}/keyward/audit:1.0', files=['audit.wasm:application/wasm'], manifest_config='config.json:application/vnd.wasm.config.v0+json')"
        ),
    );
    let manifest = dir.0.join("plugins.toml");
    let m = manifest.to_str().unwrap();
    let source = format!("oci://{host}/keyward/audit:1.0");
    let (code, _, err) = keyward(&["plugin", "add", &source, "--manifest", m], &cache, &plain);
    assert_eq!(code, 1, "pulled without credentials");
    assert!(err.contains(&source), "{err}");
    let docker = cache.0.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64_of(&format!("{USER}:{PASSWORD}"));
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#)).unwrap();
    let docker_env = [("KEYWARD_OCI_PLAIN_HTTP", host), ("DOCKER_CONFIG", docker.to_str().unwrap())];
    let components = dir.0.join("components");
    let add = ["plugin", "add", &source, "--manifest", m, "--dir", components.to_str().unwrap()];
    let (code, out, err) = keyward(&add, &cache, &docker_env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("world:   keyward:plugin/audit-lines@0.1.0"), "{out}");
    assert_eq!(std::fs::read(components.join("audit.wasm")).unwrap(), std::fs::read(&audit).unwrap());
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn a_registry_with_a_private_ca_is_trusted_through_keyward_oci_ca_file() {
    let test = "a_registry_with_a_private_ca_is_trusted_through_keyward_oci_ca_file";
    let (cert, key) =
        keyward::dev::self_signed("localhost", vec!["localhost".into(), "127.0.0.1".into()], false).unwrap();
    let Some(registry) = Registry::start_with(test, false, Some((&cert, &key))) else { return };
    let cache = TempDir::new("oci-tls-cache");
    let dir = TempDir::new("oci-tls");
    let ca = dir.0.join("registry-ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let fs = wasm("keystore_fs.wasm");
    let target = format!("oci://{}/keyward/fs:tls", registry.host);
    let push = ["plugin", "push", fs.to_str().unwrap(), &target];

    // Not trusted without the CA: refused, naming the reference.
    let (code, _, err) = keyward(&push, &cache, &[]);
    assert_eq!(code, 1, "pushed over TLS to an untrusted registry");
    assert!(err.contains(&target), "{err}");

    let trusted = [("KEYWARD_OCI_CA_FILE", ca.to_str().unwrap())];
    let (code, out, err) = keyward(&push, &cache, &trusted);
    assert_eq!(code, 0, "{err}");
    pushed(&out);
    let manifest = dir.0.join("plugins.toml");
    let add = ["plugin", "add", &target, "--manifest", manifest.to_str().unwrap()];
    let (code, out, err) = keyward(&add, &cache, &trusted);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("world:   keyward:plugin/keystore@0.1.0"), "{out}");
    assert_eq!(std::fs::read(dir.0.join("fs.wasm")).unwrap(), std::fs::read(&fs).unwrap());
}
