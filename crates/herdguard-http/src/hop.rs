//! Hop-by-hop header fields (RFC 9110 §7.6.1): meant for one connection, never forwarded.
//!
//! A proxy must remove `Connection`, every field `Connection` names, and the other hop-by-hop
//! fields before forwarding, and it must do so **before** it reads the message for anything
//! else (cache key, `Vary`): otherwise a client can name a field in `Connection` that the
//! proxy reads and then strips, so the origin answers a request the cache did not key.

use http::header::{
    HeaderName, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;

use crate::storable::connection_listed;

/// Hop-by-hop fields removed on their own name (besides those `Connection` lists).
pub const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

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
}
