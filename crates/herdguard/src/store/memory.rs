//! The embedded store: a bounded concurrent map from `quick_cache` (S3-FIFO-like
//! eviction, sharded, lock-light reads), bounded by entry count and, with a
//! weigher, by bytes.

use std::hash::Hash;
use std::sync::Arc;

use quick_cache::sync::Cache as QuickCache;
use quick_cache::Weighter;

use super::Store;
use crate::entry::Entry;
use crate::error::ConfigError;

/// Estimates the size in bytes of one key and value.
pub type WeighFn<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;

/// The bounded in-memory store (the embedded default).
///
/// Both bounds hold at once: each entry weighs `max(bytes, max_bytes / max_entries)`
/// against a capacity of `max_bytes`, so the total of the weights stays under
/// `max_bytes`, and since no entry weighs less than `max_bytes / max_entries`,
/// there are never more than `max_entries` of them.
pub struct MemoryStore<K, V> {
    map: QuickCache<K, Arc<Entry<V>>, EntryWeighter<K, V>>,
    by_bytes: bool,
}

struct EntryWeighter<K, V> {
    weigh: Option<WeighFn<K, V>>,
    min_weight: u64,
}

impl<K, V> Clone for EntryWeighter<K, V> {
    fn clone(&self) -> Self {
        EntryWeighter {
            weigh: self.weigh.clone(),
            min_weight: self.min_weight,
        }
    }
}

impl<K, V> Weighter<K, Arc<Entry<V>>> for EntryWeighter<K, V> {
    fn weight(&self, key: &K, entry: &Arc<Entry<V>>) -> u64 {
        match &self.weigh {
            Some(weigh) => (weigh(key, entry.value()) + bookkeeping::<K, V>()).max(self.min_weight),
            None => 1,
        }
    }
}

/// See [`MemoryStore::BOOKKEEPING`].
const fn bookkeeping<K, V>() -> u64 {
    (std::mem::size_of::<Entry<V>>() + 16 + std::mem::size_of::<K>() + 64) as u64
}

impl<K, V> MemoryStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// What the store spends on an entry beyond what a weigher counts (the heap
    /// bytes of the key and value), added to each entry's weight: the entry
    /// itself (value, times, freshness, reference counts), the key inline in the
    /// table, and the table's slot and hash share with the allocator's header
    /// (measured with heaptrack, rounded up).
    pub const BOOKKEEPING: u64 = bookkeeping::<K, V>();

    /// A store of at most `max_entries` entries.
    pub fn new(max_entries: u64) -> Result<Self, ConfigError> {
        Self::build(max_entries, None)
    }

    /// A store of at most `max_entries` entries and `max_bytes` bytes: each entry
    /// weighs what `weigh` says its key and value hold on the heap, plus the
    /// store's own bookkeeping for it ([`Self::BOOKKEEPING`]).
    pub fn with_weigher(
        max_entries: u64,
        max_bytes: u64,
        weigh: WeighFn<K, V>,
    ) -> Result<Self, ConfigError> {
        if max_bytes == 0 {
            return Err(ConfigError::Zero("max_bytes"));
        }
        Self::build(max_entries, Some((max_bytes, weigh)))
    }

    fn build(max_entries: u64, bytes: Option<(u64, WeighFn<K, V>)>) -> Result<Self, ConfigError> {
        if max_entries == 0 {
            return Err(ConfigError::Zero("max_entries"));
        }
        // The table is sized for the entries expected, not the most allowed: a
        // byte budget with a loose entry bound must not reserve room for entries
        // it will never hold (assumed: at least 512 bytes each).
        let expected = match &bytes {
            Some((max_bytes, _)) => max_entries.min(max_bytes / 512).max(16),
            None => max_entries,
        };
        let estimated = usize::try_from(expected).unwrap_or(usize::MAX);
        let by_bytes = bytes.is_some();
        let (capacity, weighter) = match bytes {
            None => (
                max_entries,
                EntryWeighter {
                    weigh: None,
                    min_weight: 1,
                },
            ),
            Some((max_bytes, weigh)) => (
                max_bytes,
                EntryWeighter {
                    weigh: Some(weigh),
                    min_weight: (max_bytes / max_entries).max(1),
                },
            ),
        };
        Ok(MemoryStore {
            map: QuickCache::with_weighter(estimated, capacity, weighter),
            by_bytes,
        })
    }

    /// Total weight held (entries, or bytes with a weigher).
    pub fn weight(&self) -> u64 {
        self.map.weight()
    }
}

impl<K, V> Store<K, V> for MemoryStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    #[inline]
    fn get(&self, key: &K) -> Option<Arc<Entry<V>>> {
        self.map.get(key)
    }

    fn insert(&self, key: K, entry: Arc<Entry<V>>) {
        self.map.insert(key, entry);
    }

    fn remove(&self, key: &K) {
        self.map.remove(key);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn bytes(&self) -> Option<u64> {
        self.by_bytes.then(|| self.map.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::entry::EntryMeta;
    use std::time::Duration;

    fn entry(v: Vec<u8>) -> Arc<Entry<Vec<u8>>> {
        Arc::new(Entry::new(
            v,
            EntryMeta {
                created: Timestamp::EPOCH,
                ttl: Duration::from_secs(1),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                load_duration: Duration::ZERO,
                version: 0,
            },
        ))
    }

    #[test]
    fn bounded_by_entry_count() {
        let s = MemoryStore::<u32, Vec<u8>>::new(100).unwrap();
        for k in 0..1000 {
            s.insert(k, entry(vec![0; 10]));
        }
        assert!(s.len() <= 100, "{} entries", s.len());
        assert!(
            s.len() >= 50,
            "evicts, but keeps a working set: {}",
            s.len()
        );
    }

    #[test]
    fn bounded_by_bytes_and_by_count() {
        let weigh: WeighFn<u32, Vec<u8>> = Arc::new(|_, v| v.len() as u64);
        let s = MemoryStore::with_weigher(1000, 10_000, weigh).unwrap();
        for k in 0..1000 {
            s.insert(k, entry(vec![0; 1000]));
        }
        assert!(
            s.weight() <= 10_000 && s.len() <= 10,
            "{} bytes in {}",
            s.weight(),
            s.len()
        );
        // Small values: the count bound binds.
        let weigh: WeighFn<u32, Vec<u8>> = Arc::new(|_, v| v.len() as u64);
        let s = MemoryStore::with_weigher(10, 1_000_000, weigh).unwrap();
        for k in 0..1000 {
            s.insert(k, entry(vec![0; 1]));
        }
        assert!(s.len() <= 10, "{} entries", s.len());
    }

    #[test]
    fn zero_capacity_is_an_error() {
        assert!(MemoryStore::<u32, u32>::new(0).is_err());
        let weigh: WeighFn<u32, u32> = Arc::new(|_, _| 1);
        assert!(MemoryStore::with_weigher(10, 0, weigh).is_err());
    }
}
