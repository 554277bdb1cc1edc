//! Secondary cache keys from `Vary` (RFC 9111 §4.1).
//!
//! A stored response with `Vary` may be reused only for a request whose nominated header fields
//! match those of the request that produced it. Rather than keeping the original request, the
//! proxy computes a [`SecondaryKey`] at store time and compares it with the key computed from the
//! new request against the *stored response's* `Vary` ([`Vary::from_response`]).
//!
//! Normalization (the transformations §4.1 allows): field names are case-insensitive, sorted and
//! deduplicated; multiple field lines are combined (RFC 9110 §5.3); leading/trailing whitespace
//! is dropped; for the list-based `Accept*` fields whitespace around commas and empty members are
//! dropped, and codings / charsets / language tags are lowercased (case-insensitive by
//! definition). A field absent from one request matches only if absent from the other.

use http::header::{HeaderName, VARY};
use http::HeaderMap;

/// The `Vary` of a stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary` (or an empty one): every request matches.
    None,
    /// The request header fields to compare, lowercased, sorted, deduplicated.
    Fields(Vec<HeaderName>),
    /// `Vary: *`, or a malformed `Vary` (treated the same, conservatively): nothing matches.
    Any,
}

impl Vary {
    /// Parses all `Vary` lines of a response.
    pub fn from_response(headers: &HeaderMap) -> Vary {
        let mut names: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(VARY) {
            for part in v.as_bytes().split(|&c| c == b',') {
                let part = trim(part);
                if part.is_empty() {
                    continue;
                }
                if part == b"*" {
                    return Vary::Any;
                }
                match HeaderName::from_bytes(part) {
                    Ok(name) => names.push(name),
                    Err(_) => return Vary::Any,
                }
            }
        }
        if names.is_empty() {
            return Vary::None;
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Vary::Fields(names)
    }

    /// The secondary key of `request_headers` under this `Vary`; `None` for [`Vary::Any`],
    /// which never matches.
    pub fn secondary_key(&self, request_headers: &HeaderMap) -> Option<SecondaryKey> {
        let names = match self {
            Vary::None => return Some(SecondaryKey(Vec::new())),
            Vary::Fields(names) => names,
            Vary::Any => return None,
        };
        let mut key = Vec::new();
        for name in names {
            key.extend_from_slice(name.as_str().as_bytes());
            match normalized_value(name, request_headers) {
                None => key.push(0),
                Some(value) => {
                    key.push(b'=');
                    key.extend_from_slice(&value);
                }
            }
            // Header values cannot contain LF, so this separator is unambiguous.
            key.push(b'\n');
        }
        Some(SecondaryKey(key))
    }
}

/// An opaque, comparable digest of the request header fields nominated by `Vary`.
///
/// Equal keys mean "matching requests" in the sense of RFC 9111 §4.1. The empty key belongs to
/// responses without `Vary`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SecondaryKey(Vec<u8>);

impl SecondaryKey {
    /// The key's bytes (for hashing into a store key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is the key of a response without `Vary`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `new_request` may use a response stored with `stored_response_headers`, which was
/// produced for `original_request` (RFC 9111 §4.1).
pub fn vary_matches(
    stored_response_headers: &HeaderMap,
    original_request: &HeaderMap,
    new_request: &HeaderMap,
) -> bool {
    let vary = Vary::from_response(stored_response_headers);
    match (
        vary.secondary_key(original_request),
        vary.secondary_key(new_request),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Combined, normalized value of a request field; `None` when absent.
fn normalized_value(name: &HeaderName, headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let (is_list, lowercase) = match name.as_str() {
        "accept" => (true, false),
        "accept-encoding" | "accept-charset" | "accept-language" => (true, true),
        _ => (false, false),
    };
    let mut out: Vec<u8> = Vec::new();
    let push = |member: &[u8], out: &mut Vec<u8>| {
        if !out.is_empty() {
            out.push(b',');
        }
        if lowercase {
            out.extend(member.iter().map(u8::to_ascii_lowercase));
        } else {
            out.extend_from_slice(member);
        }
    };
    for line in lines {
        if is_list {
            for member in line.as_bytes().split(|&c| c == b',') {
                let member = trim(member);
                if !member.is_empty() {
                    push(member, &mut out);
                }
            }
        } else {
            push(trim(line.as_bytes()), &mut out);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    #[test]
    fn rfc9111_4_1_parse_vary() {
        assert_eq!(Vary::from_response(&hm(&[])), Vary::None);
        assert_eq!(Vary::from_response(&hm(&[("vary", " ")])), Vary::None);
        assert_eq!(
            Vary::from_response(&hm(&[
                ("vary", "Accept-Encoding, accept"),
                ("vary", "ACCEPT")
            ])),
            Vary::Fields(vec![
                HeaderName::from_static("accept"),
                HeaderName::from_static("accept-encoding")
            ])
        );
        assert_eq!(
            Vary::from_response(&hm(&[("vary", "accept, *")])),
            Vary::Any
        );
        assert_eq!(Vary::from_response(&hm(&[("vary", "bad name")])), Vary::Any);
    }

    #[test]
    fn rfc9111_4_1_whitespace_and_line_combination_match() {
        let stored = hm(&[("vary", "accept-encoding, x-foo")]);
        let a = hm(&[("accept-encoding", "gzip, br"), ("x-foo", " bar ")]);
        let b = hm(&[
            ("accept-encoding", "GZIP"),
            ("accept-encoding", "br"),
            ("x-foo", "bar"),
        ]);
        assert!(vary_matches(&stored, &a, &b));
        let c = hm(&[("accept-encoding", "gzip,br,"), ("x-foo", "Bar")]);
        // x-foo is not known to be case-insensitive: no match.
        assert!(!vary_matches(&stored, &a, &c));
    }

    #[test]
    fn rfc9111_4_1_order_of_members_matters() {
        let stored = hm(&[("vary", "accept-encoding")]);
        let a = hm(&[("accept-encoding", "gzip, br")]);
        let b = hm(&[("accept-encoding", "br, gzip")]);
        assert!(!vary_matches(&stored, &a, &b));
    }

    #[test]
    fn rfc9111_4_1_absent_matches_only_absent() {
        let stored = hm(&[("vary", "accept-language")]);
        let absent = hm(&[]);
        let empty = hm(&[("accept-language", "")]);
        assert!(vary_matches(&stored, &absent, &hm(&[("other", "x")])));
        assert!(!vary_matches(&stored, &absent, &empty));
        assert!(vary_matches(
            &stored,
            &empty,
            &hm(&[("accept-language", "  ")])
        ));
    }

    #[test]
    fn rfc9111_4_1_vary_star_never_matches() {
        let stored = hm(&[("vary", "*")]);
        assert!(!vary_matches(&stored, &hm(&[]), &hm(&[])));
        assert_eq!(Vary::Any.secondary_key(&hm(&[])), None);
    }

    #[test]
    fn rfc9111_4_1_no_vary_always_matches_and_key_is_empty() {
        let stored = hm(&[]);
        assert!(vary_matches(
            &stored,
            &hm(&[("a", "1")]),
            &hm(&[("a", "2")])
        ));
        assert!(Vary::None.secondary_key(&hm(&[])).unwrap().is_empty());
    }

    #[test]
    fn secondary_keys_distinguish_values_and_fields() {
        let v = Vary::Fields(vec![
            HeaderName::from_static("a"),
            HeaderName::from_static("b"),
        ]);
        let k1 = v.secondary_key(&hm(&[("a", "1"), ("b", "2")])).unwrap();
        let k2 = v.secondary_key(&hm(&[("a", "12")])).unwrap();
        let k3 = v.secondary_key(&hm(&[("a", "1"), ("b", "2")])).unwrap();
        assert_ne!(k1, k2);
        assert_eq!(k1, k3);
        assert!(!k1.as_bytes().is_empty());
    }
}
