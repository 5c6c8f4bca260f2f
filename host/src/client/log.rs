//! `keyward log audit|error`: follows the server's ndjson log stream until the
//! server closes it or the user stops the command.

use std::time::Duration;

use serde_json::Value;

use super::key::with_api;
use super::output::{self, str_of};
use super::ClientError;
use crate::cli::LogCommand;

pub fn run(cmd: LogCommand) -> Result<(), ClientError> {
    let (client, path, format): (_, _, fn(&Value) -> String) = match cmd {
        LogCommand::Audit { client } => (client, "/v1/log/audit", audit_line),
        LogCommand::Error { client } => (client, "/v1/log/error", error_line),
    };
    let json_out = client.json;
    with_api(&client, |api| async move {
        let mut stream = api.stream(path).await?;
        while let Some(line) = stream.next_line().await? {
            if line.trim().is_empty() {
                continue;
            }
            if json_out {
                output::line(&line)?;
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => output::line(&format(&v))?,
                Err(_) => output::line(&line)?,
            }
        }
        Ok(())
    })
}

/// `time  code  identity  path  latency`. The identity is shortened to 12
/// digits, which is enough to tell clients apart on a terminal.
fn audit_line(v: &Value) -> String {
    let req = v.get("request").cloned().unwrap_or_default();
    let resp = v.get("response").cloned().unwrap_or_default();
    let id = str_of(&req, "identity");
    let id = if id.is_empty() { "-" } else { id.get(..12).unwrap_or(id) };
    let code = resp.get("code").and_then(Value::as_u64).unwrap_or_default();
    // A Go Duration (nanoseconds), as every KES client decodes it.
    let latency = resp
        .get("time")
        .and_then(Value::as_u64)
        .map(|ns| humantime::format_duration(Duration::from_micros(ns / 1000)).to_string())
        .unwrap_or_default();
    format!("{} {code} {id:<12} {} {latency}", str_of(v, "time"), str_of(&req, "path")).trim_end().to_string()
}

fn error_line(v: &Value) -> String {
    str_of(v, "message").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_events_become_one_readable_line() {
        let v: Value = serde_json::from_str(
            r#"{"time":"2024-01-01T00:00:00Z","request":{"path":"/v1/status","identity":"3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22"},"response":{"code":200,"time":1500000}}"#,
        )
        .unwrap();
        assert_eq!(audit_line(&v), "2024-01-01T00:00:00Z 200 3ecfcdf38fcb /v1/status 1ms 500us");
    }
}
