//! What each layer takes of the [`Settings`]: the handler's tuning and the
//! connections', both of which a reload may replace while serving.

use super::settings::Settings;
use crate::handle::proxy::{HandlerOptions, Tuning};
use crate::handle::request::Forwarding;
use crate::handle::rules::Rules;
use crate::listen::acceptor::ConnectionTuning;

/// What of `settings` the request handler reads (a reload may change it).
pub(crate) fn handler(settings: &Settings) -> Tuning {
    let rules = Rules {
        config: herdguard_http::CacheConfig {
            target_fields: settings.cache_targets.clone(),
            max_heuristic_freshness: settings.heuristic_max,
            ..herdguard_http::CacheConfig::default()
        },
        default_stale_if_error: settings.stale_if_error,
    };
    let default_host = settings
        .origin
        .authority()
        .and_then(|a| herdguard_http::key::normalize_host(a.as_str()))
        .unwrap_or_default();
    let options = HandlerOptions {
        forwarding: Forwarding {
            trusted: settings.trusted_proxies.clone(),
        },
        request_cache_control: settings.request_cache_control,
        max_header_bytes: settings.max_header_bytes,
        max_request_body_bytes: settings.max_request_body_bytes,
        max_object_bytes: settings.max_body_bytes,
        body_read_timeout: settings.body_read_timeout,
        default_host,
        keep_client_host: settings.keep_client_host,
    };
    Tuning {
        rules,
        options,
        paths: settings.path_rules.clone(),
    }
}

/// What of `settings` the listeners read when they accept a connection (a
/// reload may change it).
pub(crate) fn connections(settings: &Settings) -> ConnectionTuning {
    ConnectionTuning {
        limits: settings.connection_limits,
        access_log: settings.access_log,
    }
}
