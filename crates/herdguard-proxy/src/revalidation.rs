//! Forced revalidations (request `no-cache`, `max-age=0`, `Pragma: no-cache`, or
//! a request `max-age` / `min-fresh` the stored response does not meet), made one
//! per key however many clients ask at once.
//!
//! The core loads a key only when its entry is not fresh, so the first caller of
//! a forced revalidation takes the stored entry (for its validators), removes it,
//! and loads through the core: callers of the key that arrive meanwhile, plain
//! or forcing, join that one load, and its result is stored as any load's is.
//! Every other forcing caller that arrives while it runs waits for it here rather
//! than starting its own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use herdguard::Cached;
use tokio::sync::OnceCell;

use crate::response::CachedResponse;

/// The result a forced revalidation shares with its followers.
pub(crate) type Revalidated = Result<Cached<CachedResponse>, Arc<herdguard::Error>>;

/// Forced revalidations running now, by key.
#[derive(Default)]
pub(crate) struct Revalidations {
    running: Mutex<HashMap<String, Arc<OnceCell<Revalidated>>>>,
}

impl Revalidations {
    /// Runs `revalidate` for `key` unless one runs already, in which case waits
    /// for that one's result. If the caller running it goes away, a waiter takes over.
    pub(crate) async fn run<F, Fut>(&self, key: &str, revalidate: F) -> Revalidated
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Revalidated>,
    {
        let cell = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(running.entry(key.to_string()).or_default())
        };
        let result = cell.get_or_init(revalidate).await.clone();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            running.remove(key);
        }
        result
    }
}
