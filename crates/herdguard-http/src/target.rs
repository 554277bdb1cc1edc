//! Request-target normalisation for a reverse proxy (RFC 9112 §3.2, RFC 3986 §5.2.4, §6.2.2).
//!
//! A proxy that forwards `/../etc/passwd` to `http://origin/pub` as `/pub/../etc/passwd` lets a
//! client leave the base path it was given. [`RequestTarget::parse`] turns an origin-form target
//! into one whose path has no dot-segments, so `base + path` always stays under `base`, and the
//! cache key and the forwarded request are made from the same, normalised, string.
//!
//! Refused (a [`TargetError`], answered `400`), because an origin may decode them into something
//! the proxy did not see: percent-encoded dots (`%2e`), backslashes (raw or `%5c`, which some
//! servers treat as `/`), an encoded slash that would form a dot-segment once decoded
//! (`..%2f`), malformed percent-encodings, and control characters. Everything else is kept, with
//! percent-encodings normalised (uppercase hex; encoded unreserved characters decoded).
//!
//! This is the one normal form of a URL's path and query in the cache: a request's key, a
//! purge's and an unsafe method's invalidation (of its target, `Location` and
//! `Content-Location`) are all made from a [`RequestTarget`] (see [`crate::key::KeyConfig`]),
//! so two spellings of one resource never get two keys that a purge or an invalidation could
//! miss. In the query, too, `%3d` becomes `%3D` and `%7E` becomes `~` (RFC 3986 §6.2.2.1,
//! §6.2.2.2: equivalent for every URI); escapes of reserved characters (`%3D`, `%26`, `%2F`,
//! `%3F`, ...) stay escaped, since an application reads `a=%26` and `a=&` differently (§2.2),
//! and `+` stays `+` (only form decoding makes it a space).

use std::fmt;

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// Not origin-form (`/path?query`): e.g. `*` or an empty target.
    NotOriginForm,
    /// A percent-encoded dot (`%2e`): a dot-segment the proxy would not see.
    EncodedDot,
    /// A backslash, raw or percent-encoded (`%5c`).
    Backslash,
    /// An encoded slash (`%2f`) that forms a dot-segment once decoded (`..%2f`).
    EncodedSlashDotSegment,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// A control character or a byte outside visible ASCII.
    BadCharacter,
}

impl TargetError {
    /// A short token for logs and error answers.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetError::NotOriginForm => "not-origin-form",
            TargetError::EncodedDot => "encoded-dot",
            TargetError::Backslash => "backslash",
            TargetError::EncodedSlashDotSegment => "encoded-slash-dot-segment",
            TargetError::BadPercentEncoding => "bad-percent-encoding",
            TargetError::BadCharacter => "bad-character",
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TargetError {}

/// A normalised origin-form request target: a path without dot-segments, and the query with
/// its percent-encodings normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestTarget {
    /// Path and query, e.g. `/a/b?x=1`; the path part always starts with `/`.
    text: String,
    /// Where the query's `?` is in `text`, if there is one.
    query_at: Option<usize>,
}

impl RequestTarget {
    /// Normalises an origin-form target (`/path[?query]`), or says why it is refused.
    pub fn parse(target: &str) -> Result<RequestTarget, TargetError> {
        // Most targets need nothing done: one scan, one copy.
        if is_plain(target) {
            return Ok(RequestTarget {
                text: target.to_string(),
                query_at: target.bytes().position(|b| b == b'?'),
            });
        }
        if !target.starts_with('/') {
            return Err(TargetError::NotOriginForm);
        }
        // A fragment is not part of a request target; a client that sends one gets it dropped.
        let target = target.split('#').next().unwrap_or("");
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut text = normalize_path(path)?;
        let query_at = match query {
            Some(q) => {
                let at = text.len();
                text.push('?');
                normalize_query(q, &mut text)?;
                Some(at)
            }
            None => None,
        };
        Ok(RequestTarget { text, query_at })
    }

    /// Path and query, as forwarded.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The same text, as the owned string it is (a key made of the target
    /// alone borrows it: see [`crate::key::KeyConfig::primary_ref`]).
    pub fn as_string(&self) -> &String {
        &self.text
    }

    /// The path (always starting with `/`, no dot-segments).
    pub fn path(&self) -> &str {
        match self.query_at {
            Some(at) => self.text.get(..at).unwrap_or("/"),
            None => &self.text,
        }
    }

    /// The query without its `?`, if there is one (possibly empty).
    pub fn query(&self) -> Option<&str> {
        self.query_at.and_then(|at| self.text.get(at + 1..))
    }
}

impl fmt::Display for RequestTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Writes the percent-escape of `h`, `l` (hex digit values) in normal form: the character itself
/// when it is unreserved (RFC 3986 §6.2.2.2), else `%` and uppercase hex (§6.2.2.1). Returns
/// the decoded byte.
fn push_escape(h: u8, l: u8, out: &mut String) -> u8 {
    let decoded = h * 16 + l;
    if is_unreserved(decoded) {
        out.push(char::from(decoded));
    } else {
        out.push('%');
        out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
        out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
    }
    decoded
}

/// The hex digit values of the escape at `bytes[i]` (a `%`), or why there is none.
fn escape_at(bytes: &[u8], i: usize) -> Result<(u8, u8), TargetError> {
    match (
        bytes.get(i + 1).copied().and_then(hex),
        bytes.get(i + 2).copied().and_then(hex),
    ) {
        (Some(h), Some(l)) => Ok((h, l)),
        _ => Err(TargetError::BadPercentEncoding),
    }
}

/// Percent-normalises one path segment; refuses what could hide a dot-segment or a separator.
fn normalize_segment(segment: &str, out: &mut String) -> Result<(), TargetError> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    let start = out.len();
    let mut encoded_slash = false;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'%' => {
                let (h, l) = escape_at(bytes, i)?;
                match h * 16 + l {
                    b'.' => return Err(TargetError::EncodedDot),
                    b'\\' => return Err(TargetError::Backslash),
                    b'/' => encoded_slash = true,
                    _ => {}
                }
                push_escape(h, l, out);
                i += 3;
            }
            b'\\' => return Err(TargetError::Backslash),
            c if c <= b' ' || c >= 0x7f => return Err(TargetError::BadCharacter),
            c => {
                out.push(char::from(c));
                i += 1;
            }
        }
    }
    // `..%2Fetc` is one segment here, but `..` and `etc` to an origin that decodes first.
    if encoded_slash {
        let normalized = out.get(start..).unwrap_or("");
        if normalized
            .split("%2F")
            .any(|part| part == "." || part == "..")
        {
            return Err(TargetError::EncodedSlashDotSegment);
        }
    }
    Ok(())
}

/// RFC 3986 §5.2.4 on an absolute path, segment by segment, after percent-normalising each.
fn normalize_path(path: &str) -> Result<String, TargetError> {
    let mut segments: Vec<String> = Vec::new();
    let raw: Vec<&str> = path.split('/').skip(1).collect();
    let last = raw.len().saturating_sub(1);
    for (i, seg) in raw.iter().enumerate() {
        let mut s = String::with_capacity(seg.len());
        normalize_segment(seg, &mut s)?;
        match s.as_str() {
            "." => {
                if i == last {
                    segments.push(String::new());
                }
            }
            ".." => {
                segments.pop();
                if i == last {
                    segments.push(String::new());
                }
            }
            _ => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Percent-normalises a query into `out`, as a path segment is (no dot-segments here: a query
/// has none).
fn normalize_query(query: &str, out: &mut String) -> Result<(), TargetError> {
    let bytes = query.as_bytes();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'%' => {
                let (h, l) = escape_at(bytes, i)?;
                push_escape(h, l, out);
                i += 3;
            }
            c if c <= b' ' || c >= 0x7f => return Err(TargetError::BadCharacter),
            c => {
                out.push(char::from(c));
                i += 1;
            }
        }
    }
    Ok(())
}

/// Fast check for the common case: a target with nothing to normalise (no dot-segment, no `%`,
/// no backslash, no control byte) is its own normal form.
pub fn is_plain(target: &str) -> bool {
    let b = target.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let path_end = b
        .iter()
        .position(|&c| c == b'?' || c == b'#')
        .unwrap_or(b.len());
    if b.get(path_end) == Some(&b'#') {
        return false;
    }
    let path = b.get(..path_end).unwrap_or(b);
    let plain_bytes = b
        .iter()
        .all(|&c| c > b' ' && c < 0x7f && c != b'%' && c != b'\\' && c != b'#');
    plain_bytes
        && !path
            .split(|&c| c == b'/')
            .any(|seg| seg == b"." || seg == b"..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<String, TargetError> {
        RequestTarget::parse(s).map(|t| t.as_str().to_string())
    }

    #[test]
    fn rfc3986_5_2_4_dot_segments_removed() {
        assert_eq!(norm("/../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(norm("/a/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(norm("/./../x").unwrap(), "/x");
        assert_eq!(norm("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(norm("/mid/content=5/../6").unwrap(), "/mid/6");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("/a//b").unwrap(), "/a//b");
        assert_eq!(norm("/a/..?x=/../y").unwrap(), "/?x=/../y");
    }

    #[test]
    fn rfc3986_6_2_2_percent_normalised() {
        assert_eq!(norm("/%7euser/%41%2f?q=%3d").unwrap(), "/~user/A%2F?q=%3D");
        // The query too: hex uppercased, unreserved decoded, reserved escapes kept apart.
        assert_eq!(
            norm("/q?x=%3d&y=%7e%2f%26+%2E").unwrap(),
            "/q?x=%3D&y=~%2F%26+."
        );
        assert_eq!(norm("/q?x=%3D").unwrap(), norm("/q?x=%3d").unwrap());
        assert_ne!(norm("/q?x=%3D").unwrap(), norm("/q?x==").unwrap());
        assert_ne!(norm("/q?x=%26").unwrap(), norm("/q?x=&").unwrap());
        assert_eq!(norm("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        let t = RequestTarget::parse("/p/q?a=1&b").unwrap();
        assert_eq!((t.path(), t.query()), ("/p/q", Some("a=1&b")));
        let t = RequestTarget::parse("/p?").unwrap();
        assert_eq!((t.path(), t.query()), ("/p", Some("")));
        assert_eq!(RequestTarget::parse("/p").unwrap().query(), None);
    }

    #[test]
    fn hidden_dot_segments_and_separators_refused() {
        use TargetError::*;
        assert_eq!(norm("/%2e%2e/etc"), Err(EncodedDot));
        assert_eq!(norm("/a/.%2E/x"), Err(EncodedDot));
        assert_eq!(norm("/a\\..\\b"), Err(Backslash));
        assert_eq!(norm("/a/..%5c..%5cetc"), Err(Backslash));
        assert_eq!(norm("/..%2fetc/passwd"), Err(EncodedSlashDotSegment));
        assert_eq!(norm("/a%2F..%2Fb"), Err(EncodedSlashDotSegment));
        assert_eq!(norm("/group%2Fproject").unwrap(), "/group%2Fproject");
        assert_eq!(norm("/%zz"), Err(BadPercentEncoding));
        assert_eq!(norm("/a?%4"), Err(BadPercentEncoding));
        assert_eq!(norm("*"), Err(NotOriginForm));
        assert_eq!(norm(""), Err(NotOriginForm));
        assert_eq!(norm("/a b"), Err(BadCharacter));
    }

    #[test]
    fn plain_targets_are_their_own_normal_form() {
        for t in [
            "/",
            "/a/b",
            "/a/b?x=1&y=../z",
            "/a..b/c.d",
            "/a/.well-known/x",
        ] {
            assert!(is_plain(t), "{t}");
            assert_eq!(norm(t).unwrap(), t);
        }
        for t in ["/a/../b", "/a/./b", "/%41", "/a\\b", "/a/..", "x", "/a#f"] {
            assert!(!is_plain(t), "{t}");
        }
    }
}
