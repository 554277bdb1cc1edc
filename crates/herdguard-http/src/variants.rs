//! Keys and variants: the primary key of a request (as `herdguard-http`'s
//! [`KeyConfig`] builds it), and, for URLs whose answers carry `Vary`, the key of
//! each variant — the primary key plus a digest of the secondary key, so header
//! values (a `Cookie`) never appear in a key name, in memory or in Redis.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;

use crate::key::variant_key;
use crate::response::CachedResponse;
use crate::{KeyConfig, RequestTarget, Vary};

/// A request as its secondary key is read from: the fields as the origin
/// receives them (a proxy may add some, e.g. `X-Forwarded-For`, that `Vary` can name).
pub trait VaryView {
    /// The request fields that `vary` selects from.
    fn vary_view(&self, vary: &Vary) -> Cow<'_, HeaderMap>;
}

/// A request handed on with its own fields, unchanged.
impl VaryView for HeaderMap {
    fn vary_view(&self, _: &Vary) -> Cow<'_, HeaderMap> {
        Cow::Borrowed(self)
    }
}

/// A shared request reads as the request.
impl<T: VaryView + ?Sized> VaryView for std::sync::Arc<T> {
    fn vary_view(&self, vary: &Vary) -> Cow<'_, HeaderMap> {
        T::vary_view(self, vary)
    }
}

/// Most `Vary` variants remembered per URL (for invalidation).
const MAX_VARIANTS: usize = 64;

/// What a URL varies on, and the variant keys seen (so all can be invalidated).
#[derive(Clone)]
struct Known {
    vary: Vary,
    keys: Vec<String>,
    /// The secondary-key digest of the entry under the primary key itself: such
    /// requests keep using it (no second load for the first variant).
    primary_digest: Vec<u8>,
}

impl Default for Known {
    fn default() -> Self {
        Known {
            vary: Vary::None,
            keys: Vec::new(),
            primary_digest: Vec::new(),
        }
    }
}

/// Weighs a URL's registry record by the bytes it holds.
#[derive(Clone)]
struct KnownWeight;

impl quick_cache::Weighter<String, Known> for KnownWeight {
    fn weight(&self, url: &String, known: &Known) -> u64 {
        // The record, its vectors' headers, and each variant key with its own.
        (128 + url.len()
            + known.primary_digest.len()
            + known.keys.iter().map(|k| k.len() + 40).sum::<usize>()) as u64
    }
}

/// The share of the memory budget the variants registry may hold.
pub const REGISTRY_SHARE: u64 = 32;

/// The key configuration and the variants learnt so far.
pub struct Variants {
    config: KeyConfig,
    known: quick_cache::sync::Cache<String, Known, KnownWeight>,
    /// Whether any URL has varied yet: until then the hit path skips `known`.
    any: AtomicBool,
}

/// The digest a stored response keeps of its request's secondary key under
/// `vary` (empty without `Vary`); `None` under `Vary: *`.
pub fn digest_of(vary: &Vary, headers: &HeaderMap) -> Option<Vec<u8>> {
    match vary {
        Vary::None => Some(Vec::new()),
        vary => vary.secondary_key(headers).map(|k| k.digest().to_vec()),
    }
}

/// Whether a stored response may answer `forward` (RFC 9111 §4.1).
pub fn vary_matches(cached: &CachedResponse, forward: &impl VaryView) -> bool {
    match cached.vary() {
        Vary::None => true,
        vary => digest_of(&vary, &forward.vary_view(&vary)).is_some_and(|d| d == cached.vary_key),
    }
}

impl Variants {
    /// A registry of at most `max_bytes` (a share of the memory budget). The
    /// least used URLs are forgotten first; the variants of a forgotten URL stay
    /// cached until they expire, but an invalidation of the URL then reaches only
    /// the variants learnt again since.
    pub fn new(config: KeyConfig, max_bytes: u64) -> Self {
        Variants {
            config,
            known: quick_cache::sync::Cache::with_weighter(
                1024,
                max_bytes.max(64 << 10),
                KnownWeight,
            ),
            any: AtomicBool::new(false),
        }
    }

    /// The key configuration.
    pub fn config(&self) -> &KeyConfig {
        &self.config
    }

    /// The primary key of a request.
    pub fn primary(&self, host: &str, target: &RequestTarget) -> String {
        self.config.primary(host, target)
    }

    /// The key to look up for `forward`: the primary key, or the variant key when
    /// the URL is known to vary and this request is another variant.
    pub fn key_for(&self, primary: &str, forward: &impl VaryView) -> String {
        self.variant_for(primary, forward)
            .unwrap_or_else(|| primary.to_string())
    }

    /// The variant key to look up for `forward` instead of `primary`, when the
    /// URL is known to vary and this request is another variant; `None`: the
    /// primary key itself (no copy of it made).
    pub fn variant_for(&self, primary: &str, forward: &impl VaryView) -> Option<String> {
        // Most URLs never vary: spare them the lookup.
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let mut known = self.known.get(primary)?;
        let digest = match known.vary.secondary_key(&forward.vary_view(&known.vary)) {
            Some(k) if known.vary != Vary::None => k.digest(),
            _ => return None,
        };
        if digest.as_slice() == known.primary_digest.as_slice() {
            return None;
        }
        let key = variant_key(primary, &digest);
        if !known.keys.contains(&key) && known.keys.len() < MAX_VARIANTS {
            known.keys.push(key.clone());
            self.known.insert(primary.to_string(), known);
        }
        Some(key)
    }

    /// Records what `cached` (found under the primary key when `from_primary`)
    /// says about the URL's `Vary`.
    pub fn learn(&self, primary: &str, cached: &CachedResponse, from_primary: bool) {
        let vary = cached.vary();
        let mut known = self.known.get(primary).unwrap_or_default();
        let changed =
            known.vary != vary || (from_primary && known.primary_digest != cached.vary_key);
        if changed {
            known.vary = vary;
            if from_primary {
                known.primary_digest = cached.vary_key.clone();
            }
            self.known.insert(primary.to_string(), known);
            self.any.store(true, Ordering::Relaxed);
        }
    }

    /// The primary key and every variant key seen of a URL.
    pub fn all_keys(&self, primary: &str) -> Vec<String> {
        let known = self.known.get(primary).unwrap_or_default();
        std::iter::once(primary.to_string())
            .chain(known.keys)
            .collect()
    }
}
