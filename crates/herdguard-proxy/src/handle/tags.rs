//! Surrogate keys: an origin tags its answers (`Surrogate-Key: a b`, as
//! Fastly reads it, or `Cache-Tag: a,b`, as Cloudflare does) and a purge of a
//! tag removes every stored answer carrying it, on every instance.
//!
//! The tag fields are this cache's, not the client's: they are removed from
//! every answer (stored or passed through). Each instance indexes the keys it
//! stored or took from the shared store, by tag; with Redis, each load also
//! records its key in the tag's set in Redis, so a purge finds the keys that
//! instances which have since restarted or evicted them had stored.
//!
//! An origin is hostile like any other input: a tag is what
//! [`herdguard_redis::valid_tag`] says (1 to 128 bytes of visible ASCII, no
//! `,`: one rule for what an origin sends, a purge names and Redis stores), at
//! most [`MAX_TAGS`] per answer (the rest ignored).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use herdguard_redis::valid_tag;
use http::{HeaderMap, HeaderName};

/// Fastly's field: tags separated by spaces.
pub(crate) static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// Cloudflare's field: tags separated by commas.
pub(crate) static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Most tags kept of one answer.
pub(crate) const MAX_TAGS: usize = 64;

/// The tags of an origin answer, deduplicated in order, and the fields removed.
pub(crate) fn take(headers: &mut HeaderMap) -> Vec<String> {
    if !headers.contains_key(&SURROGATE_KEY) && !headers.contains_key(&CACHE_TAG) {
        return Vec::new();
    }
    let mut tags: Vec<String> = Vec::new();
    for (name, separators) in [(&SURROGATE_KEY, &[' ', '\t'][..]), (&CACHE_TAG, &[','][..])] {
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else { continue };
            for tag in text.split(separators).map(str::trim) {
                if tags.len() < MAX_TAGS && valid_tag(tag) && !tags.iter().any(|t| t == tag) {
                    tags.push(tag.to_string());
                }
            }
        }
    }
    headers.remove(&SURROGATE_KEY);
    headers.remove(&CACHE_TAG);
    tags
}

/// Which keys this instance has seen carry each tag.
#[derive(Default)]
pub(crate) struct TagIndex {
    inner: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    keys: HashMap<String, HashSet<String>>,
    pairs: usize,
    /// `pairs` after the last pruning: the next one waits for twice as many.
    pruned_at: usize,
}

/// Pairs below which the index is never pruned.
const PRUNE_FLOOR: usize = 4096;

impl TagIndex {
    /// Notes that `key` carries `tags`; `live` says whether a key is still
    /// stored, to forget the others when the index has doubled since it last
    /// did (so it stays within a multiple of what the cache holds).
    pub(crate) fn add(&self, key: &str, tags: &[String], live: impl Fn(&str) -> bool) {
        if tags.is_empty() {
            return;
        }
        let mut index = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tag in tags {
            if index
                .keys
                .entry(tag.clone())
                .or_default()
                .insert(key.to_string())
            {
                index.pairs += 1;
            }
        }
        if index.pairs > PRUNE_FLOOR.max(2 * index.pruned_at) {
            index.keys.retain(|_, keys| {
                // The key being added is not stored yet (its load is ending).
                keys.retain(|k| k == key || live(k));
                !keys.is_empty()
            });
            index.pairs = index.keys.values().map(HashSet::len).sum();
            index.pruned_at = index.pairs;
        }
    }

    /// The keys seen carrying `tag`, forgotten here.
    pub(crate) fn take(&self, tag: &str) -> Vec<String> {
        let mut index = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = index.keys.remove(tag).unwrap_or_default();
        index.pairs -= keys.len();
        keys.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_fields_are_read_deduplicated_bounded_and_removed() {
        let mut h = HeaderMap::new();
        h.append(
            &SURROGATE_KEY,
            "product-1  list\tproduct-1".parse().unwrap(),
        );
        h.append(&CACHE_TAG, "list, cat:7,,".parse().unwrap());
        h.append("etag", "\"x\"".parse().unwrap());
        assert_eq!(take(&mut h), vec!["product-1", "list", "cat:7"]);
        assert!(!h.contains_key(&SURROGATE_KEY) && !h.contains_key(&CACHE_TAG));
        assert!(h.contains_key("etag"));
        let mut h = HeaderMap::new();
        let many: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
        h.insert(&SURROGATE_KEY, many.join(" ").parse().unwrap());
        let long = "x".repeat(herdguard_redis::MAX_TAG_BYTES + 1);
        h.insert(&CACHE_TAG, long.parse().unwrap());
        let tags = take(&mut h);
        assert_eq!(tags.len(), MAX_TAGS);
        assert!(!tags.contains(&long));
    }

    #[test]
    fn the_index_forgets_what_a_purge_took_and_prunes_dead_keys() {
        let index = TagIndex::default();
        index.add("a", &["t".into(), "u".into()], |_| true);
        index.add("b", &["t".into()], |_| true);
        let mut keys = index.take("t");
        keys.sort();
        assert_eq!(keys, vec!["a", "b"]);
        assert!(index.take("t").is_empty());
        assert_eq!(index.take("u"), vec!["a"]);
        // Past the floor, keys no longer stored are dropped.
        for i in 0..=PRUNE_FLOOR {
            index.add(&format!("k{i}"), &["v".into()], |k| k == "k1");
        }
        let mut kept = index.take("v");
        kept.sort();
        let last = format!("k{PRUNE_FLOOR}");
        assert_eq!(
            kept,
            vec!["k1".to_string(), last],
            "the key being added stays"
        );
    }
}
