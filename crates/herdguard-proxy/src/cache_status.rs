//! The `Cache-Status` response field (RFC 9211): how this cache handled the request.

use std::fmt;
use std::time::Duration;

use herdguard::Served;
use herdguard_http::{CacheStatus as HttpCacheStatus, ForwardReason};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::response::{CachedResponse, Fetch};

/// The field's name.
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The identifier this cache writes its member under.
const NAME: &str = "herdguard";

/// One `Cache-Status` member.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheStatus {
    hit: bool,
    fwd: Option<ForwardReason>,
    fwd_status: Option<u16>,
    ttl: Option<i64>,
    stored: bool,
    collapsed: bool,
    detail: Option<String>,
    label: &'static str,
}

impl CacheStatus {
    /// A request answered from the cache, or by a load (own, shared or joined).
    pub fn served(served: Served, value: &CachedResponse, ttl: Duration) -> Self {
        let fwd = match value.fetch {
            Fetch::Miss => ForwardReason::Miss,
            Fetch::Revalidated | Fetch::Replaced => ForwardReason::Stale,
        };
        let fwd_status = Some(if value.fetch == Fetch::Revalidated {
            304
        } else {
            value.status
        });
        let ttl = i64::try_from(ttl.as_secs()).ok();
        let mut s = CacheStatus {
            hit: false,
            fwd: None,
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            detail: None,
            label: "hit",
        };
        match served {
            Served::Hit | Served::EarlyRefresh => {
                s.hit = true;
                s.ttl = ttl;
                if served == Served::EarlyRefresh {
                    s.detail = Some("early-refresh".into());
                }
            }
            Served::Shared => {
                s.hit = true;
                s.ttl = ttl;
                s.detail = Some("fleet".into());
            }
            Served::StaleWhileRevalidate => {
                s.hit = true;
                s.detail = Some("stale-while-revalidate".into());
                s.label = "stale";
            }
            Served::StaleOnError | Served::StaleOnTimeout => {
                s.hit = true;
                s.detail = Some(
                    if served == Served::StaleOnError {
                        "stale-if-error"
                    } else {
                        "stale-on-timeout"
                    }
                    .into(),
                );
                s.label = "stale";
            }
            Served::Loaded | Served::Coalesced | Served::Pass => {
                s.fwd = Some(if served == Served::Pass {
                    ForwardReason::Bypass
                } else {
                    fwd
                });
                s.fwd_status = fwd_status;
                s.collapsed = served == Served::Coalesced;
                s.label = match served {
                    Served::Coalesced => "coalesced",
                    Served::Pass => "bypass",
                    _ => "miss",
                };
                match &value.uncacheable {
                    Some(why) => {
                        s.detail = Some(if served == Served::Pass {
                            format!("hit-for-miss-{why}")
                        } else {
                            why.clone()
                        })
                    }
                    None => {
                        s.stored = true;
                        s.ttl = ttl;
                    }
                }
            }
            _ => s.hit = true,
        }
        s
    }

    /// A request forwarded without the cache (`fwd=request`, `fwd=method`, ...).
    pub fn forward(
        fwd: ForwardReason,
        status: StatusCode,
        detail: Option<&str>,
        stored: bool,
        collapsed: bool,
    ) -> Self {
        CacheStatus {
            hit: false,
            fwd: Some(fwd),
            fwd_status: Some(status.as_u16()),
            ttl: None,
            stored,
            collapsed,
            detail: detail.map(str::to_string),
            label: "bypass",
        }
    }

    /// A stale stored response the request accepted (`max-stale`, `only-if-cached`).
    pub fn stale(detail: &'static str) -> Self {
        CacheStatus {
            hit: true,
            fwd: None,
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            detail: Some(detail.to_string()),
            label: "stale",
        }
    }

    /// The proxy itself answered with an error (502, 504...).
    pub fn error(status: StatusCode) -> Self {
        CacheStatus {
            hit: false,
            fwd: Some(ForwardReason::Miss),
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            detail: Some(format!("origin-unavailable-{}", status.as_u16())),
            label: "error",
        }
    }

    /// The member as a field value, rendered into one buffer the value then owns
    /// (no second copy); `None` only if a detail held bytes a field cannot.
    pub fn to_header_value(&self) -> Option<HeaderValue> {
        Some(self.member().to_header_value())
    }

    /// The label this answer is counted under in `herdguard_proxy_requests_total`.
    pub fn label(&self) -> &'static str {
        self.label
    }
}

impl CacheStatus {
    /// The member in RFC 9211 form; `herdguard-http` does the structured-field
    /// serialization (token or quoted string, escaping).
    fn member(&self) -> HttpCacheStatus {
        let mut m = HttpCacheStatus::new(NAME);
        if self.hit {
            m = m.hit();
        }
        if let Some(fwd) = self.fwd {
            m = m.forwarded(fwd);
        }
        if let Some(status) = self.fwd_status {
            m = m.fwd_status(status);
        }
        if let Some(ttl) = self.ttl {
            m = m.ttl(ttl);
        }
        m = m.stored(self.stored).collapsed(self.collapsed);
        if let Some(detail) = &self.detail {
            m = m.detail(detail.clone());
        }
        m
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.member().fmt(f)
    }
}
