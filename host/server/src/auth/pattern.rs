//! Policy patterns and the allow/deny decision.
//!
//! Two pattern languages exist in KES:
//!
//! * **old generation** (v0.18/v0.19): Go's `path.Match` glob, see [`glob_match`];
//! * **new generation** (2023+): a pattern ending in `*` is a byte prefix (it crosses
//!   `/`), every other pattern must equal the path; `*` elsewhere is literal.
//!
//! Config policies use the mixed rule from DESIGN.md ([`Pattern::from_config`]), policies
//! written through the old API are always globs ([`Pattern::glob`]).
//!
//! Everything on the request path ([`Pattern::matches`], [`Policy::is_allowed`],
//! [`glob_match`]) is allocation-free and never panics.

use std::fmt;

// ---------------------------------------------------------------------------------------
// Go `path.Match`
// ---------------------------------------------------------------------------------------

/// Reports whether `name` matches the shell pattern `pattern`, with exactly the semantics
/// of Go's `path.Match`:
///
/// * `*` matches any run of non-`/` characters (including none);
/// * `?` matches one non-`/` character;
/// * `[abc]`, `[a-z]`, `[^a-z]` are character classes (a class may match `/`); inside a
///   class `\` escapes, `-` and `]` must be escaped, and a class needs at least one entry;
/// * `\x` matches `x` literally;
/// * every other character matches itself.
///
/// A malformed pattern (`[`, `[a-`, `[]`, `[-a]`, a trailing `\`, …) never matches. Go
/// reports `ErrBadPattern` for those even when the name already failed to match an
/// earlier part of the pattern, so the whole pattern is validated up front.
///
/// Like Go, a `*` advances through the name byte by byte; a later `?` or `[^…]` standing
/// on the continuation bytes of a multi-byte character matches them one byte at a time
/// (Go decodes them as U+FFFD), e.g. `*??` matches `"€"`. This mirrors KES exactly.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob_is_valid(pattern) && glob_match_valid(pattern, name)
}

/// Reports whether `pattern` is a well-formed `path.Match` pattern.
pub fn glob_is_valid(pattern: &str) -> bool {
    let p = pattern.as_bytes();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' => match char_at(pattern, i + 1) {
                Some((_, n)) => i += 1 + n,
                None => return false,
            },
            b'[' => match eval_class(pattern, i + 1, None) {
                Some((_, after)) => i = after,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// The character at byte offset `i` of a pattern (always a char boundary there).
fn char_at(s: &str, i: usize) -> Option<(char, usize)> {
    let c = s.get(i..)?.chars().next()?;
    Some((c, c.len_utf8()))
}

/// The rune at byte offset `i` of a name, decoded like Go's `utf8.DecodeRuneInString`:
/// an offset inside a multi-byte character yields U+FFFD with length 1.
fn rune_at(s: &str, i: usize) -> Option<(char, usize)> {
    if i >= s.len() {
        return None;
    }
    match s.get(i..).and_then(|t| t.chars().next()) {
        Some(c) => Some((c, c.len_utf8())),
        None => Some((char::REPLACEMENT_CHARACTER, 1)),
    }
}

/// One class member: a character, optionally `\`-escaped. Unescaped `-` and `]` and the
/// end of the pattern are errors.
fn class_char(p: &str, i: usize) -> Option<(char, usize)> {
    match p.as_bytes().get(i)? {
        b'-' | b']' => None,
        b'\\' => char_at(p, i + 1).map(|(c, n)| (c, i + 1 + n)),
        _ => char_at(p, i).map(|(c, n)| (c, i + n)),
    }
}

/// Parses the class starting at byte `i` (just after `[`) and tests `r` against it.
/// Returns `(r is accepted, offset after the closing ])`, or `None` if malformed.
/// With `r == None` it only validates (the returned flag is then meaningless).
fn eval_class(p: &str, mut i: usize, r: Option<char>) -> Option<(bool, usize)> {
    let negated = p.as_bytes().get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut ranges = 0usize;
    loop {
        if ranges > 0 && p.as_bytes().get(i) == Some(&b']') {
            return Some((hit != negated, i + 1));
        }
        let (lo, next) = class_char(p, i)?;
        i = next;
        let mut hi = lo;
        if p.as_bytes().get(i) == Some(&b'-') {
            let (h, next) = class_char(p, i + 1)?;
            hi = h;
            i = next;
        }
        if let Some(r) = r {
            hit |= lo <= r && r <= hi;
        }
        ranges += 1;
    }
}

/// Splits off the next chunk at byte `i`: leading stars, then everything up to the next
/// `*` that is neither escaped nor inside a class. Returns `(had star, start, end)`.
fn next_chunk(p: &[u8], mut i: usize) -> (bool, usize, usize) {
    let mut star = false;
    while i < p.len() && p[i] == b'*' {
        star = true;
        i += 1;
    }
    let start = i;
    let mut in_class = false;
    while i < p.len() {
        match p[i] {
            b'\\' => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    (star, start, i.min(p.len()))
}

/// Matches a star-free, validated chunk against `name` at byte `j`. Returns the offset
/// just after the matched text.
fn match_chunk(chunk: &str, name: &str, mut j: usize) -> Option<usize> {
    let c = chunk.as_bytes();
    let s = name.as_bytes();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            b'[' => {
                let (r, n) = rune_at(name, j)?;
                let (ok, after) = eval_class(chunk, i + 1, Some(r))?;
                if !ok {
                    return None;
                }
                i = after;
                j += n;
            }
            b'?' => {
                if *s.get(j)? == b'/' {
                    return None;
                }
                j += rune_at(name, j)?.1;
                i += 1;
            }
            b => {
                if b == b'\\' {
                    i += 1;
                }
                let (_, n) = char_at(chunk, i)?;
                let lit = &c[i..i + n];
                if !s.get(j..)?.starts_with(lit) {
                    return None;
                }
                i += n;
                j += n;
            }
        }
    }
    Some(j)
}

/// The matcher proper; `pattern` must be valid.
///
/// Each chunk that follows a star is placed at the leftmost position where it matches
/// (never skipping a `/`); the final chunk must additionally consume the rest of the
/// name. Chunks are fixed-width, so leftmost placement loses no matches.
fn glob_match_valid(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let s = name.as_bytes();
    let mut pi = 0;
    let mut j = 0;
    'chunks: while pi < p.len() {
        let (star, start, end) = next_chunk(p, pi);
        pi = end;
        let last = pi == p.len();
        if star && start == end {
            // Trailing star: the rest of the name must be free of '/'.
            return !s[j..].contains(&b'/');
        }
        let Some(chunk) = pattern.get(start..end) else {
            return false;
        };
        if let Some(t) = match_chunk(chunk, name, j) {
            if !last || t == s.len() {
                j = t;
                continue;
            }
        }
        if star {
            let mut k = j;
            while k < s.len() && s[k] != b'/' {
                k += 1;
                if let Some(t) = match_chunk(chunk, name, k) {
                    if last && t != s.len() {
                        continue;
                    }
                    j = t;
                    continue 'chunks;
                }
            }
        }
        return false;
    }
    j == s.len()
}

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
    /// Config rule (DESIGN.md): a pattern whose only wildcard is a trailing `*` is a
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

    use super::*;

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

    /// Cases from Go's own `path` match tests (None = ErrBadPattern → no match).
    #[test]
    fn go_match_table() {
        let t: &[(&str, &str, Option<bool>)] = &[
            ("abc", "abc", Some(true)),
            ("*", "abc", Some(true)),
            ("*c", "abc", Some(true)),
            ("a*", "a", Some(true)),
            ("a*", "abc", Some(true)),
            ("a*", "ab/c", Some(false)),
            ("a*/b", "abc/b", Some(true)),
            ("a*/b", "a/c/b", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
            ("ab[c]", "abc", Some(true)),
            ("ab[b-d]", "abc", Some(true)),
            ("ab[e-g]", "abc", Some(false)),
            ("ab[^c]", "abc", Some(false)),
            ("ab[^b-d]", "abc", Some(false)),
            ("ab[^e-g]", "abc", Some(true)),
            ("a\\*b", "a*b", Some(true)),
            ("a\\*b", "ab", Some(false)),
            ("a?b", "a☺b", Some(true)),
            ("a[^a]b", "a☺b", Some(true)),
            ("a???b", "a☺b", Some(false)),
            ("a[^a][^a][^a]b", "a☺b", Some(false)),
            ("[a-ζ]*", "α", Some(true)),
            ("*[a-ζ]", "A", Some(false)),
            ("a?b", "a/b", Some(false)),
            ("a*b", "a/b", Some(false)),
            ("[\\]a]", "]", Some(true)),
            ("[\\-]", "-", Some(true)),
            ("[x\\-]", "x", Some(true)),
            ("[x\\-]", "-", Some(true)),
            ("[x\\-]", "z", Some(false)),
            ("[\\-x]", "x", Some(true)),
            ("[\\-x]", "-", Some(true)),
            ("[\\-x]", "a", Some(false)),
            ("[]a]", "]", None),
            ("[-]", "-", None),
            ("[x-]", "x", None),
            ("[x-]", "-", None),
            ("[x-]", "z", None),
            ("[-x]", "x", None),
            ("[-x]", "-", None),
            ("[-x]", "a", None),
            ("\\", "a", None),
            ("[a-b-c]", "a", None),
            ("[", "a", None),
            ("[^", "a", None),
            ("[^bc", "a", None),
            ("a[", "a", None),
            ("a[", "ab", None),
            ("a[", "x", None),
            ("a/b[", "x", None),
            ("*x", "xxx", Some(true)),
        ];
        for &(p, n, want) in t {
            assert_eq!(glob_is_valid(p), want.is_some(), "valid({p:?})");
            assert_eq!(glob_match(p, n), want == Some(true), "{p:?} ~ {n:?}");
        }
    }

    #[test]
    fn malformed_never_matches() {
        for p in [
            "[",
            "[a-",
            "[a",
            "[^",
            "[]",
            "[^]",
            "[a-]",
            "[-a]",
            "\\",
            "a\\",
            "/v1/key/\\",
            "*[",
            "*\\",
            "[a-b-c]",
            "x[",
            "x*[",
            "[[",
            "[\\",
            "[a-\\",
        ] {
            assert!(!glob_is_valid(p), "{p:?} should be malformed");
            for n in ["", "a", "[", "x", "\\", "-", "]", "[a-", "a\\", "xyz", "/v1/key/"] {
                assert!(!glob_match(p, n), "{p:?} ~ {n:?}");
            }
        }
        // Go reports the bad pattern even when an earlier part already mismatched, and
        // even when everything before the bad part would match.
        assert!(!glob_match("a[", "b"));
        assert!(!glob_match("/v1/key/create/[", "/v1/key/create/["));
        assert!(!glob_match("/v1/*/x[", "/v2/a/x"));
        assert!(!glob_match("ab*[", "abc"));
        assert!(!glob_match("*/b[", "a/c"));
        // `[` inside a class is fine, `]` outside is literal.
        assert!(glob_match("[[]", "["));
        assert!(glob_match("a]", "a]"));
        assert!(glob_match("[*]", "*"));
        assert!(!glob_match("[*]", "a"));
        assert!(glob_match("\\[a]", "[a]"));
    }

    #[test]
    fn unicode() {
        assert!(glob_match("/v1/key/create/ä*", "/v1/key/create/äbc"));
        assert!(glob_match("/v1/key/*", "/v1/key/日本語"));
        assert!(glob_match("?", "€"));
        assert!(!glob_match("??", "€"));
        assert!(glob_match("[€]", "€"));
        assert!(glob_match("[^€]", "e"));
        assert!(!glob_match("[^€]", "€"));
        assert!(glob_match("\\€", "€"));
        assert!(glob_match("[α-ω]x", "λx"));
        assert!(glob_match("*€", "ab€"));
        assert!(!glob_match("*€", "ab€/"));
        assert!(glob_match("a*[^a]", "a日"));
        // Go's byte-wise star: '?' may consume continuation bytes one by one.
        assert!(glob_match("*??", "€"));
        assert!(!glob_match("*???", "€")); // the star must take at least one byte
        assert!(glob_match("a*??b", "a€b"));
        assert!(!glob_match("a??b", "a€b"));
        assert!(glob_match("*[\u{FFFD}]", "€"));
        assert!(!glob_match("[\u{FFFD}]", "€"));
        // New-generation prefix works on bytes too.
        assert!(Pattern::new_generation("/v1/key/create/ä*").matches("/v1/key/create/äx"));
        assert!(!Pattern::new_generation("/v1/key/create/ä*").matches("/v1/key/create/a"));
    }

    #[test]
    fn long_inputs() {
        let long = "a".repeat(100_000);
        assert!(glob_match("*", &long));
        assert!(glob_match("a*", &long));
        assert!(!glob_match("a*a*a*a*a*a*a*a*b", &long));
        assert!(glob_match("a*a*a*a*a*a*a*a*a", &long));
        let mut with_slash = long.clone();
        with_slash.push('/');
        assert!(!glob_match("*", &with_slash));
        assert!(glob_match("*/", &with_slash));
        let long_pat = "?".repeat(100_000);
        assert!(glob_match(&long_pat, &long));
        assert!(!glob_match(&long_pat, &long[1..]));
        let many_stars = "*a".repeat(5_000);
        assert!(!glob_match(&(many_stars.clone() + "b"), &long[..10_000]));
        assert!(glob_match(&many_stars, &long[..10_000]));
        let unclosed = "[".repeat(100_000);
        assert!(!glob_match(&unclosed, &long));
        assert!(Pattern::from_config(&(long.clone() + "*")).matches(&(long.clone() + "/x")));
        assert!(Pattern::new_generation(&long).matches(&long));
    }

    /// Straightforward recursive reference (char-based; equal to Go for ASCII names).
    fn reference(p: &[char], s: &[char]) -> Option<bool> {
        fn class_char(p: &[char], i: usize) -> Option<(char, usize)> {
            match p.get(i)? {
                '-' | ']' => None,
                '\\' => p.get(i + 1).map(|&c| (c, i + 2)),
                &c => Some((c, i + 1)),
            }
        }
        type Class = (bool, Vec<(char, char)>, usize);
        fn class(p: &[char], mut i: usize) -> Option<Class> {
            let neg = p.get(i) == Some(&'^');
            if neg {
                i += 1;
            }
            let mut r = Vec::new();
            loop {
                if !r.is_empty() && p.get(i) == Some(&']') {
                    return Some((neg, r, i + 1));
                }
                let (lo, n) = class_char(p, i)?;
                i = n;
                let mut hi = lo;
                if p.get(i) == Some(&'-') {
                    let (h, n) = class_char(p, i + 1)?;
                    hi = h;
                    i = n;
                }
                r.push((lo, hi));
            }
        }
        fn m(p: &[char], s: &[char]) -> bool {
            let Some(&c) = p.first() else {
                return s.is_empty();
            };
            if c == '*' {
                let mut k = 0;
                loop {
                    if m(&p[1..], &s[k..]) {
                        return true;
                    }
                    if k >= s.len() || s[k] == '/' {
                        return false;
                    }
                    k += 1;
                }
            }
            let Some(&x) = s.first() else { return false };
            match c {
                '?' => x != '/' && m(&p[1..], &s[1..]),
                '[' => {
                    let (neg, r, j) = class(p, 1).unwrap();
                    r.iter().any(|&(lo, hi)| lo <= x && x <= hi) != neg && m(&p[j..], &s[1..])
                }
                '\\' => x == p[1] && m(&p[2..], &s[1..]),
                _ => x == c && m(&p[1..], &s[1..]),
            }
        }
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                '\\' if i + 1 >= p.len() => return None,
                '\\' => i += 2,
                '[' => i = class(p, i + 1)?.2,
                _ => i += 1,
            }
        }
        Some(m(p, s))
    }

    #[test]
    fn randomized_against_reference() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let pat_alpha = ['a', 'b', '/', '*', '?', '[', ']', '^', '-', '\\', 'ä'];
        let name_alpha = ['a', 'b', '/', '-', ']', '[', '^', '*', '\\'];
        for _ in 0..100_000 {
            let p: String = (0..next(9)).map(|_| pat_alpha[next(pat_alpha.len())]).collect();
            let s: String = (0..next(9)).map(|_| name_alpha[next(name_alpha.len())]).collect();
            let pc: Vec<char> = p.chars().collect();
            let sc: Vec<char> = s.chars().collect();
            let want = reference(&pc, &sc);
            assert_eq!(glob_is_valid(&p), want.is_some(), "valid({p:?})");
            assert_eq!(glob_match(&p, &s), want == Some(true), "{p:?} ~ {s:?}");
            // Non-ASCII names: must not panic.
            let _ = glob_match(&p, &(s.clone() + "€ä"));
            let _ = glob_match(&p, &format!("ä{s}日"));
        }
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
