//! Getting a component's bytes for `keyward plugin add` and `pull`: a local
//! file, an `http(s)://` URL (TLS against the public roots), or an
//! `oci://` artifact in a registry (see [`super::oci`]).

use std::path::PathBuf;
use std::time::Duration;

use super::PluginCmdError;

/// The largest component accepted (the Python and JavaScript ones, which
/// carry an interpreter, are 15-40 MB).
const MAX_COMPONENT: usize = 256 << 20;

/// A fetched component: its bytes, its path when it is a local file, and
/// the source to record: for a registry, pinned to the digest it resolved.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub local: Option<PathBuf>,
    pub pinned: Option<String>,
}

pub fn fetch(source: &str) -> Result<Fetched, PluginCmdError> {
    if source.starts_with("https://") || source.starts_with("http://") {
        return Ok(Fetched { bytes: download(source)?, local: None, pinned: None });
    }
    if source.starts_with("oci://") {
        let pulled = super::oci::pull(source, MAX_COMPONENT)?;
        return Ok(Fetched { bytes: pulled.bytes, local: None, pinned: Some(pulled.pinned) });
    }
    let path = PathBuf::from(source);
    let bytes = std::fs::read(&path).map_err(|e| PluginCmdError::Read { path: source.to_string(), source: e })?;
    Ok(Fetched { bytes, local: Some(path), pinned: None })
}

/// The runtime a command's network calls run on.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, PluginCmdError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PluginCmdError::Fetch(format!("cannot start the async runtime: {e}")))
}

fn download(url: &str) -> Result<Vec<u8>, PluginCmdError> {
    let failed = |e: &dyn std::fmt::Display| PluginCmdError::Fetch(format!("{url}: {e}"));
    runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| failed(&e))?;
        let mut response = client.get(url).send().await.map_err(|e| failed(&e))?;
        if !response.status().is_success() {
            return Err(failed(&format!("answered {}", response.status())));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_COMPONENT {
                return Err(failed(&format!("larger than {} MiB", MAX_COMPONENT >> 20)));
            }
        }
        Ok(bytes)
    })
}
