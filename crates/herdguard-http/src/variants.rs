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
pub const MAX_VARIANTS: usize = 64;

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

/// Whether the stored response `cached` is the one that would answer
/// `forward` and falls short of the request's `max-age` / `min-fresh`, so the
/// request demands its revalidation (the directives that demand it whatever is
/// stored aside: [`crate::RequestDirectives::demands_revalidation`]).
pub fn falls_short_for(
    cached: &CachedResponse,
    forward: &impl VaryView,
    config: &crate::CacheConfig,
    directives: &crate::RequestDirectives,
) -> bool {
    cached.uncacheable.is_none()
        && vary_matches(cached, forward)
        && cached.falls_short_of(config, directives, std::time::SystemTime::now())
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

    /// [`Variants::primary`], borrowed from `target` where the key is its text.
    pub fn primary_ref<'a>(
        &self,
        host: &(impl AsRef<str> + ?Sized),
        target: &'a RequestTarget,
    ) -> std::borrow::Cow<'a, String> {
        self.config.primary_ref(host, target)
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

    /// Another stored variant of `primary` for a request whose own variant
    /// (`key`) has no stored response: one whose fields the request
    /// accepts by the `Vary` fields' own mechanism ([`crate::negotiate`]:
    /// q-values of `Accept-Encoding` / `Accept-Language`), the most wanted
    /// first. `usable` gives a key's stored response when it may answer now
    /// (fresh); `response` reads it. Only URLs whose `Vary` is negotiable are
    /// looked at, and at most the primary key and [`MAX_VARIANTS`] variant keys.
    pub fn negotiate<T>(
        &self,
        primary: &str,
        key: &str,
        request: &impl VaryView,
        mut usable: impl FnMut(&str) -> Option<T>,
        response: impl Fn(&T) -> &CachedResponse,
    ) -> Option<T> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let known = self.known.get(primary)?;
        if !crate::negotiate::negotiable(&known.vary) {
            return None;
        }
        let request = request.vary_view(&known.vary);
        let mut best: Option<(crate::negotiate::Quality, T)> = None;
        let candidates = std::iter::once(primary).chain(known.keys.iter().map(String::as_str));
        for candidate in candidates.take(MAX_VARIANTS + 1) {
            if candidate == key {
                continue;
            }
            let Some(found) = usable(candidate) else {
                continue;
            };
            let value = response(&found);
            if value.uncacheable.is_some() {
                continue;
            }
            // Judged under the variant's own Vary: it must be negotiable too.
            let vary = value.vary();
            if !crate::negotiate::negotiable(&vary) {
                continue;
            }
            let Some(quality) = crate::negotiate::quality(&vary, &request, &value.header_map())
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(q, _)| quality > *q) {
                best = Some((quality, found));
            }
        }
        best.map(|(_, found)| found)
    }

    /// The primary key and every variant key seen of a URL.
    pub fn all_keys(&self, primary: &str) -> Vec<String> {
        let known = self.known.get(primary).unwrap_or_default();
        std::iter::once(primary.to_string())
            .chain(known.keys)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Fetch;
    use crate::test_util::hm;
    use std::collections::HashMap;

    /// A stored response of the variant `request` asked for, under `vary`.
    fn stored(vary: &str, encoding: Option<&str>, request: &HeaderMap) -> CachedResponse {
        let mut fields = hm(&[("vary", vary), ("cache-control", "max-age=60")]);
        if let Some(e) = encoding {
            fields.insert("content-encoding", e.parse().unwrap());
        }
        let digest = digest_of(&Vary::from_response(&fields), request).unwrap();
        CachedResponse::new(
            http::StatusCode::OK,
            &fields,
            bytes::Bytes::from_static(b"x"),
            (1, 1),
            digest,
            Fetch::Miss,
        )
    }

    #[test]
    fn rfc9111_4_1_negotiation_picks_the_most_wanted_accepted_variant() {
        let variants = Variants::new(KeyConfig::default(), 1 << 20);
        let primary = "GET http://a/x";
        let mut store: HashMap<String, CachedResponse> = HashMap::new();
        // Three variants stored: gzip (under the primary key), br, identity.
        for (ae, encoding) in [
            ("gzip", Some("gzip")),
            ("br", Some("br")),
            ("identity", None),
        ] {
            let request = hm(&[("accept-encoding", ae)]);
            let key = variants.key_for(primary, &request);
            let value = stored("Accept-Encoding", encoding, &request);
            variants.learn(primary, &value, key == primary);
            let key = variants.key_for(primary, &request);
            store.insert(key, value);
        }
        let pick = |ae: &str| {
            let request = hm(&[("accept-encoding", ae)]);
            let key = variants.key_for(primary, &request);
            variants
                .negotiate(primary, &key, &request, |k| store.get(k), |v| *v)
                .map(|v| v.header("content-encoding").unwrap_or_default())
        };
        assert_eq!(pick("br;q=0.4, gzip;q=0.9").as_deref(), Some("gzip"));
        assert_eq!(pick("br, gzip;q=0.9").as_deref(), Some("br"));
        assert_eq!(pick("identity;q=0.5, deflate").as_deref(), Some(""));
        // The adversary: whoever refuses a coding never gets it.
        assert_eq!(pick("gzip;q=0, br;q=0, identity;q=0, *;q=0"), None);
        assert_eq!(pick("gzip;q=0, *;q=0.5").as_deref(), Some("br"));
        assert_eq!(pick("*;q=0"), None);
        assert_eq!(pick("deflate"), None);
        // A Vary that is not negotiable: nothing is chosen.
        let other = Variants::new(KeyConfig::default(), 1 << 20);
        let request = hm(&[("accept-encoding", "gzip")]);
        let value = stored("Accept-Encoding, Cookie", Some("gzip"), &request);
        other.learn(primary, &value, true);
        let asking = hm(&[("accept-encoding", "gzip, br")]);
        let key = other.key_for(primary, &asking);
        assert!(other
            .negotiate(primary, &key, &asking, |_| Some(&value), |v| *v)
            .is_none());
    }

    #[test]
    fn negotiation_looks_at_a_bounded_number_of_variants() {
        let variants = Variants::new(KeyConfig::default(), 1 << 20);
        let primary = "GET http://a/x";
        let first = hm(&[("accept-encoding", "gzip")]);
        variants.learn(
            primary,
            &stored("Accept-Encoding", Some("gzip"), &first),
            true,
        );
        for i in 0..1000 {
            let _ = variants.key_for(primary, &hm(&[("accept-encoding", &format!("c{i}"))]));
        }
        let mut looked = 0;
        let asking = hm(&[("accept-encoding", "br")]);
        let key = variants.key_for(primary, &asking);
        let _ = variants.negotiate(
            primary,
            &key,
            &asking,
            |_| {
                looked += 1;
                None::<&CachedResponse>
            },
            |v| *v,
        );
        assert!(looked <= MAX_VARIANTS + 1, "{looked}");
        assert!(looked > 1, "{looked}");
    }
}
