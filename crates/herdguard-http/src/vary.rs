//! Secondary cache keys from `Vary` (RFC 9111 §4.1).
//!
//! A stored response with `Vary` may be reused only for a request whose nominated header fields
//! match those of the request that produced it. Rather than keeping the original request, the
//! proxy computes a [`SecondaryKey`] at store time and compares it with the key computed from the
//! new request against the *stored response's* `Vary` ([`Vary::from_response`]).
//!
//! Normalization (the transformations §4.1 allows): field names are case-insensitive, sorted and
//! deduplicated; multiple field lines are combined (RFC 9110 §5.3); leading/trailing whitespace
//! is dropped; for the list-based `Accept*` fields, whose members' order carries no meaning
//! (preference is by `q`, RFC 9110 §12.4.2), whitespace around commas, `;` and `=` and empty
//! members are dropped, members are sorted, and codings / charsets / language tags / media
//! types are lowercased (case-insensitive by definition). A field absent from one request
//! matches only if absent from the other.
//!
//! A [`SecondaryKey`] holds header values (a `Cookie`, say); stores and key names get its
//! [`SecondaryKey::digest`] instead.

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

    /// SHA-256 of the key: what a shared store keeps and key names show instead of the
    /// header values themselves (collision-resistant, so two variants never share a digest).
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(&self.0).into()
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
    // Which lists may be reordered, and how much of a member is case-insensitive.
    let lowercase = match name.as_str() {
        "accept" => Lowercase::UpToParameters,
        "accept-encoding" | "accept-charset" | "accept-language" => Lowercase::All,
        _ => {
            let mut out: Vec<u8> = Vec::new();
            for line in lines {
                if !out.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(trim(line.as_bytes()));
            }
            return Some(out);
        }
    };
    let mut members: Vec<Vec<u8>> = Vec::new();
    for line in lines {
        for member in line.as_bytes().split(|&c| c == b',') {
            let member = trim(member);
            if !member.is_empty() {
                members.push(normalize_member(member, lowercase));
            }
        }
    }
    members.sort_unstable();
    Some(members.join(&b','))
}

#[derive(Clone, Copy)]
enum Lowercase {
    All,
    UpToParameters,
}

/// One list member without whitespace around `;` and `=`, lowercased as its syntax allows.
fn normalize_member(member: &[u8], lowercase: Lowercase) -> Vec<u8> {
    let mut out = Vec::with_capacity(member.len());
    let mut in_params = false;
    for (i, part) in member.split(|&c| c == b';').enumerate() {
        if i > 0 {
            out.push(b';');
            in_params = true;
        }
        for (j, side) in trim(part).split(|&c| c == b'=').enumerate() {
            if j > 0 {
                out.push(b'=');
            }
            let side = trim(side);
            match lowercase {
                Lowercase::All => out.extend(side.iter().map(u8::to_ascii_lowercase)),
                Lowercase::UpToParameters if !in_params => {
                    out.extend(side.iter().map(u8::to_ascii_lowercase))
                }
                Lowercase::UpToParameters => out.extend_from_slice(side),
            }
        }
    }
    out
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
    fn rfc9111_4_1_accept_member_order_and_parameter_spacing_do_not_matter() {
        let stored = hm(&[("vary", "accept-encoding, accept")]);
        let a = hm(&[
            ("accept-encoding", "gzip, br;q=0.5"),
            ("accept", "text/html, application/json;q=0.9"),
        ]);
        let b = hm(&[
            ("accept-encoding", "BR ; q = 0.5,gzip"),
            ("accept", "Application/JSON; q=0.9, text/html"),
        ]);
        assert!(vary_matches(&stored, &a, &b));
        // Parameter values of media types keep their case.
        let c = hm(&[("accept", "text/html;level=A")]);
        let d = hm(&[("accept", "text/html;level=a")]);
        assert!(!vary_matches(&hm(&[("vary", "accept")]), &c, &d));
    }

    #[test]
    fn digests_hide_values_and_tell_keys_apart() {
        let v = Vary::Fields(vec![HeaderName::from_static("cookie")]);
        let a = v
            .secondary_key(&hm(&[("cookie", "session=SECRET")]))
            .unwrap();
        let b = v
            .secondary_key(&hm(&[("cookie", "session=OTHER")]))
            .unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.clone().digest());
        assert!(!a.digest().windows(6).any(|w| w == b"SECRET"));
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
