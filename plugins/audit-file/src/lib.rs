//! `audit-file`: appends keyward audit events to a file as JSON lines.
//!
//! It exports the `audit-lines` world: each batch arrives as the events' exact
//! KES audit lines, each followed by `\n`, and is appended to the file as
//! given, so the file reads like KES's own audit log and any JSON-lines tool
//! can follow it. Configuration: `{"path": "/logs/audit.jsonl"}` (the
//! default), a guest path inside a directory the host preopened.
//!
//! The file is opened for appending on every batch rather than held open, so a
//! log rotation (rename + new file) is picked up at the next batch, and several
//! instances of the sink never hold stale handles. Each batch goes to the file
//! through one `write_all` of the whole buffer, in as few writes as possible,
//! which keeps lines from concurrent instances from interleaving mid-line.

use std::fs::OpenOptions;
use std::io::Write;

use keyward_sdk::{AuditSink, Error};

/// The sink's configuration, from the server config.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Guest path of the audit log file; created if missing.
    #[serde(default = "default_path")]
    path: String,
}

fn default_path() -> String {
    "/logs/audit.jsonl".to_string()
}

struct FileSink {
    path: String,
}

fn io_error(context: &str, path: &str, err: &std::io::Error) -> Error {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::StorageFull | ErrorKind::ReadOnlyFilesystem | ErrorKind::QuotaExceeded => {
            Error::Unavailable(format!("{context} {path}: {err}"))
        }
        _ => Error::Internal(format!("{context} {path}: {err}")),
    }
}

impl FileSink {
    fn open(&self) -> Result<std::fs::File, Error> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io_error("cannot open audit log", &self.path, &e))
    }
}

impl AuditSink for FileSink {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Config = if config.trim().is_empty() {
            Config { path: default_path() }
        } else {
            serde_json::from_str(config).map_err(|e| Error::Invalid(format!("audit-file config: {e}")))?
        };
        let sink = FileSink { path: config.path };
        // Fail at start-up, not at the first request, if the file cannot be
        // written (typically: its directory was not granted as a preopen).
        sink.open().map_err(|e| match e {
            Error::Internal(m) | Error::Unavailable(m) => {
                Error::Invalid(format!("{m} (is its directory granted as a preopen?)"))
            }
            other => other,
        })?;
        Ok(sink)
    }

    fn write(&self, mut lines: Vec<u8>) -> Result<(), Error> {
        if lines.is_empty() {
            return Ok(());
        }
        // The host ends every line with `\n`; should a batch ever lack the
        // last one, add it so the next batch starts on a line of its own.
        if lines.last() != Some(&b'\n') {
            lines.push(b'\n');
        }
        let mut file = self.open()?;
        file.write_all(&lines)
            .and_then(|()| file.flush())
            .map_err(|e| io_error("cannot append to audit log", &self.path, &e))
    }
}

keyward_sdk::export_audit_sink!(FileSink);
