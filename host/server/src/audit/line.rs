//! The KES audit line of one answered request, written by hand: it is
//! formatted for every request.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime};

/// What the audit line of one answered request records.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    /// When the request arrived (wall clock).
    pub received: SystemTime,
    /// The client's IP address, if known.
    pub ip: Option<&'a str>,
    /// The URL path, percent-decoded, without the query.
    pub path: &'a str,
    /// The client's identity, if it presented a certificate.
    pub identity: Option<&'a str>,
    /// The HTTP status sent.
    pub status: u16,
    /// How long the answer took.
    pub duration: Duration,
    /// When the answer was ready (monotonic): orders the lines of requests
    /// answered on different threads.
    pub answered: Instant,
}

/// The KES audit line for one request (without a newline).
pub fn line(request: &Answered<'_>) -> String {
    let mut out = String::with_capacity(160 + request.path.len());
    push_line(&mut out, request);
    out
}

/// Appends the KES audit line for one request to `out`, without a newline.
///
/// Written by hand rather than through serde since it runs for every
/// request (same bytes; the unit tests compare both).
pub(super) fn push_line(out: &mut String, request: &Answered<'_>) {
    let duration_us = u64::try_from(request.duration.as_micros()).unwrap_or(u64::MAX);
    out.push_str(r#"{"time":""#);
    push_time(out, request.received);
    out.push_str(r#"","request":{"#);
    if let Some(ip) = request.ip {
        out.push_str(r#""ip":"#);
        push_json_string(out, ip);
        out.push(',');
    }
    out.push_str(r#""path":"#);
    push_json_string(out, request.path);
    if let Some(identity) = request.identity {
        out.push_str(r#","identity":"#);
        push_json_string(out, identity);
    }
    // The response time is nanoseconds truncated to microseconds: every Go
    // client decodes it as a `time.Duration` (the newest KES server's
    // milliseconds are a bug).
    out.push_str(r#"},"response":{"code":"#);
    out.push_str(itoa::Buffer::new().format(request.status));
    out.push_str(r#","time":"#);
    out.push_str(itoa::Buffer::new().format(duration_us.saturating_mul(1000)));
    out.push_str("}}");
}

thread_local! {
    /// The last whole second [`push_time`] wrote on this thread, as unix
    /// seconds and RFC 3339 text without the `Z`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// Appends `t` in RFC 3339 (UTC, nanoseconds), the text
/// [`keyward_core::time_format::push_rfc3339`] writes for the same instant. The calendar
/// date and time of day are worked out once per second per thread: nearly
/// every line under load shares them with the one before. A clock set
/// before 1970 reads as the epoch.
fn push_time(out: &mut String, t: SystemTime) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs || text.is_empty() {
            let whole = i64::try_from(secs).ok().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok());
            text.clear();
            keyward_core::time_format::push_rfc3339(text, whole.unwrap_or(time::OffsetDateTime::UNIX_EPOCH));
            text.pop(); // the `Z`: the fraction comes before it
            *second = secs;
        }
        out.push_str(text);
    });
    keyward_core::time_format::push_fraction_z(out, nanos);
}

/// Appends `s` as a JSON string literal, escaped exactly as serde_json does.
/// The result never contains a raw line break, so a line stays one line.
fn push_json_string(out: &mut String, s: &str) {
    // A fold rather than `all`: no early exit, so the check is vectorised
    // (it runs over the path, IP and identity of every request).
    if s.bytes().fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\')) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Rare (a path with quotes or control characters): let serde escape it.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\"")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::test_support::at;

    #[test]
    fn a_line_has_the_kes_shape() {
        let l = line(&Answered {
            received: at(1_704_067_200_000_000_000),
            ip: Some("127.0.0.1"),
            path: "/v1/key/create/k",
            identity: Some("ab"),
            status: 200,
            duration: Duration::from_millis(3),
            answered: Instant::now(),
        });
        assert_eq!(
            l,
            r#"{"time":"2024-01-01T00:00:00Z","request":{"ip":"127.0.0.1","path":"/v1/key/create/k","identity":"ab"},"response":{"code":200,"time":3000000}}"#
        );
    }

    /// The time written once per second per thread is the text of the full
    /// formatter for every instant, whether the second changes or not, and
    /// backwards too (a clock step).
    #[test]
    fn times_match_the_rfc3339_formatter_across_seconds() {
        let instants = [
            1_700_000_000_123_456_789u64,
            1_700_000_000_999_999_999,
            1_700_000_001_000_000_000,
            1_700_000_001_000_000_100,
            1_699_999_999_500_000_000,
            0,
            1_500,
            18_446_744_073_709_551_615,
            1_704_067_200_000_000_000,
        ];
        for nanos in instants {
            let mut out = String::new();
            push_time(&mut out, at(nanos));
            let reference = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).unwrap();
            assert_eq!(out, keyward_core::time_format::rfc3339(reference), "{nanos}");
        }
    }

    /// The hand-written line is byte for byte what serde writes for the same
    /// facts, for the paths and identities a client can send.
    #[test]
    fn a_line_matches_serde() {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: &'a str,
            request: Request<'a>,
            response: Response,
        }
        #[derive(serde::Serialize)]
        struct Response {
            code: u16,
            time: u64,
        }
        #[derive(serde::Serialize)]
        struct Request<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            ip: Option<&'a str>,
            path: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            identity: Option<&'a str>,
        }
        let paths = ["/v1/key/encrypt/k", "/a\"b", "/ctl\u{1}\u{1f}\n\t", "/ünïcödé/日本", "/\u{7f}", ""];
        for (i, path) in paths.into_iter().enumerate() {
            for (ip, identity) in [(None, None), (Some("::1"), Some("x\"y")), (Some("10.0.0.1"), None)] {
                let micros = [0u64, 1, 999_999, 12_345_678_901][i % 4];
                let received = at(1_700_000_000_123_456_789);
                let l = line(&Answered {
                    received,
                    ip,
                    path,
                    identity,
                    status: 404,
                    duration: Duration::from_micros(micros),
                    answered: Instant::now(),
                });
                let expected = serde_json::to_string(&Line {
                    time: "2023-11-14T22:13:20.123456789Z",
                    request: Request { ip, path, identity },
                    response: Response { code: 404, time: micros * 1000 },
                })
                .unwrap();
                assert_eq!(l, expected);
                assert!(!l.contains('\n'), "one event, one line: {l}");
            }
        }
    }
}
