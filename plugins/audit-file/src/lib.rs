//! `audit-file`: appends keyward audit events to a file as JSON lines.
//!
//! Each event's `json` (the exact KES audit line) is written followed by `\n`,
//! so the file reads like KES's own audit log and any JSON-lines tool can
//! follow it. Configuration: `{"path": "/logs/audit.jsonl"}` (the default),
//! a guest path inside a directory the host preopened.
//!
//! The file is opened for appending on every batch rather than held open, so a
//! log rotation (rename + new file) is picked up at the next batch, and several
//! instances of the sink never hold stale handles.

use std::fs::OpenOptions;
use std::io::Write;

use keyward_sdk::{AuditSink, Error, Event};

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

/// A batch is one `write` call: the lines are assembled in memory first so the
/// whole batch goes to the file in as few writes as possible, which keeps
/// lines from concurrent instances from interleaving mid-line.
fn render(events: &[Event]) -> Vec<u8> {
    let size = events.iter().map(|e| e.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size);
    for event in events {
        // A line break inside the JSON would split one event into two lines;
        // well-formed JSON never contains a raw one, so replace defensively.
        if event.json.contains('\n') {
            out.extend_from_slice(event.json.replace('\n', " ").as_bytes());
        } else {
            out.extend_from_slice(event.json.as_bytes());
        }
        out.push(b'\n');
    }
    out
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

    fn write(&self, events: Vec<Event>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let mut file = self.open()?;
        file.write_all(&render(&events))
            .and_then(|()| file.flush())
            .map_err(|e| io_error("cannot append to audit log", &self.path, &e))
    }
}

keyward_sdk::export_audit_sink!(FileSink);
