//! The cached value: one origin response with the times its age is computed from.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herdguard_http::{CacheConfig, StoredResponse, Vary};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

/// How the value was produced by the load that made it (for `Cache-Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fetch {
    /// A full response from the origin, no stored response to validate.
    Miss,
    /// A conditional request the origin answered `304`: the stored body with updated headers.
    Revalidated,
    /// A conditional request the origin answered with a full, new response.
    Replaced,
}

/// One origin response as the cache keeps it (and, with `--redis`, as the fleet
/// shares it: it is serde-serializable).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedResponse {
    /// Status code.
    pub status: u16,
    /// Header fields, end-to-end only (hop-by-hop fields are dropped at fetch).
    pub headers: Vec<(String, Bytes)>,
    /// The whole body.
    pub body: Bytes,
    /// When the request that produced the response was sent, Unix milliseconds.
    #[serde(default)]
    pub request_time_ms: u64,
    /// When the response arrived, Unix milliseconds.
    pub response_time_ms: u64,
    /// The SHA-256 digest of the secondary key (RFC 9111 §4.1) of the request the
    /// response was loaded for, under the response's `Vary` (empty without `Vary`):
    /// it serves only requests with the same digest. A digest, not the header
    /// values themselves, so a shared store never holds a client's `Cookie`.
    #[serde(default)]
    pub vary_key: Vec<u8>,
    /// How the load that produced this value went.
    pub fetch: Fetch,
    /// Why the response may not be stored (`None` when it may); such a value is a
    /// marker only (its answer went to one client as a stream).
    pub uncacheable: Option<String>,
    /// `headers` parsed once, on first use: the hit path then clones a map
    /// instead of re-validating every field name and value.
    #[serde(skip)]
    pub parsed: OnceLock<HeaderMap>,
    /// The RFC 9111 facts (lifetime, initial age, directives), computed once.
    #[serde(skip)]
    pub semantics: OnceLock<StoredResponse>,
}

impl CachedResponse {
    /// The marker a load hands the core for an answer that went, as a stream, to
    /// its own caller only: status and reason, no fields, no body.
    pub fn passed(status: StatusCode, reason: &str, fetch: Fetch) -> Self {
        CachedResponse {
            status: status.as_u16(),
            headers: Vec::new(),
            body: Bytes::new(),
            request_time_ms: 0,
            response_time_ms: 0,
            vary_key: Vec::new(),
            fetch,
            uncacheable: Some(reason.to_string()),
            parsed: OnceLock::new(),
            semantics: OnceLock::new(),
        }
    }

    /// The status code (502 if the stored one is out of range).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// The header fields as a map; fields that do not parse are dropped.
    pub fn header_map(&self) -> HeaderMap {
        self.parsed.get_or_init(|| self.parse_headers()).clone()
    }

    fn parse_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len() + 3);
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_maybe_shared(value.clone()),
            ) {
                map.append(n, v);
            }
        }
        // The length of the body kept, rendered once rather than on every answer.
        map.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(self.body.len()),
        );
        map
    }

    /// Stores `headers` as the field list.
    pub fn set_headers(&mut self, headers: &HeaderMap) {
        self.parsed = OnceLock::new();
        self.semantics = OnceLock::new();
        self.headers = headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
            .collect();
    }

    /// The first value of `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The RFC 9111 view of this response (lifetime, age, directives), computed on
    /// first use from the stored fields and times.
    pub fn semantics(&self, config: &CacheConfig) -> &StoredResponse {
        self.semantics.get_or_init(|| {
            let response_time = from_ms(self.response_time_ms);
            // A value from an older peer has no request time: no delay is then assumed.
            let request_time = match self.request_time_ms {
                0 => response_time,
                ms => from_ms(ms),
            };
            StoredResponse::new(
                self.status(),
                &self.header_map(),
                request_time,
                response_time,
                config,
            )
        })
    }

    /// The `Vary` of the stored response.
    pub fn vary(&self) -> Vary {
        Vary::from_response(self.parsed.get_or_init(|| self.parse_headers()))
    }
}

/// Unix milliseconds of `t`.
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
