//! `audit-file`: appends keyward audit events to a file as JSON lines.
//!
//! It exports the `audit-lines` world: each batch arrives as the events' exact
//! KES audit lines, each followed by `\n`, and is appended to the file as
//! given, so the file reads like KES's own audit log and any JSON-lines tool
//! can follow it. Configuration: `{"path": "/logs/audit.jsonl"}` (the
//! default), a guest path inside a directory the host preopened.
//!
//! The file is opened on every batch rather than held open, so a log rotation
//! (rename + new file, or copy + truncate) is picked up at the next batch.
//! Each batch is written whole, in one positional write at the end the file
//! has when the batch starts (see [`write_at_end`]): lines are never split
//! between writes. The host hands a sink one batch at a time, and a replaced
//! sink's writer finishes before its successor's starts, so within one server
//! nothing else appends in between. The file must not be shared with another
//! process's writer.

use std::fs::{File, OpenOptions};
use std::io;

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

fn io_error(context: &str, path: &str, err: &io::Error) -> Error {
    use io::ErrorKind;
    match err.kind() {
        ErrorKind::StorageFull | ErrorKind::ReadOnlyFilesystem | ErrorKind::QuotaExceeded => {
            Error::Unavailable(format!("{context} {path}: {err}"))
        }
        _ => Error::Internal(format!("{context} {path}: {err}")),
    }
}

impl FileSink {
    fn open(&self) -> Result<File, Error> {
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
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
        let file = self.open()?;
        write_at_end(&file, &lines).map_err(|e| io_error("cannot append to audit log", &self.path, &e))
    }
}

/// Writes `bytes` at the current end of `file`.
///
/// Positional writes (`pwrite`, WASI `descriptor.write`) rather than an
/// append stream: wasmtime runs a positional write on the calling thread as
/// one system call, while an append stream hands every 64 KiB to a thread of
/// the host's blocking pool and waits to be woken (four thread hand-offs for
/// a typical batch under load; measured in BENCHMARKS.md, session 8).
fn write_at_end(file: &File, mut bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut offset = file.metadata()?.len();
    while !bytes.is_empty() {
        let at = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
        // SAFETY: the pointer and length are those of `bytes`, a live slice,
        // and the descriptor is `file`'s, open until it is dropped after this.
        let written = unsafe { libc::pwrite(file.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), at) };
        match usize::try_from(written) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = bytes.get(n..).unwrap_or_default();
                offset += n as u64;
            }
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

keyward_sdk::export_audit_sink!(FileSink);
