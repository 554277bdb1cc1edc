//! The in-process tier (L1): where entries live in this process.
//!
//! [`Store`] is the seam; [`MemoryStore`] (bounded, built on `quick_cache`) is the
//! embedded default. The hit path is one [`Store::get`], so implementations must
//! be fast and non-blocking: the shared, networked tier is a different seam,
//! [`Remote`](crate::Remote).

pub(crate) mod memory;

use std::sync::Arc;

pub use memory::MemoryStore;

use crate::entry::Entry;

/// An in-process map from keys to shared entries.
///
/// Entries are `Arc`s so a hit hands out the stored value without cloning it.
pub trait Store<K, V>: Send + Sync + 'static {
    /// The entry of `key`, fresh or not.
    fn get(&self, key: &K) -> Option<Arc<Entry<V>>>;
    /// Stores `entry` under `key`, replacing any previous one.
    fn insert(&self, key: K, entry: Arc<Entry<V>>);
    /// Removes the entry of `key`.
    fn remove(&self, key: &K);
    /// Number of entries held.
    fn len(&self) -> usize;
    /// Whether it holds no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes held, as the store's weigher counts them, when it bounds bytes
    /// (`None` when it counts entries only).
    fn bytes(&self) -> Option<u64> {
        None
    }
}
