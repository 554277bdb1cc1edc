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
use std::sync::{Arc, Mutex};

use herdguard_redis::valid_tag;
use http::{HeaderMap, HeaderName};

use crate::stats::Stats;

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

/// Which keys this instance has seen carry each tag, within a byte budget (a
/// share of `max_memory`, [`INDEX_SHARE`]).
///
/// Pairs whose key has left the cache (evicted, expired) are forgotten when the
/// index has grown by half since it last looked, or past its budget. When the
/// keys still stored need more than the budget, whole tags are dropped (in no
/// set order, never one of the key being added) with their keys, which the caller must then
/// also drop from memory: a key this index does not know of is never kept
/// here, so a tag purge still reaches every answer this instance holds.
pub(crate) struct TagIndex {
    inner: Mutex<Index>,
    max_bytes: u64,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Index {
    keys: HashMap<String, HashSet<String>>,
    /// What `keys` holds, as [`pair_cost`] and [`tag_cost`] count it.
    bytes: u64,
    /// `bytes` after the last pruning: the next one waits for half as many more.
    pruned_at: u64,
}

/// The share of the memory budget the tag index may hold: 1/16.
pub(crate) const INDEX_SHARE: u64 = 16;

/// Bytes below which the index is never pruned.
const PRUNE_FLOOR: u64 = 256 << 10;

/// What one tag costs the index beyond its pairs: its text, its slot in the
/// map and its set's table.
fn tag_cost(tag: &str) -> u64 {
    tag.len() as u64 + 112
}

/// What one key under one tag costs: its text and allocation, its slot in the
/// set (with the table's spare room).
fn pair_cost(key: &str) -> u64 {
    key.len() as u64 + 72
}

impl TagIndex {
    /// An index of at most `max_bytes`, its size shown in `stats`.
    pub(crate) fn new(max_bytes: u64, stats: Arc<Stats>) -> Self {
        TagIndex {
            inner: Mutex::default(),
            max_bytes: max_bytes.max(PRUNE_FLOOR),
            stats,
        }
    }

    /// Notes that `key` carries `tags`; `live` says whether a key is still
    /// stored. Returns the keys dropped to stay within the budget (the type's
    /// docs): the caller removes them from memory.
    pub(crate) fn add(
        &self,
        key: &str,
        tags: &[String],
        live: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        if tags.is_empty() {
            return Vec::new();
        }
        let mut index = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tag in tags {
            let added = match index.keys.get_mut(tag.as_str()) {
                Some(keys) => keys.insert(key.to_string()).then(|| pair_cost(key)),
                None => {
                    index
                        .keys
                        .insert(tag.clone(), HashSet::from([key.to_string()]));
                    Some(tag_cost(tag) + pair_cost(key))
                }
            };
            index.bytes += added.unwrap_or(0);
        }
        let grown = index.bytes > PRUNE_FLOOR.max(index.pruned_at + index.pruned_at / 2);
        let mut dropped = Vec::new();
        if grown || index.bytes > self.max_bytes {
            // The key being added is not stored yet (its load is ending).
            index.retain(|k| k == key || live(k));
            if index.bytes > self.max_bytes {
                dropped = index.shrink(self.max_bytes / 4 * 3, key, tags);
            }
            index.pruned_at = index.bytes;
        }
        self.stats.tag_index_bytes.set(index.bytes);
        dropped
    }

    /// The keys seen carrying `tag`, forgotten here.
    pub(crate) fn take(&self, tag: &str) -> Vec<String> {
        let mut index = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = index.keys.remove(tag).unwrap_or_default();
        if !keys.is_empty() {
            index.bytes -= tag_cost(tag) + keys.iter().map(|k| pair_cost(k)).sum::<u64>();
        }
        self.stats.tag_index_bytes.set(index.bytes);
        keys.into_iter().collect()
    }
}

impl Index {
    /// Keeps the pairs whose key `keep` says.
    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let mut bytes = 0;
        self.keys.retain(|tag, keys| {
            keys.retain(|k| keep(k));
            bytes += tag_cost(tag) + keys.iter().map(|k| pair_cost(k)).sum::<u64>();
            !keys.is_empty()
        });
        self.bytes = bytes;
    }

    /// Drops whole tags other than `adding` (the tags of `key`, being added),
    /// then keys of `adding`'s other than `key`, until at most `target` bytes
    /// are held; the keys they held are no longer known by every tag they
    /// carry, so all of them are returned (deduplicated) to be dropped.
    fn shrink(&mut self, target: u64, key: &str, adding: &[String]) -> Vec<String> {
        let mut dropped: HashSet<String> = HashSet::new();
        let others: Vec<String> = self
            .keys
            .keys()
            .filter(|t| !adding.contains(t))
            .cloned()
            .collect();
        for tag in &others {
            if self.bytes <= target {
                break;
            }
            if let Some(keys) = self.keys.remove(tag) {
                self.bytes -= tag_cost(tag) + keys.iter().map(|k| pair_cost(k)).sum::<u64>();
                dropped.extend(keys);
            }
        }
        for tag in adding {
            let Some(keys) = self.keys.get_mut(tag.as_str()) else {
                continue;
            };
            let mut victims = Vec::new();
            for k in keys.iter().filter(|k| k.as_str() != key) {
                if self.bytes <= target {
                    break;
                }
                self.bytes -= pair_cost(k);
                victims.push(k.clone());
            }
            for k in &victims {
                keys.remove(k);
            }
            dropped.extend(victims);
        }
        dropped.remove(key);
        if dropped.is_empty() {
            return Vec::new();
        }
        // The dropped keys leave the index under every tag, so that none of
        // them is left half known.
        self.retain(|k| !dropped.contains(k));
        dropped.into_iter().collect()
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

    fn index(max_bytes: u64) -> TagIndex {
        TagIndex::new(max_bytes, Arc::new(Stats::default()))
    }

    #[test]
    fn the_index_forgets_what_a_purge_took_and_prunes_dead_keys() {
        let index = index(1 << 30);
        index.add("a", &["t".into(), "u".into()], |_| true);
        index.add("b", &["t".into()], |_| true);
        let mut keys = index.take("t");
        keys.sort();
        assert_eq!(keys, vec!["a", "b"]);
        assert!(index.take("t").is_empty());
        assert_eq!(index.take("u"), vec!["a"]);
        assert_eq!(index.stats.tag_index_bytes.get(), 0);
        // Past the floor, keys no longer stored are dropped.
        let n = PRUNE_FLOOR / pair_cost("k00000") + 1;
        for i in 0..=n {
            index.add(&format!("k{i:05}"), &["v".into()], |k| k == "k00001");
        }
        let mut kept = index.take("v");
        kept.sort();
        assert_eq!(kept[0], "k00001");
        assert!(kept.len() < 64, "{} kept", kept.len());
        assert!(
            kept.contains(&format!("k{n:05}")),
            "the key being added stays"
        );
    }

    #[test]
    fn one_tag_on_every_key_is_bounded_too() {
        let budget = PRUNE_FLOOR;
        let index = index(budget);
        let mut dropped = 0;
        for i in 0..10_000 {
            dropped += index
                .add(&format!("key-{i}"), &["all".to_string()], |_| true)
                .len();
            assert!(index.stats.tag_index_bytes.get() <= budget as i64);
        }
        assert_eq!(index.take("all").len() + dropped, 10_000);
    }

    #[test]
    fn past_its_budget_the_index_drops_whole_tags_and_names_their_keys() {
        let budget = PRUNE_FLOOR;
        let index = index(budget);
        let mut dropped: Vec<String> = Vec::new();
        for i in 0..10_000 {
            let tags = [format!("own-{i}"), "shared".to_string()];
            dropped.extend(index.add(&format!("key-{i}"), &tags, |_| true));
            assert!(index.stats.tag_index_bytes.get() <= budget as i64);
        }
        assert!(!dropped.is_empty());
        assert!(!dropped.contains(&"key-9999".to_string()));
        // A dropped key is known under no tag any more; every other one is.
        let known = index.take("shared");
        assert!(known.iter().all(|k| !dropped.contains(k)));
        assert_eq!(known.len() + dropped.len(), 10_000);
    }
}
