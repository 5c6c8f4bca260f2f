//! The server's own log on stderr: which lines (`KEYWARD_LOG`) and in which
//! form (`KEYWARD_LOG_FORMAT`).
//!
//! `KEYWARD_LOG` is a filter: a level (`info`, the default; `debug`, ...),
//! optionally followed by `target=level` directives (`info,keyward=debug`).
//! A value that is not one is an error at start, not a silently empty log.
//! `KEYWARD_LOG_FORMAT` is `text` (the default) or `json` (one JSON object
//! per line, for log collectors).
//!
//! rustls logs at WARN level about what clients send in their handshakes
//! (e.g. an IP address as the server name), before any authentication:
//! anyone who can connect could fill the log. Its lines are therefore shown
//! from ERROR up unless the filter names `rustls` itself.

use tracing_subscriber::EnvFilter;

/// The filter variable.
pub const FILTER_VAR: &str = "KEYWARD_LOG";
/// The format variable.
pub const FORMAT_VAR: &str = "KEYWARD_LOG_FORMAT";

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "{FILTER_VAR}: invalid filter {value:?}: {reason}; use a level (trace, debug, info, warn, error, off), \
         optionally with target=level directives, e.g. KEYWARD_LOG=info,keyward=debug{hint}"
    )]
    Filter { value: String, reason: String, hint: &'static str },
    #[error("{FORMAT_VAR}: unknown format {0:?}: use text or json")]
    Format(String),
}

/// The filter `value` (unset: `info`) describes, with rustls held to
/// errors unless named.
pub fn filter(value: Option<&str>) -> Result<EnvFilter, LogError> {
    let value = value.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("info");
    let refuse = |reason: String| {
        let hint = if matches!(value, "json" | "text") { "; for JSON lines set KEYWARD_LOG_FORMAT=json" } else { "" };
        LogError::Filter { value: value.to_string(), reason, hint }
    };
    // tracing takes a bare word as a target to log at every level, so a
    // mistyped level or a format name would silently log nothing else.
    for directive in value.split(',').map(str::trim) {
        if !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(refuse(format!("'{directive}' is not a level")));
        }
    }
    let mut filter = EnvFilter::builder().parse(value).map_err(|e| refuse(e.to_string()))?;
    if !value.contains("rustls") {
        // A constant directive: parsing it cannot fail.
        if let Ok(quiet) = "rustls=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    Ok(filter)
}

/// The format `value` names (unset: text).
pub fn format(value: Option<&str>) -> Result<Format, LogError> {
    match value.map(str::trim).unwrap_or("") {
        "" | "text" => Ok(Format::Text),
        "json" => Ok(Format::Json),
        other => Err(LogError::Format(other.to_string())),
    }
}

/// Sets up the process's log from the environment; `enabled = false` (the
/// config's `log.error = "off"`) logs nothing. Checks the variables either
/// way, so a typo is found before it matters.
pub fn init(enabled: bool) -> Result<(), LogError> {
    let filter_var = std::env::var(FILTER_VAR).ok();
    let format_var = std::env::var(FORMAT_VAR).ok();
    let mut filter = filter(filter_var.as_deref())?;
    let format = format(format_var.as_deref())?;
    if !enabled {
        filter = EnvFilter::new("off");
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Tracing can be set up once per process; a second call (tests that
    // start servers in-process) keeps the first subscriber.
    let _ = match format {
        Format::Json => builder.json().try_init(),
        Format::Text => {
            // Colour escapes only for a terminal: piped into a file or
            // journald they would be noise in every line (and break grep).
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).try_init()
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_that_would_silence_the_log_are_refused() {
        for ok in [None, Some(""), Some("debug"), Some("info,keyward=trace"), Some("WARN"), Some("off")] {
            assert!(filter(ok).is_ok(), "{ok:?}");
        }
        let json = filter(Some("json")).unwrap_err().to_string();
        assert!(json.contains("KEYWARD_LOG_FORMAT=json"), "{json}");
        for bad in ["verbose", "info,loud", "keyward=shouting"] {
            let e = filter(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("KEYWARD_LOG") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn rustls_is_held_to_errors_unless_named() {
        assert!(filter(Some("debug")).unwrap().to_string().contains("rustls=error"));
        assert!(!filter(Some("debug,rustls=warn")).unwrap().to_string().contains("rustls=error"));
    }

    #[test]
    fn formats() {
        assert_eq!(format(None).unwrap(), Format::Text);
        assert_eq!(format(Some("json")).unwrap(), Format::Json);
        assert!(format(Some("yaml")).unwrap_err().to_string().contains("text or json"));
    }
}
