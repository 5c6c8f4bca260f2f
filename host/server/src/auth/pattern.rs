//! Policy patterns and the allow/deny decision.
//!
//! Two pattern languages exist in KES:
//!
//! * **old generation** (v0.18/v0.19): Go's `path.Match` glob, see [`glob_match`]
//!   (in [`super::glob`]);
//! * **new generation** (2023+): a pattern ending in `*` is a byte prefix (it crosses
//!   `/`), every other pattern must equal the path; `*` elsewhere is literal.
//!
//! Config policies use the mixed rule of docs/configuration.md ([`Pattern::from_config`]),
//! policies written through the old API are always globs ([`Pattern::glob`]).
//!
//! Everything on the request path ([`Pattern::matches`], [`Policy::is_allowed`],
//! [`glob_match`]) is allocation-free and never panics.

use std::fmt;

pub use super::glob::{glob_is_valid, glob_match};

// ---------------------------------------------------------------------------------------
// Pattern
// ---------------------------------------------------------------------------------------

/// A compiled policy pattern. Every variant holds the pattern's original text (for a
/// `Prefix`, including the trailing `*`); build them with the constructors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Matches only a path equal to the text. An empty text never matches.
    Exact(String),
    /// Matches every path starting with the text minus its trailing `*` (crosses `/`).
    Prefix(String),
    /// Go `path.Match` glob (see [`glob_match`]).
    Glob(String),
}

impl Pattern {
    /// Config rule (docs/configuration.md): a pattern whose only wildcard is a trailing `*` is a
    /// prefix; any other wildcard (`*` elsewhere, `?`, `[`) makes it a glob; a pattern
    /// without wildcards is exact; the empty pattern never matches. `\` and `]` are not
    /// wildcards: in a prefix/exact pattern they are literal, in a glob `\` escapes.
    pub fn from_config(text: &str) -> Pattern {
        let len = text.len();
        let is_glob = text.bytes().enumerate().any(|(i, b)| b == b'?' || b == b'[' || (b == b'*' && i + 1 != len));
        if is_glob {
            Pattern::Glob(text.to_owned())
        } else if text.ends_with('*') {
            Pattern::Prefix(text.to_owned())
        } else {
            Pattern::Exact(text.to_owned())
        }
    }

    /// Why a pattern can never match a request path, if it cannot.
    ///
    /// Request paths are matched percent-decoded, and every path the API
    /// serves consists of `/`, ASCII letters and digits, `_`, `-` and, in
    /// listings, `*`. A pattern with any other character (a percent-encoded
    /// byte such as `%73`, whitespace, a control character, `.`, …), an empty
    /// pattern, a malformed glob or one not starting where a path starts would
    /// be accepted and silently never match, so a `deny` written that way
    /// would not be enforced. Glob syntax (`?`, `[…]`, `\`) is allowed only in
    /// patterns that are globs.
    pub fn unmatchable(&self) -> Option<String> {
        let text = self.as_str();
        if text.is_empty() {
            return Some("an empty pattern matches nothing".into());
        }
        if let Some(at) = text.find('%') {
            let escape = text.get(at..at + 3).unwrap_or(&text[at..]);
            return Some(format!(
                "'{escape}' looks percent-encoded, but paths are matched decoded: write the character itself"
            ));
        }
        let glob = matches!(self, Pattern::Glob(_));
        let allowed = |c: char| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '_' | '-' | '*')
                || (glob && matches!(c, '?' | '[' | ']' | '^' | '\\'))
        };
        if let Some(c) = text.chars().find(|&c| !allowed(c)) {
            let shown = if c.is_control() || c.is_whitespace() { format!("{:?}", c) } else { format!("'{c}'") };
            return Some(format!("{shown} never appears in a request path"));
        }
        if glob && !glob_is_valid(text) {
            return Some("malformed glob (an unclosed or empty '[...]' or a trailing '\\')".into());
        }
        if !(text.starts_with('/') || text.starts_with('*') || (glob && text.starts_with(['?', '[']))) {
            return Some("request paths start with '/'".into());
        }
        None
    }

    /// Old-generation pattern (policies written through the old API): always a glob.
    pub fn glob(text: &str) -> Pattern {
        Pattern::Glob(text.to_owned())
    }

    /// New-generation KES semantics: ends with `*` → prefix, otherwise exact; `*`
    /// elsewhere is literal; empty never matches.
    pub fn new_generation(text: &str) -> Pattern {
        if text.ends_with('*') {
            Pattern::Prefix(text.to_owned())
        } else {
            Pattern::Exact(text.to_owned())
        }
    }

    /// Reports whether the request path matches. Allocation-free.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(p) => !p.is_empty() && p == path,
            Pattern::Prefix(p) => {
                let prefix = p.strip_suffix('*').unwrap_or(p);
                path.starts_with(prefix)
            }
            Pattern::Glob(p) => glob_match(p, path),
        }
    }

    /// The pattern's original text.
    pub fn as_str(&self) -> &str {
        match self {
            Pattern::Exact(p) | Pattern::Prefix(p) | Pattern::Glob(p) => p,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------

/// A policy: deny rules are checked first, then allow rules; no matching allow → denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow: Vec<Pattern>,
    pub deny: Vec<Pattern>,
}

impl Policy {
    pub fn new(allow: Vec<Pattern>, deny: Vec<Pattern>) -> Policy {
        Policy { allow, deny }
    }

    /// A policy from config pattern texts ([`Pattern::from_config`]).
    pub fn from_config<S: AsRef<str>>(allow: &[S], deny: &[S]) -> Policy {
        Policy {
            allow: allow.iter().map(|p| Pattern::from_config(p.as_ref())).collect(),
            deny: deny.iter().map(|p| Pattern::from_config(p.as_ref())).collect(),
        }
    }

    /// A policy written through the old API: every pattern is a glob.
    pub fn from_globs<S: AsRef<str>>(allow: &[S], deny: &[S]) -> Policy {
        Policy {
            allow: allow.iter().map(|p| Pattern::glob(p.as_ref())).collect(),
            deny: deny.iter().map(|p| Pattern::glob(p.as_ref())).collect(),
        }
    }

    /// Decides a request for `path` (the URL path without the query string).
    pub fn is_allowed(&self, path: &str) -> bool {
        !self.deny.iter().any(|p| p.matches(path)) && self.allow.iter().any(|p| p.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_that_can_never_match_are_named() {
        for ok in
            ["/v1/key/encrypt/app-*", "*", "/v1/key/*/app-[a-z]?", "/v1/key/list/*", "/version", "/v1/key/list/a\\*b"]
        {
            assert_eq!(Pattern::from_config(ok).unmatchable(), None, "{ok}");
        }
        for (bad, why) in [
            ("/v1/key/encrypt/app-%73ecret", "'%73' looks percent-encoded"),
            ("/v1/key/encrypt/app secret", "' ' never appears"),
            ("/v1/key/encrypt/app\tsecret", "'\\t' never appears"),
            ("/v1/key/encrypt/a.b", "'.' never appears"),
            ("", "empty"),
            ("v1/key/encrypt/k", "start with '/'"),
            ("/v1/key/[a-", "malformed glob"),
            ("/v1/key/describe/k?", ""),
        ] {
            let why_not = Pattern::from_config(bad).unmatchable();
            if why.is_empty() {
                assert_eq!(why_not, None, "{bad}");
                continue;
            }
            let why_not = why_not.unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert!(why_not.contains(why), "{bad:?}: {why_not}");
        }
        // A prefix pattern has no escapes: its `\` is literal, and no path has one.
        assert!(Pattern::from_config("/v1/k\\*").unmatchable().is_some());
        // An exact pattern has no glob syntax.
        assert!(Pattern::Exact("/v1/key/[x]".into()).unmatchable().is_some());
    }

    fn vectors() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kes/vectors.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn strs(v: &serde_json::Value) -> Vec<&str> {
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
    }

    #[test]
    fn vectors_policy_match() {
        let v = vectors();
        let cases = v["policy_match"].as_array().unwrap();
        assert!(!cases.is_empty());
        let (mut old, mut new) = (0, 0);
        for c in cases {
            let (pat, path) = (c["pattern"].as_str().unwrap(), c["path"].as_str().unwrap());
            let want = c["match"].as_bool().unwrap();
            let got = match c["generation"].as_str().unwrap() {
                "old" => {
                    old += 1;
                    assert_eq!(Pattern::glob(pat).matches(path), want);
                    glob_match(pat, path)
                }
                "new" => {
                    new += 1;
                    Pattern::new_generation(pat).matches(path)
                }
                g => panic!("unknown generation {g}"),
            };
            assert_eq!(got, want, "{c}");
        }
        assert!(old > 0 && new > 0);
    }

    #[test]
    fn vectors_policy_decisions() {
        let v = vectors();
        let cases = v["policy_decisions"].as_array().unwrap();
        assert!(!cases.is_empty());
        for c in cases {
            let (allow, deny) = (strs(&c["allow"]), strs(&c["deny"]));
            let policy = match c["generation"].as_str().unwrap() {
                "old" => Policy::from_globs(&allow, &deny),
                "new" => Policy::new(
                    allow.iter().map(|p| Pattern::new_generation(p)).collect(),
                    deny.iter().map(|p| Pattern::new_generation(p)).collect(),
                ),
                g => panic!("unknown generation {g}"),
            };
            let want = c["allowed"].as_bool().unwrap();
            assert_eq!(policy.is_allowed(c["path"].as_str().unwrap()), want, "{c}");
        }
    }

    #[test]
    fn new_generation_prefixes_compare_bytes() {
        assert!(Pattern::new_generation("/v1/key/create/ä*").matches("/v1/key/create/äx"));
        assert!(!Pattern::new_generation("/v1/key/create/ä*").matches("/v1/key/create/a"));
    }

    #[test]
    fn long_inputs() {
        let long = "a".repeat(100_000);
        assert!(Pattern::from_config(&(long.clone() + "*")).matches(&(long.clone() + "/x")));
        assert!(Pattern::new_generation(&long).matches(&long));
    }

    #[test]
    fn from_config_classification() {
        use Pattern::*;
        type Variant = fn(String) -> Pattern;
        let cases: &[(&str, Variant)] = &[
            ("/v1/status", Exact),
            ("/v1/key/create/my-key", Exact),
            ("/v1/key/create/*", Prefix),
            ("/v1/key/create/my-key*", Prefix),
            ("*", Prefix),
            ("", Exact),
            ("/v1/key/*/my-key", Glob),
            ("/v1/key/**", Glob),
            ("**", Glob),
            ("/v1/key/create/?", Glob),
            ("/v1/key/create/my-key?", Glob),
            ("/v1/key/create/[a-z]", Glob),
            ("/v1/key/create/[a-z]*", Glob),
            ("/v1/key/create/a]", Exact),
            ("/v1/key/create/a\\b", Exact),
            ("/v1/key/create/a\\*", Prefix),
        ];
        for &(text, variant) in cases {
            let p = Pattern::from_config(text);
            assert_eq!(p, variant(text.to_owned()), "{text:?}");
            assert_eq!(p.as_str(), text);
            assert_eq!(p.to_string(), text);
        }
        // Prefix crosses '/', glob does not.
        assert!(Pattern::from_config("/v1/key/*").matches("/v1/key/create/x"));
        assert!(Pattern::from_config("/v1/key/create/*").matches("/v1/key/create/"));
        assert!(!Pattern::from_config("/v1/key/create/*").matches("/v1/key/create"));
        assert!(Pattern::from_config("*").matches("/v1/status"));
        assert!(Pattern::from_config("/v1/key/*/my-key").matches("/v1/key/create/my-key"));
        assert!(!Pattern::from_config("/v1/key/*/my-key").matches("/v1/key/*/x/my-key"));
        assert!(Pattern::from_config("/v1/key/[cd]*/k*").matches("/v1/key/create/k1"));
        assert!(!Pattern::from_config("/v1/key/[cd]*/k*").matches("/v1/key/create/k1/x"));
        assert!(Pattern::from_config("/v1/status").matches("/v1/status"));
        assert!(!Pattern::from_config("/v1/status").matches("/v1/status/"));
        assert!(!Pattern::from_config("").matches(""));
        assert!(!Pattern::from_config("").matches("/v1/status"));
        // Old-API patterns are always globs; new generation never is.
        assert_eq!(Pattern::glob("/v1/key/*"), Glob("/v1/key/*".into()));
        assert!(!Pattern::glob("/v1/key/*").matches("/v1/key/create/x"));
        assert_eq!(Pattern::new_generation("a*b"), Exact("a*b".into()));
        assert_eq!(Pattern::new_generation("a?*"), Prefix("a?*".into()));
        assert!(!Pattern::new_generation("").matches(""));
    }

    #[test]
    fn policy_deny_first_default_deny() {
        let p = Policy::from_config(&["/v1/key/*", "/v1/status"], &["/v1/key/delete/*"]);
        assert!(p.is_allowed("/v1/key/create/a"));
        assert!(p.is_allowed("/v1/status"));
        assert!(!p.is_allowed("/v1/key/delete/a"));
        assert!(!p.is_allowed("/v1/policy/list/*"));
        assert!(!Policy::default().is_allowed("/v1/status"));
        let only_deny = Policy::from_config::<&str>(&[], &["*"]);
        assert!(!only_deny.is_allowed("/v1/status"));
    }
}
