//! What each layer takes of the [`Settings`]: the handler's tuning and the
//! connections', both of which a reload may replace while serving.

use super::settings::Settings;
use crate::handle::proxy::{HandlerOptions, Tuning};
use crate::handle::request::Forwarding;
use crate::handle::rules::Rules;
use crate::listen::acceptor::ConnectionTuning;
use crate::listen::limits::ConnectionLimits;

/// What of `settings` the request handler reads (a reload may change it).
pub(crate) fn handler(settings: &Settings) -> Tuning {
    let rules = Rules {
        config: herdguard_http::CacheConfig {
            target_fields: settings.cache_target.clone(),
            max_heuristic_freshness: settings.heuristic_max_secs,
            ..herdguard_http::CacheConfig::default()
        },
        default_stale_if_error: settings.stale_if_error_secs,
    };
    let default_host = settings
        .origin
        .authority()
        .and_then(|a| herdguard_http::key::normalize_host(a.as_str()))
        .unwrap_or_default();
    let options = HandlerOptions {
        forwarding: Forwarding {
            trusted: settings.trusted_proxies.clone(),
            host: settings.forward_host,
        },
        request_cache_control: settings.request_cache_control,
        max_header_bytes: settings.max_header_bytes,
        max_request_body_bytes: settings.max_request_body_bytes,
        max_object_bytes: settings.max_body_bytes,
        body_read_timeout: settings.body_read_timeout_ms,
        default_host,
        keep_client_host: settings.keep_client_host,
    };
    Tuning {
        rules,
        options,
        paths: settings.rule.clone(),
    }
}

/// What of `settings` the listeners read when they accept a connection (a
/// reload may change it).
pub(crate) fn connections(settings: &Settings) -> ConnectionTuning {
    ConnectionTuning {
        limits: ConnectionLimits {
            header_read: settings.header_read_timeout_ms,
            idle: settings.idle_timeout_ms,
            write: settings.write_timeout_ms,
        },
        access_log: settings.access_log,
    }
}
