//! Writing results and reading standard input.
//!
//! `println!` panics when standard output is a closed pipe (`keyward key ls |
//! head -1`); these helpers turn that into a quiet stop instead.

use std::io::{Read, Write};

use serde_json::Value;

use super::ClientError;

fn write_err(e: std::io::Error) -> ClientError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        ClientError::OutputClosed
    } else {
        ClientError::Failed(format!("cannot write to standard output: {e}"))
    }
}

/// Writes bytes to standard output as they are.
pub fn raw(bytes: &[u8]) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).map_err(write_err)?;
    out.flush().map_err(write_err)
}

/// Writes one line to standard output and flushes it, so followers of a log
/// stream see each event as it arrives.
pub fn line(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(write_err)?;
    out.write_all(b"\n").map_err(write_err)?;
    out.flush().map_err(write_err)
}

/// Writes a JSON value, pretty-printed, followed by a newline.
pub fn json(value: &Value) -> Result<(), ClientError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ClientError::Failed(format!("cannot format JSON: {e}")))?;
    line(&text)
}

/// Writes a value as compact JSON on one line, as the `kes` CLI prints
/// results for scripts (one line is also what `grep` and `sed` expect).
pub fn json_line<T: serde::Serialize>(value: &T) -> Result<(), ClientError> {
    let text = serde_json::to_string(value).map_err(|e| ClientError::Failed(format!("cannot format JSON: {e}")))?;
    line(&text)
}

/// Writes `label: value` rows with the values aligned; empty values are left out.
pub fn fields(rows: &[(&str, String)]) -> Result<(), ClientError> {
    let width = rows.iter().filter(|(_, v)| !v.is_empty()).map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        line(&format!("{:<w$} {value}", format!("{label}:"), w = width + 1))?;
    }
    Ok(())
}

/// All of standard input.
pub fn read_stdin() -> Result<Vec<u8>, ClientError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| ClientError::Failed(format!("cannot read standard input: {e}")))?;
    Ok(buf)
}

/// All of standard input as text.
pub fn read_stdin_string() -> Result<String, ClientError> {
    String::from_utf8(read_stdin()?).map_err(|_| ClientError::Failed("standard input is not UTF-8 text".into()))
}

/// A string field of a JSON object, or "".
pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}
