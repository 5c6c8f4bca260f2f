//! Go's `path.Match` glob: the pattern language of old-generation KES
//! policies (v0.18/v0.19) and of glob listings.
//!
//! Allocation-free and never panics: it runs on the request path.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
