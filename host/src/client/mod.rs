//! The `keyward` client commands: talk to any KES-compatible server over
//! mutual TLS using the new-generation API (PUT, `Accept: application/json`).
//!
//! Every command returns `Result<(), ClientError>`; [`finish`] turns that into
//! the exit code and prints exactly one line on failure, so scripts can rely
//! on 0 (ok), 1 (the server or a file said no) and 2 (usage).

pub mod api;
pub mod apikey;
pub mod connect;
pub mod identity;
pub mod key;
pub mod log;
pub mod output;
pub mod policy;
pub mod status;

use std::path::Path;
use std::process::ExitCode;

/// Why a client command failed. The `Display` text is the whole one-line
/// message printed after `keyward: `.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command line or environment is incomplete or malformed (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error; `message` is its `message` (exit 1).
    #[error("{message}")]
    Server { status: u16, message: String },
    /// The server could not be reached or the TLS handshake failed (exit 1).
    #[error("cannot reach {server}: {reason}")]
    Connect { server: String, reason: String },
    /// None of several servers could be reached; each with its reason (exit 1).
    #[error("cannot reach any server: {0}")]
    Unreachable(String),
    /// A local failure: unreadable file, unexpected answer, … (exit 1).
    #[error("{0}")]
    Failed(String),
    /// Standard output was closed (e.g. `| head`): stop quietly (exit 0).
    #[error("output closed")]
    OutputClosed,
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            ClientError::OutputClosed => 0,
            _ => 1,
        }
    }
}

/// Turns a command's result into its exit code, printing one line to stderr
/// on failure. Messages are flattened to one line so a multi-line server
/// message can never look like several errors.
pub fn finish(result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) | Err(ClientError::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string();
            let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("keyward: {line}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a client future on a small single-threaded runtime: a CLI call makes
/// a handful of sequential requests and needs no worker threads.
pub fn block_on<F: std::future::Future<Output = Result<(), ClientError>>>(fut: F) -> Result<(), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(fut)
}

/// `keyward config import FILE`: prints the converted TOML.
pub fn config_import(file: &Path) -> Result<(), ClientError> {
    let (name, text) = if file.as_os_str() == "-" {
        ("<stdin>".to_string(), output::read_stdin_string()?)
    } else {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ClientError::Failed(format!("cannot read '{}': {e}", file.display())))?;
        (file.display().to_string(), text)
    };
    let toml = crate::kesconf::convert(&text, &name).map_err(|e| ClientError::Failed(e.to_string()))?;
    output::raw(toml.as_bytes())
}
