//! Hop-by-hop header fields (RFC 9110 §7.6.1): meant for one connection, never forwarded.
//!
//! A proxy must remove `Connection`, every field `Connection` names, and the other hop-by-hop
//! fields before forwarding, and it must do so **before** it reads the message for anything
//! else (cache key, `Vary`): otherwise a client can name a field in `Connection` that the
//! proxy reads and then strips, so the origin answers a request the cache did not key.

use http::header::{HeaderName, CONNECTION};
use http::HeaderMap;

/// Declares the hop-by-hop fields once, as the list of names ([`HOP_BY_HOP`])
/// and as a match on a name ([`is_hop_by_hop`]) for scans of every field.
macro_rules! hop_by_hop {
    ($($name:literal),* $(,)?) => {
        /// Hop-by-hop fields removed on their own name (besides those `Connection` lists).
        pub const HOP_BY_HOP: [HeaderName; [$($name),*].len()] =
            [$(HeaderName::from_static($name)),*];

        /// Whether `name` (lower case, as `HeaderName` keeps it) is one of [`HOP_BY_HOP`].
        #[inline]
        pub fn is_hop_by_hop(name: &str) -> bool {
            matches!(name, $($name)|*)
        }
    };
}

hop_by_hop!(
    "connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
);

/// Names listed in `Connection` (RFC 9110 §7.6.1), which must be removed before forwarding.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in headers.get_all(CONNECTION) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(',') {
            let part = part.trim();
            if let Ok(name) = HeaderName::from_bytes(part.as_bytes()) {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// Removes the hop-by-hop fields and every field `Connection` names, in place.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        for name in connection_listed(headers) {
            headers.remove(&name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    #[test]
    fn rfc9110_7_6_1_connection_and_named_fields_removed() {
        let mut h = hm(&[
            ("connection", "Accept, x-hop"),
            ("connection", "close"),
            ("accept", "application/json"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("accept-language", "en"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["accept-language"]);
    }

    #[test]
    fn the_list_and_the_match_agree() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str()), "{name}");
        }
        for name in [
            "accept",
            "host",
            "content-length",
            "proxy-authentication-info",
        ] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }
}
