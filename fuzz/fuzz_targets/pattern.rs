//! Policy patterns: `glob_match`, `glob_is_valid`, `Pattern` (config, glob and
//! new-generation rules) and `Policy::is_allowed` on arbitrary pattern/path
//! pairs.
//!
//! Input: `pattern || 0x00 || path` (no NUL: the whole input is the pattern
//! and the path is empty), each decoded lossily as UTF-8.
//!
//! `glob_match` is compared with [`go_match`], a line-by-line port of Go's
//! `path.Match` (go/src/path/match.go), which is what KES uses; a malformed
//! pattern (Go's `ErrBadPattern`) never matches. The other rules are compared
//! with their one-line definitions.
#![no_main]

use keyward_server::auth::pattern::{glob_is_valid, glob_match, Pattern, Policy};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct BadPattern;

const RUNE_ERROR: u32 = 0xFFFD;

/// Go's `utf8.DecodeRuneInString` (callers never pass an empty slice).
fn decode_rune(s: &[u8]) -> (u32, usize) {
    let n = match s[0] {
        0x00..=0x7f => return (u32::from(s[0]), 1),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return (RUNE_ERROR, 1),
    };
    match s.get(..n).and_then(|b| std::str::from_utf8(b).ok()) {
        Some(c) => (c.chars().next().map_or(RUNE_ERROR, u32::from), n),
        None => (RUNE_ERROR, 1),
    }
}

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut inrange = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' => {
                if i + 1 < pattern.len() {
                    i += 1;
                }
            }
            b'[' => inrange = true,
            b']' => inrange = false,
            b'*' if !inrange => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

fn get_esc(mut chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return Err(BadPattern);
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(BadPattern);
        }
    }
    let (r, n) = decode_rune(chunk);
    if r == RUNE_ERROR && n == 1 {
        return Err(BadPattern);
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, BadPattern> {
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            b'[' => {
                let mut r = 0;
                if !failed {
                    let (rr, n) = decode_rune(s);
                    r = rr;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if chunk.first() == Some(&b'^') {
                    negated = true;
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == b'-' {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let mut c = c;
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                    c = chunk[0];
                }
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// Go's `path.Match`.
fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, BadPattern> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        let first = match_chunk(chunk, name);
        if let Ok(Some(t)) = first {
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        first?;
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                i += 1;
            }
        }
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn reference_glob(pattern: &str, path: &str) -> bool {
    go_match(pattern.as_bytes(), path.as_bytes()).unwrap_or(false)
}

fuzz_target!(|data: &[u8]| {
    let (p, s) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let pattern = String::from_utf8_lossy(p);
    let path = String::from_utf8_lossy(s);
    let (pattern, path) = (pattern.as_ref(), path.as_ref());

    let glob = glob_match(pattern, path);
    assert_eq!(glob, reference_glob(pattern, path), "glob_match({pattern:?}, {path:?}) differs from Go's path.Match");
    assert_eq!(glob_is_valid(pattern), go_match(pattern.as_bytes(), b"").is_ok(), "glob_is_valid({pattern:?})");

    let exact = !pattern.is_empty() && pattern == path;
    let prefix = |p: &str| path.starts_with(p.strip_suffix('*').unwrap_or(p));

    // New generation: trailing `*` is a prefix, anything else exact.
    let new = Pattern::new_generation(pattern);
    let expected = if pattern.ends_with('*') { prefix(pattern) } else { exact };
    assert_eq!(new.matches(path), expected, "new-generation {pattern:?} on {path:?}");

    // Old generation: always a glob.
    assert_eq!(Pattern::glob(pattern).matches(path), glob);

    // Config rule: any wildcard but a single trailing `*` makes a glob.
    let config = Pattern::from_config(pattern);
    let last = pattern.len().saturating_sub(1);
    let is_glob = pattern
        .bytes()
        .enumerate()
        .any(|(i, b)| matches!(b, b'?' | b'[') || (b == b'*' && i != last));
    let expected = if is_glob {
        glob
    } else if pattern.ends_with('*') {
        prefix(pattern)
    } else {
        exact
    };
    assert_eq!(config.matches(path), expected, "config pattern {pattern:?} on {path:?}");
    assert_eq!(config.as_str(), pattern);
    assert_eq!(config.to_string(), pattern);

    // Deny wins over allow; no allow, no access.
    assert_eq!(Policy::from_config(&[pattern], &[] as &[&str]).is_allowed(path), expected);
    assert!(!Policy::from_config(&[pattern], &[pattern]).is_allowed(path));
    assert!(!Policy::from_config(&[] as &[&str], &[pattern]).is_allowed(path));
    assert_eq!(Policy::from_globs(&[pattern], &[] as &[&str]).is_allowed(path), glob);
});
