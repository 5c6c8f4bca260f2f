//! TOML syntax errors as text, without quoting a secret value.

/// Whether a TOML key names something secret, whose value an error message
/// must not quote. `password` is the only such key keyward itself reads;
/// `secret` and `token` cover plugin tables (`[keystore.config]`, `[audit.config]`).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token"].iter().any(|word| key.contains(word))
}

/// Whether line `line` (0-based) of `text` belongs to a statement that sets a
/// secret key. A line inside a multi-line string (`"""`, `'''`) belongs to
/// the statement that opened it, even if it contains `=`; any other line
/// without `=` continues the statement above (a multi-line array).
fn on_secret_line(text: &str, line: usize) -> bool {
    let mut secret = false;
    let mut open: Option<&str> = None;
    for l in text.split('\n').take(line + 1) {
        if let Some(delim) = open {
            if l.contains(delim) {
                open = None;
            }
            continue;
        }
        if let Some((key, value)) = l.split_once('=') {
            secret = is_secret_key(key);
            let value = value.trim_start();
            open = ["\"\"\"", "'''"].into_iter().find(|d| value.starts_with(d) && value.matches(d).count() == 1);
        }
    }
    secret
}

/// A TOML error as text. The toml crate quotes the offending source line
/// (and a type error quotes the value); when that line sets a secret key the
/// quote is left out and values in backticks are replaced, so a typo next to
/// `password = "…"` cannot print the password to the terminal or a log.
pub(super) fn render_toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.to_string().trim_end().to_string();
    };
    let start = span.start.min(text.len());
    let before = &text.as_bytes()[..start];
    let line = before.iter().filter(|&&b| b == b'\n').count();
    if !on_secret_line(text, line) {
        return e.to_string().trim_end().to_string();
    }
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    format!(
        "TOML parse error at line {}, column {column} (the line is not shown: it sets a secret)\n{}",
        line + 1,
        redact_quoted(e.message())
    )
}

/// Whether a `` `…` `` quote in a toml error message is safe to keep on a
/// secret line: a single character (the parser's hints, expected `` `"` ``) or
/// a key name (unknown field `` `passwrd` ``, expected one of `` `key` ``…).
/// A string value is never quoted in these messages (a secret is read as a
/// string, so only a non-string can be a type error), and the only non-string
/// TOML values that look like a key are `true`, `false`, `inf` and `nan`.
fn harmless_quote(quote: &str) -> bool {
    let key_like = quote.starts_with(|c: char| c.is_ascii_alphabetic())
        && quote.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !["true", "false", "inf", "nan"].contains(&quote);
    quote.chars().count() <= 1 || key_like
}

/// Replaces every `` `…` `` quote in `message` that could be a value with `` `<redacted>` ``.
fn redact_quoted(message: &str) -> String {
    let parts: Vec<&str> = message.split('`').collect();
    let mut out = String::with_capacity(message.len());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('`');
        }
        // Odd parts lie between a pair of backticks (an unpaired last one is not a quote).
        let quoted = i % 2 == 1 && i + 1 < parts.len();
        out.push_str(if quoted && !harmless_quote(part) { "<redacted>" } else { part });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{minimal, parse, PW};

    #[test]
    fn toml_errors_on_a_secret_line_do_not_show_the_value() {
        let tls = minimal();
        for (what, text, line) in [
            ("unterminated string", format!("{tls}password = \"{PW}\n"), 6),
            ("bare value", format!("{tls}password = {PW}\n"), 6),
            ("not a string", format!("{tls}password = 4242424242\n"), 6),
            ("trailing junk", format!("{tls}password = \"{PW}\" {PW}\n"), 6),
            ("quoted key", format!("{tls}\"password\" = {PW}\n"), 6),
            ("unterminated multi-line string", format!("{tls}password = \"\"\"{PW}\nmore-{PW}\n"), 0),
            ("multi-line string with =", format!("{tls}password = '''\n{PW}\na={PW}\n'''x\n"), 9),
            ("inside a multi-line string", format!("{tls}password = \"\"\"\na={PW}\\q\n\"\"\"\n"), 7),
            ("plugin token", format!("{tls}[keystore]\nplugin = \"x\"\n[keystore.config]\napi_token = \"{PW}\n"), 9),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(!err.contains("hunter2") && !err.contains("4242424242"), "{what}: {err}");
            assert!(err.contains("TOML parse error at line"), "{what}: {err}");
            if line > 0 {
                assert!(err.contains(&format!("line {line},")), "{what}: {err}");
            }
        }
    }

    #[test]
    fn toml_errors_elsewhere_keep_the_source_line() {
        let text = format!("{}[cache.expiry]\nany = \"5m\"\nsometimes = \"1s\"\n", minimal());
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("8 | sometimes = \"1s\""), "{err}");
        // The statement after a multi-line secret is shown again.
        let text = format!("{}password = \"\"\"\n{PW}\n\"\"\"\nca = 5\n", minimal());
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("9 | ca = 5") && !err.contains(PW), "{err}");
    }

    #[test]
    fn quoted_values_are_redacted_and_key_names_kept() {
        assert_eq!(
            redact_quoted("invalid type: integer `42`, expected a string"),
            "invalid type: integer `<redacted>`, expected a string"
        );
        assert_eq!(redact_quoted("unknown field `pasword`, expected `key`"), "unknown field `pasword`, expected `key`");
        assert_eq!(redact_quoted("expected `\"`, found `true`"), "expected `\"`, found `<redacted>`");
        assert_eq!(redact_quoted("odd ` quote"), "odd ` quote");
    }
}
