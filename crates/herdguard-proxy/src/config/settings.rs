//! Every setting of `herdguard serve`, declared once: its flag, variable, file
//! key, default, parser, reload class and documentation all come from its row
//! (the syntax is in `declare`). Rows resolve in order, so a row may read the
//! settings above it (`origin_ca` reads `origin`, `max_entries` defaults from
//! `max_memory`). docs/configuration.md is rendered from this table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herdguard_http::KeyConfig;
use http::{HeaderName, Uri};
use ipnet::IpNet;

use super::declare::settings;
use super::parse;
use super::rules;
use super::secret::Secret;
use crate::admin::auth::AdminAuth;
use crate::handle::path_rules::PathRules;
use crate::handle::proxy::RequestCacheControl;
use crate::listen::tls::TlsConfig;
use crate::origin::OriginTrust;

settings! {
    flags {
        /// Address to serve the proxy on, e.g. 127.0.0.1:8080.
        listen: text => SocketAddr = parse::address_like("127.0.0.1:8080"), restart,
            required("--listen 127.0.0.1:8080");
        /// The origin's base URL, e.g. `http://127.0.0.1:9000` or `https://api.example.com`.
        origin: text => Uri = parse::origin, restart,
            required("--origin http://127.0.0.1:9000");
        /// PEM file of the CA certificate(s) an https:// origin's certificate must
        /// chain to, instead of the bundled web PKI roots (a private CA).
        origin_ca: path => OriginTrust = |f, path| parse::origin_ca(f, path, &origin), restart,
            computed(OriginTrust::WebPki, "the bundled web PKI roots");
        /// Redis URL for fleet-wide coalescing and a shared cache tier
        /// (`redis://…`, `rediss://…` over TLS, `rediss://user:password@…` with an
        /// ACL user, or `redis+sentinel://host:port,host:port/name` to follow a
        /// Sentinel-managed primary, `rediss+sentinel://…` over TLS).
        redis: text => String = parse::redis_url, restart, unset;
        /// Redis Cluster seed URLs, comma-separated, instead of `--redis`.
        redis_cluster: list => Vec<String> = |f, v| parse::cluster(f, v, redis.is_some()),
            restart, default("");
        /// Independent Redis servers to take load leases from by majority (quorum
        /// leases, Redlock), comma-separated; entries and fencing stay in `--redis`
        /// / `--redis-cluster`.
        redis_lock_servers: list => Vec<String> =
            |f, v| parse::lock_servers(f, v, redis.is_some() || !redis_cluster.is_empty()),
            restart, default("");
        /// PEM file of the CA certificate(s) a `rediss://` Redis server's
        /// certificate must chain to, instead of the bundled web PKI roots (a
        /// private CA): for the data store, Sentinel, cluster nodes and lock servers.
        redis_ca: path => PathBuf =
            |f, p| parse::with_redis(f, p, redis.is_some() || !redis_cluster.is_empty()),
            restart, unset;
        /// PEM client certificate for Redis servers that require one (mutual TLS,
        /// `tls-auth-clients yes`), with `--redis-key`.
        redis_cert: path => PathBuf =
            |f, p| parse::with_redis(f, p, redis.is_some() || !redis_cluster.is_empty()),
            restart, unset;
        /// PEM private key of `--redis-cert`.
        redis_key: path => PathBuf = parse::as_is, restart, unset;
        /// Address of the admin listener (/, /metrics, /healthz, /readyz, POST /purge).
        admin: text => SocketAddr = parse::address_like("127.0.0.1:9090"), restart, unset;
        /// Bearer token of the admin listener's `POST /purge`, at least 16
        /// characters (unset: purge disabled).
        purge_token: text => Secret = parse::purge_token, restart, unset, secret;
        /// RFC 9213 targeted cache-control fields this cache obeys, in order of
        /// precedence, comma-separated.
        cache_target: list => Vec<HeaderName> = parse::header_names, live,
            default("CDN-Cache-Control");
        /// The memory budget of cached responses, with a unit (e.g. 512MiB, 2GiB):
        /// each weighed by what it holds (key, fields, body and a fixed overhead),
        /// the least useful evicted to stay under it.
        max_memory: size => u64 = parse::memory, restart, default("256MiB");
        /// The largest response stored, as a share of `max_memory`, percent, 1 to
        /// 50 (larger ones stream through uncached).
        max_object_percent: u64 => u64 = parse::percent, live, default(10);
        /// Most responses kept in memory, a second bound beside `max_memory`.
        max_entries: u64 => u64 = parse::positive, restart,
            computed((max_memory / 64).max(1), "none beyond max_memory");
        /// Deprecated: `max_memory` in bytes, without a unit.
        max_cache_bytes: u64 => u64 = parse::as_is, restart, unset, hidden;
        /// Largest origin response stored, bytes, at most `max_object_percent` of
        /// `max_memory`; larger ones are streamed through uncached.
        max_body_bytes: usize => usize =
            |f, n| parse::capped(f, n, parse::object_cap(max_memory, max_object_percent)),
            live, default(16777216);
        /// Largest client request body forwarded (streamed), bytes (larger: 413).
        max_request_body_bytes: usize => usize = parse::positive, live, default(16777216);
        /// Largest client request head (line + headers), bytes, at least 8192
        /// (larger: 431).
        max_header_bytes: usize => usize = parse::head_bytes, restart, default(65536);
        /// Largest response stored in Redis, bytes; larger ones coalesce in process only.
        redis_max_value_bytes: usize => usize = parse::positive, restart, default(1048576);
        /// Origin timeout for a whole answer, milliseconds (then 504).
        origin_timeout_ms: u64 => Duration = parse::millis, restart, default(30000);
        /// Origin connect timeout, milliseconds (then 502).
        origin_connect_timeout_ms: u64 => Duration = parse::millis, restart, default(5000);
        /// Most requests at the origin at once, from before each is sent to the
        /// end of its answer's body (a load coalescing many callers counts once);
        /// more wait for a slot `origin_queue_timeout_ms`, then get 503.
        max_origin_requests: usize => usize = parse::positive, restart,
            computed(parse::default_origin_requests(), "32 per core");
        /// Longest a request waits for an origin slot, milliseconds (then 503
        /// with `Retry-After`).
        origin_queue_timeout_ms: u64 => Duration = parse::millis, restart, default(5000);
        /// Cap of heuristic freshness (Last-Modified based), seconds.
        heuristic_max_secs: u64 => Duration = parse::secs, live, default(86400);
        /// Stale-if-error window when the origin gives none, seconds.
        stale_if_error_secs: u64 => Duration = parse::secs, live, default(0);
        /// How long a response found uncacheable makes its URL skip coalescing, seconds.
        hit_for_miss_secs: u64 => Duration = parse::positive_secs, restart, default(120);
        /// Key prefix in Redis.
        redis_prefix: text => String = parse::as_is, restart, default("herdguard:http:");
        /// Timeout of one Redis operation, milliseconds; past it the proxy degrades
        /// to per-instance coalescing for a moment.
        redis_op_timeout_ms: u64 => Duration = parse::millis, restart, default(250);
        /// Identity of the origin in Redis key names, so sidecars of different
        /// services on one Redis never share entries. Give sidecars of one service
        /// that name its origin differently the same value.
        cache_namespace: text => String = parse::namespace, restart,
            computed(parse::origin_identity(&origin), "derived from origin");
        /// How the query takes part in the key: as-is or sorted.
        cache_key_query: text => String = parse::as_is, restart, default("as-is");
        /// Send the origin the client's host (normalised, as in the cache key) as
        /// its `Host`, instead of the origin URL's (one origin serving several
        /// virtual hosts); the TLS server name stays the origin URL's. Puts
        /// `host` in the cache key.
        keep_client_host: switch => bool = parse::as_is, restart, default(false);
        /// Send the origin the client's host (normalised, as in the cache key) as
        /// `X-Forwarded-Host` (without it, none is sent); puts `host` in the cache key.
        forward_host: switch => bool = parse::as_is, restart, default(false);
        /// Parts of a request in its cache key, comma-separated, from host, path,
        /// query (path is required). Whenever the origin sees the client's host
        /// (`keep_client_host`, `forward_host`) the host must be in it.
        cache_key: list => KeyConfig = |f, parts: String| {
                parse::cache_key(f, Some(&parts), &cache_key_query, keep_client_host, forward_host)
            },
            restart,
            computed(
                parse::cache_key("cache_key", None, &cache_key_query, keep_client_host, forward_host)?,
                "path,query; host,path,query with keep_client_host or forward_host"
            );
        /// Request no-cache / max-age / Pragma: "revalidate" (one coalesced
        /// revalidation per key, result stored) or "ignore" (as nginx and Varnish do).
        request_cache_control: text => RequestCacheControl = parse::request_cache_control,
            live, default("revalidate");
        /// Peers (addresses or CIDR blocks, comma-separated) whose Forwarded and
        /// X-Forwarded-* fields are kept; from anyone else they are dropped.
        trusted_proxies: list => Vec<IpNet> = parse::networks, live, default("");
        /// Serving threads, each with its own single-threaded runtime and its own
        /// listening socket (SO_REUSEPORT: the kernel spreads connections over them).
        threads: usize => usize = parse::positive, restart,
            computed(parse::default_threads(), "one per core but one (at least one)");
        /// Most client connections open at once; more wait to be accepted.
        max_connections: usize => usize = parse::positive, restart, default(4096);
        /// Most admin connections open at once, dashboards' event streams aside.
        admin_max_connections: usize => usize = parse::positive, restart, default(64);
        /// Most dashboard event streams (`/events`) open at once, beside
        /// `admin_max_connections` (more: 503).
        admin_max_event_streams: usize => usize = parse::positive, restart, default(16);
        /// What on the admin listener needs the purge token (Bearer, or the
        /// password of Basic): "purge" (`POST /purge` only) or "all" (every path
        /// but /healthz and /readyz: metrics and the dashboard too).
        admin_auth: text => AdminAuth =
            |f, v: String| parse::admin_auth(f, &v, purge_token.is_some()),
            restart, default("purge");
        /// Time for a client to send a request head, from the connection's start or
        /// the head's first byte, milliseconds.
        header_read_timeout_ms: u64 => Duration = parse::millis, live, default(10000);
        /// Time a keep-alive connection may wait for its next request, milliseconds.
        idle_timeout_ms: u64 => Duration = parse::millis, live, default(60000);
        /// Longest pause inside a request body, milliseconds (then 408).
        body_read_timeout_ms: u64 => Duration = parse::millis, live, default(30000);
        /// Longest a write to a client may make no progress, milliseconds (then the
        /// connection is closed).
        write_timeout_ms: u64 => Duration = parse::millis, live, default(30000);
        /// One log line per request (target `herdguard::access`, in the log
        /// format of `--log-format`): method, path, status, bytes, times, result.
        access_log: switch => bool = parse::as_is, live, default(false);
        /// PEM certificate chain (leaf first) of the proxy listener: with `--tls-key`
        /// it speaks TLS, ALPN h2 and http/1.1 (unset: plain HTTP/1.1 and h2c).
        tls_cert: path => PathBuf = parse::as_is, restart, unset;
        /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
        tls_key: path => PathBuf = parse::as_is, restart, unset;
        /// Most requests in flight at once on one HTTP/2 connection (more are
        /// refused with REFUSED_STREAM).
        h2_max_concurrent_streams: u32 => u32 = parse::positive, restart, default(256);
    }
    file_only {
        /// Per-path rules, in order (`[[rule]]` tables: docs/sidecar.md, "Per-path
        /// rules"); a rule's `max_object_bytes` is at most `max_object_percent` of
        /// `max_memory`.
        rule: rules => PathRules =
            |_, tables| rules::resolve(tables, parse::object_cap(max_memory, max_object_percent)),
            live, computed(PathRules::default(), "none");
        /// The log filter (as `--log-level`), applied at start and on reload when
        /// neither `--log-level` nor `RUST_LOG` set one.
        log_level: text => String = parse::as_is, live, unset;
    }
    derived {
        /// The proxy listener's certificate and key, loaded from `tls_cert` and
        /// `tls_key` (`None`: plain HTTP).
        tls: Option<TlsConfig> = parse::tls(tls_cert.as_deref(), tls_key.as_deref())?;
        /// The client certificate and key presented to Redis, from `redis_cert`
        /// and `redis_key` (`None`: none).
        redis_client_cert: Option<(PathBuf, PathBuf)> =
            parse::pair("redis_cert", redis_cert.clone(), "redis_key", redis_key.clone())?;
    }
}
