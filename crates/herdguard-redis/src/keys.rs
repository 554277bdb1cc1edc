//! Every Redis key name this crate uses, made here and nowhere else.
//!
//! Of one cache key: value, lease, version and marker all share one Redis
//! Cluster hash tag `{…}`, so the scripts that touch them together run on one
//! node; Redis's invalidation pushes name them, and [`KeyNames::parse`] reads
//! a name back. Beside them, under the same prefix: the broadcast feed's
//! channel of changes (naming the key by its tag) and the fleet's broadcast
//! channel, a set per surrogate key (tag), the fleet's instance records, and
//! the write-behind queue's streams, owner leases, written versions and dead
//! letters (one hash tag `{wb}`).

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
    /// The marker a load that stored nothing leaves for the fleet.
    pub(crate) marker: String,
    /// The token of the key's last lease holder, set by each grant for a
    /// little longer than the lease and deleted when that holder gives it
    /// back: a grant that finds another holder's takes over a lease that
    /// lapsed (see `LEASE` in `scripts.rs`).
    pub(crate) held: String,
    /// The lock on each lock server of a quorum lease (never in the data store).
    pub(crate) lock: String,
    /// The key's text inside the hash tag, as change notices name it.
    pub(crate) tag: String,
}

impl KeyNames {
    /// The names of `key` (its `Display`) under `prefix`.
    pub(crate) fn new(prefix: &str, key: &dyn std::fmt::Display) -> Self {
        let tag = escape(&key.to_string());
        // Six names on every call of the shared store (each write-behind
        // ack among them): joined by hand, not by `format!`, which cost
        // several times as much.
        let base_len = prefix.len() + tag.len() + 3;
        let name = |suffix: &str| {
            let mut name = String::with_capacity(base_len + suffix.len());
            for part in [prefix, ":{", &tag, "}", suffix] {
                name.push_str(part);
            }
            name
        };
        KeyNames {
            value: name(":v"),
            lease: name(":lease"),
            version: name(":ver"),
            marker: name(":m"),
            held: name(":held"),
            lock: name(":lock"),
            tag,
        }
    }
}

/// Which of a cache key's Redis keys a name is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The entry: a change of it is a change of the key.
    Value,
    /// The marker or the lease: what a waiter watches beside the entry.
    Waited,
    /// Any other name under the hash tag.
    Other,
}

impl KeyNames {
    /// The tag and the part of a Redis key name under `prefix` (as an
    /// invalidation push names it), or `None` when `new` made no such name.
    pub(crate) fn parse<'a>(prefix: &str, name: &'a str) -> Option<(&'a str, Part)> {
        let rest = name.strip_prefix(prefix)?.strip_prefix(":{")?;
        // `escape` leaves no brace in a tag: the first `}` ends it.
        let (tag, suffix) = rest.split_once('}')?;
        let part = match suffix {
            ":v" => Part::Value,
            ":m" | ":lease" => Part::Waited,
            _ if suffix.starts_with(':') => Part::Other,
            _ => return None,
        };
        Some((tag, part))
    }
}

/// The channel on which the broadcast feed announces every change of the keys
/// under `prefix`, and on which processes of that feed hear broadcasts.
pub(crate) fn change_channel(prefix: &str) -> String {
    format!("{prefix}:changes")
}

/// The channel on which processes of the per-key feed (client tracking) hear
/// broadcasts: not the change channel, which would bring them every change.
pub(crate) fn broadcast_channel(prefix: &str) -> String {
    format!("{prefix}:broadcast")
}

/// The fence channel of window `id` under `prefix`.
pub(crate) fn fence_channel(prefix: &str, id: u64) -> String {
    format!("{prefix}:fence:{id}")
}

/// The window id of a fence channel under `prefix`.
pub(crate) fn fence_id(prefix: &str, channel: &str) -> Option<u64> {
    channel
        .strip_prefix(prefix)?
        .strip_prefix(":fence:")?
        .parse()
        .ok()
}

/// Longest surrogate key (tag), bytes.
pub const MAX_TAG_BYTES: usize = 128;

/// Whether `tag` is a surrogate key: 1 to [`MAX_TAG_BYTES`] bytes of visible
/// ASCII, without a comma. The one rule for a tag, wherever it comes from: an
/// origin's `Surrogate-Key` (split on spaces) or `Cache-Tag` (split on commas)
/// can carry no other, a purge may name no other, and only such a tag names a
/// set in Redis (and travels, after a space, in a purge broadcast).
pub fn valid_tag(tag: &str) -> bool {
    (1..=MAX_TAG_BYTES).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// The set of the cache keys carrying `tag`; `None` when it is not a tag
/// ([`valid_tag`]).
pub(crate) fn tag_set(prefix: &str, tag: &str) -> Option<String> {
    valid_tag(tag).then(|| format!("{prefix}tag:{tag}"))
}

/// The hash of the fleet's instance records (the live view).
pub(crate) fn instances_key(prefix: &str) -> String {
    format!("{prefix}instances")
}

/// The consumer group every process draining a write queue reads through.
pub(crate) const QUEUE_GROUP: &str = "drain";

/// The Redis keys of one write-behind queue, all under one hash tag.
pub(crate) struct QueueNames {
    /// One stream per partition.
    pub(crate) streams: Vec<String>,
    /// The owner lease of each partition.
    pub(crate) owners: Vec<String>,
    /// The newest written version of each recently written key: a sorted
    /// set (member the key's text, score its version), bounded. (Earlier
    /// releases kept an unbounded hash at `:done`, left to expire.)
    pub(crate) written: String,
    /// Writes the writer refused for good.
    pub(crate) dead: String,
}

impl QueueNames {
    /// The names of a queue of `partitions` under `prefix`.
    pub(crate) fn new(prefix: &str, partitions: u32) -> Self {
        let base = format!("{prefix}:{{wb}}");
        QueueNames {
            streams: (0..partitions).map(|n| format!("{base}:s{n}")).collect(),
            owners: (0..partitions)
                .map(|n| format!("{base}:owner{n}"))
                .collect(),
            written: format!("{base}:written"),
            dead: format!("{base}:dead"),
        }
    }
}

/// The key's text from its tag, or `None` when the tag is not one `escape` made.
pub(crate) fn unescape(tag: &str) -> Option<String> {
    if !tag.contains('%') {
        return Some(tag.to_string());
    }
    let mut out = String::with_capacity(tag.len());
    let mut rest = tag;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let c = match rest.get(i + 1..i + 3)? {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        };
        out.push(c);
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
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
    fn fence_channels_round_trip_and_others_are_not_fences() {
        assert_eq!(fence_id("hg", &fence_channel("hg", 42)), Some(42));
        for other in [
            "hg:broadcast",
            "hg:fence:",
            "hg:fence:x",
            "hx:fence:1",
            "hg:fence:-1",
        ] {
            assert_eq!(fence_id("hg", other), None, "{other:?}");
        }
    }

    #[test]
    fn plain_keys_share_one_tag() {
        let k = KeyNames::new("hg", &"user:42");
        assert_eq!(k.value, "hg:{user:42}:v");
        assert_eq!(k.lease, "hg:{user:42}:lease");
        assert_eq!(k.version, "hg:{user:42}:ver");
        assert_eq!(k.marker, "hg:{user:42}:m");
        assert_eq!(k.held, "hg:{user:42}:held");
        assert_eq!(k.lock, "hg:{user:42}:lock");
        assert_eq!(k.tag, "user:42");
        assert_eq!(change_channel("hg"), "hg:changes");
        assert_eq!(broadcast_channel("hg"), "hg:broadcast");
    }

    #[test]
    fn every_name_parses_back_to_its_tag_and_part() {
        let mut rng = fastrand::Rng::with_seed(25);
        let alphabet: Vec<char> = "ab:{}%7D_ é}{".chars().collect();
        for prefix in ["hg", "hg:http:ab12:", "p"] {
            for _ in 0..2000 {
                let len = rng.usize(0..12);
                let key: String = (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect();
                let names = KeyNames::new(prefix, &key);
                let tag = names.tag.as_str();
                assert_eq!(
                    KeyNames::parse(prefix, &names.value),
                    Some((tag, Part::Value))
                );
                for waited in [&names.marker, &names.lease] {
                    assert_eq!(KeyNames::parse(prefix, waited), Some((tag, Part::Waited)));
                }
                for other in [&names.version, &names.held, &names.lock] {
                    assert_eq!(KeyNames::parse(prefix, other), Some((tag, Part::Other)));
                }
                assert_eq!(unescape(tag).as_deref(), Some(key.as_str()));
            }
        }
        for junk in ["", "hg", "hg:{", "hg:{a}", "hg:{a}v", "hx:{a}:v", "hg{a}:v"] {
            assert_eq!(KeyNames::parse("hg", junk), None, "{junk:?}");
        }
    }

    #[test]
    fn the_other_names_under_a_prefix() {
        // The sidecar's prefix ends with `:`, a library's may not: names are kept as they
        // were so a running fleet finds its sets and records across an upgrade.
        assert_eq!(
            tag_set("hg:http:ab12:", "product-42").as_deref(),
            Some("hg:http:ab12:tag:product-42")
        );
        assert_eq!(instances_key("hg:"), "hg:instances");
        let names = QueueNames::new("hg", 3);
        for k in names
            .streams
            .iter()
            .chain(&names.owners)
            .chain([&names.written, &names.dead])
        {
            assert!(k.starts_with("hg:{wb}:"), "{k}");
        }
        assert_eq!(names.streams.len(), 3);
        assert_eq!(names.owners[2], "hg:{wb}:owner2");
    }

    #[test]
    fn a_tag_is_short_visible_ascii_without_a_comma() {
        let longest = "t".repeat(MAX_TAG_BYTES);
        for good in [
            "product-42",
            "cat:7",
            "a",
            "{x}",
            "%",
            "~!@#$^&*()",
            longest.as_str(),
        ] {
            assert!(valid_tag(good), "{good:?}");
            assert!(tag_set("p:", good).is_some());
        }
        let too_long = "t".repeat(MAX_TAG_BYTES + 1);
        for bad in [
            "",
            "a b",
            "a,b",
            "a\tb",
            "a\nb",
            "caf\u{e9}",
            "\u{7f}",
            "nul\0",
            too_long.as_str(),
        ] {
            assert!(!valid_tag(bad), "{bad:?}");
            assert_eq!(tag_set("p:", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unescape_inverts_escape_and_refuses_what_escape_never_makes() {
        for raw in ["plain", "a}b{c", "100%", "%7D", "{}%{}", "", "naïve 😀"] {
            assert_eq!(unescape(&escape(raw)).as_deref(), Some(raw), "{raw:?}");
        }
        for bad in ["%", "%7", "%41", "%zz", "a%"] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
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
