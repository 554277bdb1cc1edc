//! Redis key names of one cache key: value, lease, version and "ready" channel
//! all share one Redis Cluster hash tag `{…}`, so the scripts that touch them
//! together run on one node.

use std::fmt::Write as _;

/// The names of one cache key's Redis keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyNames {
    /// The encoded entry.
    pub(crate) value: String,
    /// The lease token.
    pub(crate) lease: String,
    /// The version counter (the fencing token).
    pub(crate) version: String,
    /// The pub/sub channel of "ready" notifications.
    pub(crate) channel: String,
}

impl KeyNames {
    /// The names of `key` (its `Display`) under `prefix`.
    pub(crate) fn new(prefix: &str, key: &dyn std::fmt::Display) -> Self {
        let tag = escape(&key.to_string());
        let base = format!("{prefix}:{{{tag}}}");
        KeyNames {
            value: format!("{base}:v"),
            lease: format!("{base}:lease"),
            version: format!("{base}:ver"),
            channel: format!("{base}:ready"),
        }
    }
}

/// Percent-encodes `%`, `{` and `}`: a brace inside the tag would end it early
/// (Redis hashes the text up to the first `}`), and encoding `%` too keeps the
/// mapping one-to-one, so two cache keys never share Redis keys.
fn escape(raw: &str) -> String {
    if !raw.contains(['%', '{', '}']) {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len() + 8);
    for c in raw.chars() {
        match c {
            '%' | '{' | '}' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_share_one_tag() {
        let k = KeyNames::new("hg", &"user:42");
        assert_eq!(k.value, "hg:{user:42}:v");
        assert_eq!(k.lease, "hg:{user:42}:lease");
        assert_eq!(k.version, "hg:{user:42}:ver");
        assert_eq!(k.channel, "hg:{user:42}:ready");
    }

    #[test]
    fn braces_and_percent_are_encoded_one_to_one() {
        let k = KeyNames::new("hg", &"a}b{c");
        assert_eq!(k.value, "hg:{a%7Db%7Bc}:v");
        // The literal text "a%7Db%7Bc" must not collide with "a}b{c".
        let lit = KeyNames::new("hg", &"a%7Db%7Bc");
        assert_ne!(lit.value, k.value);
        assert_eq!(lit.value, "hg:{a%257Db%257Bc}:v");
    }
}
