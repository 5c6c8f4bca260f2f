//! OCI registries as a plugin source: `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`.
//!
//! Components travel as the CNCF TAG-Runtime WebAssembly OCI artifact, the
//! layout `wkg oci push` writes and Spin, wasmCloud and Envoy pull: an OCI
//! image manifest whose config has media type
//! `application/vnd.wasm.config.v0+json` and whose one layer, of media type
//! `application/wasm`, is the component itself. What a tag names may change;
//! what `keyward plugin add` writes into the manifest is the manifest digest
//! it resolved (`oci://…:tag@sha256:…`), so later pulls fetch those bytes or
//! fail, and the server, which never fetches, loads only files whose sha256
//! the manifest pins.
//!
//! Access, from the environment (as `wkg` does with its `WKG_OCI_*`):
//! `KEYWARD_OCI_TOKEN` (a bearer token) or `KEYWARD_OCI_USERNAME` and
//! `KEYWARD_OCI_PASSWORD`, else the `auths` of the docker `config.json`
//! (`$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`), else
//! anonymous. TLS trusts the public roots and the system's, plus the PEM
//! certificates of `KEYWARD_OCI_CA_FILE`; plain HTTP is used only for the
//! registries (`host:port`) listed in `KEYWARD_OCI_PLAIN_HTTP`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWrite;

use super::fetch::runtime;
use super::PluginCmdError;

/// The config media type of a WebAssembly OCI artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of its one layer, the component.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";

/// A component pulled from a registry.
#[derive(Debug)]
pub struct Pulled {
    pub bytes: Vec<u8>,
    /// The source pinned to the manifest digest it came from
    /// (`oci://registry/repository[:tag]@sha256:…`).
    pub pinned: String,
}

/// The reference of an `oci://` source.
fn reference(source: &str) -> Result<Reference, PluginCmdError> {
    let rest = source.strip_prefix("oci://").unwrap_or(source);
    let reference: Reference = rest.parse().map_err(|e| {
        PluginCmdError::Fetch(format!(
            "{source}: not an OCI reference (oci://REGISTRY/REPOSITORY[:TAG][@sha256:…]): {e}"
        ))
    })?;
    // Without a registry, the parser would quietly pick Docker Hub.
    let first = rest.split('/').next().unwrap_or("");
    if !rest.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost") {
        return Err(PluginCmdError::Fetch(format!(
            "{source}: name the registry (oci://registry.example:5000/plugins/name:tag); keyward has no default registry"
        )));
    }
    Ok(reference)
}

/// `oci://` and the whole reference.
fn shown(reference: &Reference) -> String {
    format!("oci://{}", reference.whole())
}

/// `reference` pinned to `digest`, keeping its tag for the reader.
fn pinned(reference: &Reference, digest: String) -> Reference {
    match reference.tag() {
        Some(tag) => Reference::with_tag_and_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            tag.to_string(),
            digest,
        ),
        None => reference.clone_with_digest(digest),
    }
}

fn failed(reference: &Reference, e: impl std::fmt::Display) -> PluginCmdError {
    PluginCmdError::Fetch(format!("{}: {e}", shown(reference)))
}

/// The registry client for `reference`, and the credentials to use there.
fn client(reference: &Reference) -> Result<(Client, RegistryAuth), PluginCmdError> {
    let plain_http: Vec<String> = std::env::var("KEYWARD_OCI_PLAIN_HTTP")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut extra_root_certificates = Vec::new();
    if let Some(path) = std::env::var_os("KEYWARD_OCI_CA_FILE").filter(|p| !p.is_empty()) {
        let data = std::fs::read(&path).map_err(|source| PluginCmdError::Read {
            path: format!("KEYWARD_OCI_CA_FILE {}", path.to_string_lossy()),
            source,
        })?;
        extra_root_certificates.push(Certificate { encoding: CertificateEncoding::Pem, data });
    }
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http),
        extra_root_certificates,
        // An image index (several platforms) is not a component artifact.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        user_agent: concat!("keyward/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    let client = Client::try_from(config).map_err(|e| failed(reference, e))?;
    Ok((client, credentials(reference.resolve_registry())?))
}

/// Credentials for `registry`: the environment first, then docker's
/// `config.json`, else anonymous.
fn credentials(registry: &str) -> Result<RegistryAuth, PluginCmdError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(token) = var("KEYWARD_OCI_TOKEN") {
        return Ok(RegistryAuth::Bearer(token));
    }
    match (var("KEYWARD_OCI_USERNAME"), var("KEYWARD_OCI_PASSWORD")) {
        (Some(user), Some(password)) => return Ok(RegistryAuth::Basic(user, password)),
        (Some(_), None) | (None, Some(_)) => {
            return Err(PluginCmdError::Fetch(
                "set both KEYWARD_OCI_USERNAME and KEYWARD_OCI_PASSWORD, or neither".to_string(),
            ))
        }
        (None, None) => {}
    }
    let Some(path) = docker_config_path() else { return Ok(RegistryAuth::Anonymous) };
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(RegistryAuth::Anonymous) };
    docker_auth(&text, registry).map_err(|m| PluginCmdError::Fetch(format!("{}: {m}", path.display())))
}

fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json")),
    }
}

/// The credentials `config.json` (docker's format) holds for `registry`.
/// Credential helpers (`credsStore`, `credHelpers`) are not run: a key
/// server's tools do not start other programs to find passwords.
fn docker_auth(text: &str, registry: &str) -> Result<RegistryAuth, String> {
    let config: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Some(auths) = config["auths"].as_object() else { return Ok(RegistryAuth::Anonymous) };
    // Keys are written as `host:port`, or as a URL (`https://host/v1/`).
    let key_of = |k: &str| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        k.split('/').next().unwrap_or(k).to_ascii_lowercase()
    };
    let wanted = registry.to_ascii_lowercase();
    let Some((_, entry)) = auths.iter().find(|(k, _)| key_of(k) == wanted) else { return Ok(RegistryAuth::Anonymous) };
    if entry["identitytoken"].as_str().is_some_and(|t| !t.is_empty()) {
        return Err(format!(
            "{registry}: identity tokens (identitytoken) are not supported; use a username and password"
        ));
    }
    if let (Some(user), Some(password)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Ok(RegistryAuth::Basic(user.to_string(), password.to_string()));
    }
    let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) else { return Ok(RegistryAuth::Anonymous) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim()))
        .map_err(|e| format!("{registry}: the auth entry is not base64: {e}"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| format!("{registry}: the auth entry is not UTF-8"))?;
    let (user, password) =
        decoded.split_once(':').ok_or_else(|| format!("{registry}: the auth entry is not user:password"))?;
    Ok(RegistryAuth::Basic(user.to_string(), password.to_string()))
}

/// Pulls the component `source` names, checking that the artifact is a
/// WebAssembly component artifact and the bytes match their digests.
pub fn pull(source: &str, max: usize) -> Result<Pulled, PluginCmdError> {
    let reference = reference(source)?;
    let (client, auth) = client(&reference)?;
    runtime()?.block_on(async {
        // Checked against the reference's digest when it has one.
        let (manifest, digest) =
            client.pull_image_manifest(&reference, &auth).await.map_err(|e| failed(&reference, e))?;
        let layer = component_layer(&manifest).map_err(|m| failed(&reference, m))?;
        let size = usize::try_from(layer.size).unwrap_or(usize::MAX);
        if size > max {
            return Err(failed(&reference, format!("the component is {size} bytes, more than the {max} accepted")));
        }
        let pinned = pinned(&reference, digest);
        let mut out = Limited { bytes: Vec::with_capacity(size), max };
        // Checked against the layer's digest as it streams in.
        client.pull_blob(&pinned, layer, &mut out).await.map_err(|e| failed(&reference, e))?;
        if out.bytes.len() != size {
            return Err(failed(
                &reference,
                format!("the layer is {} bytes, but the manifest says {size}", out.bytes.len()),
            ));
        }
        Ok(Pulled { bytes: out.bytes, pinned: shown(&pinned) })
    })
}

/// The one `application/wasm` layer of a WebAssembly artifact's manifest.
fn component_layer(manifest: &OciImageManifest) -> Result<&oci_client::manifest::OciDescriptor, String> {
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(format!(
            "not a WebAssembly component artifact: its config media type is {:?}, not {CONFIG_MEDIA_TYPE}",
            manifest.config.media_type
        ));
    }
    match manifest.layers.as_slice() {
        [layer] if layer.media_type == LAYER_MEDIA_TYPE => Ok(layer),
        [layer] => Err(format!("its layer has media type {:?}, not {LAYER_MEDIA_TYPE}", layer.media_type)),
        layers => Err(format!("it has {} layers; a component artifact has exactly one", layers.len())),
    }
}

/// A sink that refuses more than `max` bytes, so a lying registry cannot
/// fill memory.
struct Limited {
    bytes: Vec<u8>,
    max: usize,
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.max {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the layer is larger than {} bytes",
                self.max
            ))));
        }
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// What the artifact's config says of the component (as `wkg` writes it).
pub struct ComponentDescription {
    /// The component's SHA-256, lowercase hex (its layer's digest).
    pub sha256: String,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

/// Pushes `component` to `target` as a WebAssembly component artifact;
/// the pushed reference, pinned to the manifest digest.
pub fn push(
    component: Vec<u8>,
    file_name: &str,
    description: &ComponentDescription,
    target: &str,
) -> Result<String, PluginCmdError> {
    let reference = reference(target)?;
    let (client, auth) = client(&reference)?;
    let config = serde_json::json!({
        "created": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| failed(&reference, e))?,
        "author": null,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [format!("sha256:{}", description.sha256)],
        "component": {"exports": description.exports, "imports": description.imports, "target": null},
    });
    let config = Config::new(config.to_string().into_bytes(), CONFIG_MEDIA_TYPE.to_string(), None);
    let title =
        BTreeMap::from([(oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_TITLE.to_string(), file_name.to_string())]);
    let layer = ImageLayer::new(component, LAYER_MEDIA_TYPE.to_string(), Some(title));
    let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    // Left out by `build`; pullers that check the manifest (wkg) need it.
    manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
    runtime()?.block_on(async {
        client.push(&reference, &[layer], config, &auth, Some(manifest)).await.map_err(|e| failed(&reference, e))?;
        let digest = client.fetch_manifest_digest(&reference, &auth).await.map_err(|e| failed(&reference, e))?;
        Ok(shown(&pinned(&reference, digest)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_must_name_their_registry() {
        assert!(reference("oci://127.0.0.1:5000/plugins/store:1.0").is_ok());
        assert!(reference("oci://registry.example/plugins/store@sha256:0000000000000000000000000000000000000000000000000000000000000000").is_ok());
        assert!(reference("oci://localhost/store").is_ok());
        let message = reference("oci://plugins/store:1.0").unwrap_err().to_string();
        assert!(message.contains("name the registry"), "{message}");
        assert!(reference("oci://UPPER/Case").is_err());
    }

    #[test]
    fn docker_config_credentials() {
        let config = r#"{"auths": {
            "127.0.0.1:5000": {"auth": "dXNlcjpwYXNzOndvcmQ="},
            "https://registry.example/v1/": {"username": "u", "password": "p"},
            "tokens.example": {"identitytoken": "refresh"},
            "bad.example": {"auth": "***"}
        }, "credsStore": "desktop"}"#;
        let basic = |auth: RegistryAuth| match auth {
            RegistryAuth::Basic(u, p) => format!("{u}/{p}"),
            RegistryAuth::Anonymous => "anonymous".into(),
            RegistryAuth::Bearer(_) => "bearer".into(),
        };
        assert_eq!(basic(docker_auth(config, "127.0.0.1:5000").unwrap()), "user/pass:word");
        assert_eq!(basic(docker_auth(config, "registry.example").unwrap()), "u/p");
        assert_eq!(basic(docker_auth(config, "elsewhere.example").unwrap()), "anonymous");
        assert!(docker_auth(config, "tokens.example").unwrap_err().contains("identity tokens"));
        assert!(docker_auth(config, "bad.example").unwrap_err().contains("base64"));
        assert!(docker_auth("{", "x").unwrap_err().contains("not JSON"));
    }
}
