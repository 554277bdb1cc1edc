//! Configuration: flags and `HERDGUARD_*` environment variables (clap) over a
//! TOML file (`--config`) over defaults, resolved into validated [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herdguard_http::KeyConfig;
use http::{HeaderName, Uri};
use ipnet::IpNet;
use serde::Deserialize;

use crate::limits::ConnectionLimits;
use crate::origin::OriginTrust;
use crate::path_rules::{PathRules, RuleFile};

/// One serving thread per core but one: a sidecar shares its host with the
/// application it serves, and threads that compete with it for every core
/// serve fewer requests, with a longer tail, than one fewer that do not (see
/// docs/performance.md).
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}

/// `herdguard serve` flags. Every flag also reads an environment variable, and
/// every field (without the leading `--`, dashes as underscores) may be set in
/// the TOML file; a flag or variable wins over the file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to serve the proxy on, e.g. 127.0.0.1:8080.
    #[arg(long, env = "HERDGUARD_LISTEN")]
    pub listen: Option<String>,
    /// The origin's base URL, e.g. `http://127.0.0.1:9000` or `https://api.example.com`.
    #[arg(long, env = "HERDGUARD_ORIGIN")]
    pub origin: Option<String>,
    /// PEM file of the CA certificate(s) an https:// origin's certificate must
    /// chain to, instead of the bundled web PKI roots (a private CA).
    #[arg(long, env = "HERDGUARD_ORIGIN_CA")]
    pub origin_ca: Option<PathBuf>,
    /// Redis URL for fleet-wide coalescing and a shared cache tier
    /// (`redis://…`, or `redis+sentinel://host:port,host:port/name` to follow a
    /// Sentinel-managed primary).
    #[arg(long, env = "HERDGUARD_REDIS")]
    pub redis: Option<String>,
    /// Redis Cluster seed URLs, comma-separated, instead of `--redis`.
    #[arg(long, env = "HERDGUARD_REDIS_CLUSTER")]
    pub redis_cluster: Option<String>,
    /// Independent Redis servers to take load leases from by majority (quorum
    /// leases, Redlock), comma-separated; entries and fencing stay in `--redis`
    /// / `--redis-cluster`.
    #[arg(long, env = "HERDGUARD_REDIS_LOCK_SERVERS")]
    pub redis_lock_servers: Option<String>,
    /// Address of the admin listener (/, /metrics, /healthz, /readyz, POST /purge).
    #[arg(long, env = "HERDGUARD_ADMIN")]
    pub admin: Option<String>,
    /// Bearer token of the admin listener's `POST /purge` (unset: purge disabled).
    #[arg(long, env = "HERDGUARD_PURGE_TOKEN", hide_env_values = true)]
    pub purge_token: Option<String>,
    /// TOML file with any of these settings.
    #[arg(long, env = "HERDGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// RFC 9213 targeted cache-control fields this cache obeys, in order of
    /// precedence, comma-separated (default: CDN-Cache-Control).
    #[arg(long, env = "HERDGUARD_CACHE_TARGET")]
    pub cache_target: Option<String>,
    /// The memory budget of cached responses, with a unit (e.g. 512MiB, 2GiB;
    /// default 256MiB): each weighed by what it holds (key, fields, body and a
    /// fixed overhead), the least useful evicted to stay under it.
    #[arg(long, env = "HERDGUARD_MAX_MEMORY")]
    pub max_memory: Option<String>,
    /// The largest response stored, as a share of `max_memory`, percent
    /// (default 10; larger ones stream through uncached).
    #[arg(long, env = "HERDGUARD_MAX_OBJECT_PERCENT")]
    pub max_object_percent: Option<u64>,
    /// Most responses kept in memory, a second bound beside `max_memory`
    /// (default: none beyond the budget).
    #[arg(long, env = "HERDGUARD_MAX_ENTRIES")]
    pub max_entries: Option<u64>,
    /// Deprecated: `max_memory` in bytes, without a unit.
    #[arg(long, env = "HERDGUARD_MAX_CACHE_BYTES", hide = true)]
    pub max_cache_bytes: Option<u64>,
    /// Largest origin response stored, bytes; larger ones are streamed through uncached.
    #[arg(long, env = "HERDGUARD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest client request body forwarded (streamed), bytes (larger: 413).
    #[arg(long, env = "HERDGUARD_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: Option<usize>,
    /// Largest client request head (line + headers), bytes (larger: 431).
    #[arg(long, env = "HERDGUARD_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Largest response stored in Redis, bytes; larger ones coalesce in process only.
    #[arg(long, env = "HERDGUARD_REDIS_MAX_VALUE_BYTES")]
    pub redis_max_value_bytes: Option<usize>,
    /// Origin timeout for a whole answer, milliseconds (then 504).
    #[arg(long, env = "HERDGUARD_ORIGIN_TIMEOUT_MS")]
    pub origin_timeout_ms: Option<u64>,
    /// Origin connect timeout, milliseconds (then 502).
    #[arg(long, env = "HERDGUARD_ORIGIN_CONNECT_TIMEOUT_MS")]
    pub origin_connect_timeout_ms: Option<u64>,
    /// Cap of heuristic freshness (Last-Modified based), seconds.
    #[arg(long, env = "HERDGUARD_HEURISTIC_MAX_SECS")]
    pub heuristic_max_secs: Option<u64>,
    /// Stale-if-error window when the origin gives none, seconds.
    #[arg(long, env = "HERDGUARD_STALE_IF_ERROR_SECS")]
    pub stale_if_error_secs: Option<u64>,
    /// How long a response found uncacheable makes its URL skip coalescing, seconds.
    #[arg(long, env = "HERDGUARD_HIT_FOR_MISS_SECS")]
    pub hit_for_miss_secs: Option<u64>,
    /// Key prefix in Redis.
    #[arg(long, env = "HERDGUARD_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Timeout of one Redis operation, milliseconds; past it the proxy degrades
    /// to per-instance coalescing for a moment.
    #[arg(long, env = "HERDGUARD_REDIS_OP_TIMEOUT_MS")]
    pub redis_op_timeout_ms: Option<u64>,
    /// Identity of the origin in Redis key names (default: derived from --origin), so
    /// sidecars of different services on one Redis never share entries. Give sidecars
    /// of one service that name its origin differently the same value.
    #[arg(long, env = "HERDGUARD_CACHE_NAMESPACE")]
    pub cache_namespace: Option<String>,
    /// Parts of a request in its cache key, comma-separated, from host, path, query
    /// (default: host,path,query; path is required).
    #[arg(long, env = "HERDGUARD_CACHE_KEY")]
    pub cache_key: Option<String>,
    /// How the query takes part in the key: as-is or sorted (default: as-is).
    #[arg(long, env = "HERDGUARD_CACHE_KEY_QUERY")]
    pub cache_key_query: Option<String>,
    /// Request no-cache / max-age / Pragma: "revalidate" (one coalesced revalidation
    /// per key, result stored; default) or "ignore" (as nginx and Varnish do).
    #[arg(long, env = "HERDGUARD_REQUEST_CACHE_CONTROL")]
    pub request_cache_control: Option<String>,
    /// Peers (addresses or CIDR blocks, comma-separated) whose Forwarded and
    /// X-Forwarded-* fields are kept; from anyone else they are dropped (default: none).
    #[arg(long, env = "HERDGUARD_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Serving threads, each with its own single-threaded runtime and its own
    /// listening socket (SO_REUSEPORT: the kernel spreads connections over them);
    /// default one per core but one, left to the application the sidecar serves
    /// (at least one).
    #[arg(long, env = "HERDGUARD_THREADS")]
    pub threads: Option<usize>,
    /// Most client connections open at once; more wait to be accepted (default 4096).
    #[arg(long, env = "HERDGUARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most admin connections open at once (default 64).
    #[arg(long, env = "HERDGUARD_ADMIN_MAX_CONNECTIONS")]
    pub admin_max_connections: Option<usize>,
    /// Time for a client to send a request head, from the connection's start or the
    /// head's first byte, milliseconds (default 10000).
    #[arg(long, env = "HERDGUARD_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Time a keep-alive connection may wait for its next request, milliseconds (default 60000).
    #[arg(long, env = "HERDGUARD_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Longest pause inside a request body, milliseconds (default 30000; then 408).
    #[arg(long, env = "HERDGUARD_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Longest a write to a client may make no progress, milliseconds (default 30000;
    /// then the connection is closed).
    #[arg(long, env = "HERDGUARD_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    /// One log line per request (target `herdguard::access`, in the log
    /// format of `--log-format`): method, path, status, bytes, times, result.
    #[arg(long, env = "HERDGUARD_ACCESS_LOG")]
    pub access_log: bool,
    /// Send the origin the client's host (normalised, as in the cache key) as
    /// its `Host`, instead of the origin URL's (one origin serving several
    /// virtual hosts); the TLS server name stays the origin URL's. Needs
    /// `host` in the cache key.
    #[arg(long, env = "HERDGUARD_KEEP_CLIENT_HOST")]
    pub keep_client_host: bool,
    // The proxy listener's TLS and HTTP/2 settings.
    /// PEM certificate chain (leaf first) of the proxy listener: with `--tls-key`
    /// it speaks TLS, ALPN h2 and http/1.1 (default: plain HTTP/1.1 and h2c).
    #[arg(long, env = "HERDGUARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HERDGUARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Most requests in flight at once on one HTTP/2 connection (default 256;
    /// more are refused with REFUSED_STREAM).
    #[arg(long, env = "HERDGUARD_H2_MAX_CONCURRENT_STREAMS")]
    pub h2_max_concurrent_streams: Option<u32>,
}

/// What a request's own cache directives (`no-cache`, `max-age`, `min-fresh`,
/// `max-stale`, `only-if-cached`, `Pragma: no-cache`) do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestCacheControl {
    /// Obeyed; a forced revalidation is coalesced with every caller of the key
    /// and its result stored.
    Revalidate,
    /// Ignored, as nginx and Varnish do by default.
    Ignore,
}

/// A TOML value that may be one comma-separated string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn joined(self) -> String {
        match self {
            StringOrList::One(s) => s,
            StringOrList::Many(v) => v.join(","),
        }
    }
}

/// A size in the TOML file: `"2GiB"` or a number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// Parses a size with a unit (`64MiB`, `2 GiB`, `1.5GB`) or plain bytes.
fn parse_size(field: &str, text: &str) -> Result<u64, ConfigError> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| invalid(field, format!("{text:?} is not a size like 512MiB or 2GiB")))
}

/// The TOML file: the same fields as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    origin: Option<String>,
    origin_ca: Option<PathBuf>,
    redis: Option<String>,
    redis_cluster: Option<StringOrList>,
    redis_lock_servers: Option<StringOrList>,
    admin: Option<String>,
    purge_token: Option<String>,
    cache_target: Option<String>,
    max_memory: Option<SizeValue>,
    max_object_percent: Option<u64>,
    max_entries: Option<u64>,
    max_cache_bytes: Option<u64>,
    max_body_bytes: Option<usize>,
    max_request_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    redis_max_value_bytes: Option<usize>,
    origin_timeout_ms: Option<u64>,
    origin_connect_timeout_ms: Option<u64>,
    heuristic_max_secs: Option<u64>,
    stale_if_error_secs: Option<u64>,
    hit_for_miss_secs: Option<u64>,
    redis_prefix: Option<String>,
    redis_op_timeout_ms: Option<u64>,
    cache_namespace: Option<String>,
    cache_key: Option<StringOrList>,
    cache_key_query: Option<String>,
    request_cache_control: Option<String>,
    trusted_proxies: Option<StringOrList>,
    threads: Option<usize>,
    max_connections: Option<usize>,
    admin_max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    access_log: Option<bool>,
    keep_client_host: Option<bool>,
    /// The log filter (as `--log-level`), applied at start and on reload when
    /// neither `--log-level` nor `RUST_LOG` set one.
    log_level: Option<String>,
    /// Per-path rules, in order (`[[rule]]` tables).
    #[serde(default)]
    rule: Vec<RuleFile>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    h2_max_concurrent_streams: Option<u32>,
}

/// An invalid setting, named by its field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The setting (flag name without dashes).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A secret setting: its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Validated settings of one proxy.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Proxy listen address.
    pub listen: SocketAddr,
    /// Origin base URL.
    pub origin: Uri,
    /// The roots an `https://` origin's certificate must chain to.
    pub origin_trust: OriginTrust,
    /// Redis URL, if fleet-wide.
    pub redis: Option<String>,
    /// Redis Cluster seeds, if fleet-wide on a cluster.
    pub redis_cluster: Vec<String>,
    /// Lock servers for quorum leases (empty: leases in the data store).
    pub redis_lock_servers: Vec<String>,
    /// Admin listen address, if any.
    pub admin: Option<SocketAddr>,
    /// The purge endpoint's bearer token (`None`: purge disabled).
    pub purge_token: Option<Secret>,
    /// Targeted cache-control fields obeyed.
    pub cache_targets: Vec<HeaderName>,
    /// Most responses in memory.
    pub max_entries: u64,
    /// The memory budget of cached responses, bytes.
    pub max_memory: u64,
    /// Largest origin answer stored (larger ones pass through).
    pub max_body_bytes: usize,
    /// Largest client body forwarded.
    pub max_request_body_bytes: usize,
    /// Largest client request head.
    pub max_header_bytes: usize,
    /// Largest value stored in Redis.
    pub redis_max_value_bytes: usize,
    /// Origin timeout.
    pub origin_timeout: Duration,
    /// Origin connect timeout.
    pub origin_connect_timeout: Duration,
    /// Heuristic freshness cap.
    pub heuristic_max: Duration,
    /// Default stale-if-error window.
    pub stale_if_error: Duration,
    /// Hit-for-miss period.
    pub hit_for_miss: Duration,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// Redis operation timeout.
    pub redis_op_timeout: Duration,
    /// The origin's identity in Redis key names.
    pub cache_namespace: String,
    /// What makes a primary key.
    pub cache_key: KeyConfig,
    /// What request cache directives do.
    pub request_cache_control: RequestCacheControl,
    /// Peers whose forwarding fields are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Serving threads (each a single-threaded runtime with its own listener).
    pub threads: usize,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Most admin connections at once.
    pub admin_max_connections: usize,
    /// Header, idle and write limits of every connection (proxy and admin).
    pub connection_limits: ConnectionLimits,
    /// Longest pause inside a request body.
    pub body_read_timeout: Duration,
    /// Whether each request is logged (`herdguard::access`).
    pub access_log: bool,
    /// Whether the origin gets the client's host as its `Host`.
    pub keep_client_host: bool,
    /// The per-path rules (`[[rule]]`), in order.
    pub path_rules: PathRules,
    /// The largest response stored, as a share of `max_memory`, percent.
    pub max_object_percent: u64,
    /// The file's log filter, if it gives one.
    pub log_level: Option<String>,
    /// The proxy listener's certificate and key (`None`: plain HTTP).
    pub tls: Option<crate::tls::TlsConfig>,
    /// Most requests in flight on one HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
}

impl ServeArgs {
    /// Flags over the `--config` file over defaults, validated.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid("config", format!("{}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| {
                    invalid(
                        "config",
                        format!("{}: {}", path.display(), e.message().replace('\n', " ")),
                    )
                })?
            }
        };
        macro_rules! pick {
            ($f:ident) => {
                self.$f.clone().or(file.$f)
            };
        }
        let listen = pick!(listen)
            .ok_or_else(|| invalid("listen", "required (e.g. --listen 127.0.0.1:8080)"))?;
        let listen = listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "listen",
                format!("{listen:?} is not an address like 127.0.0.1:8080"),
            )
        })?;
        let origin = pick!(origin)
            .ok_or_else(|| invalid("origin", "required (e.g. --origin http://127.0.0.1:9000)"))?;
        let origin_uri = origin
            .parse::<Uri>()
            .map_err(|e| invalid("origin", format!("{origin:?} is not a URL: {e}")))?;
        if !matches!(origin_uri.scheme_str(), Some("http" | "https"))
            || origin_uri.authority().is_none()
        {
            return Err(invalid(
                "origin",
                format!("{origin:?}: need an http://host:port or https://host URL"),
            ));
        }
        let origin_trust = match pick!(origin_ca) {
            None => OriginTrust::WebPki,
            Some(_) if origin_uri.scheme_str() != Some("https") => {
                return Err(invalid("origin_ca", "only for an https:// origin"))
            }
            Some(path) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| invalid("origin_ca", format!("{}: {e}", path.display())))?;
                let trust = OriginTrust::Pem(pem);
                trust
                    .roots()
                    .map_err(|e| invalid("origin_ca", format!("{}: {e}", path.display())))?;
                trust
            }
        };
        let admin = match pick!(admin) {
            None => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "admin",
                    format!("{a:?} is not an address like 127.0.0.1:9090"),
                )
            })?),
        };
        let purge_token = pick!(purge_token);
        if purge_token.as_deref().is_some_and(|t| {
            t.len() < 16 || t.contains(|c: char| c.is_whitespace() || c.is_control())
        }) {
            return Err(invalid(
                "purge_token",
                "must be at least 16 characters, without spaces",
            ));
        }
        let redis = pick!(redis);
        if let Some(r) = &redis {
            if !["redis://", "rediss://", "redis+sentinel://"]
                .iter()
                .any(|p| r.starts_with(p))
            {
                return Err(invalid(
                    "redis",
                    format!("{r:?}: need a redis:// or redis+sentinel:// URL"),
                ));
            }
        }
        let url_list = |field: &str, list: Option<String>| -> Result<Vec<String>, ConfigError> {
            let urls: Vec<String> = list
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect();
            match urls.iter().find(|u| !u.starts_with("redis://")) {
                Some(u) => Err(invalid(field, format!("{u:?}: need redis:// URLs"))),
                None => Ok(urls),
            }
        };
        let redis_cluster = url_list(
            "redis_cluster",
            self.redis_cluster
                .clone()
                .or(file.redis_cluster.map(StringOrList::joined)),
        )?;
        let redis_lock_servers = url_list(
            "redis_lock_servers",
            self.redis_lock_servers
                .clone()
                .or(file.redis_lock_servers.map(StringOrList::joined)),
        )?;
        if redis.is_some() && !redis_cluster.is_empty() {
            return Err(invalid(
                "redis_cluster",
                "set redis or redis_cluster, not both",
            ));
        }
        if !redis_lock_servers.is_empty() && redis.is_none() && redis_cluster.is_empty() {
            return Err(invalid(
                "redis_lock_servers",
                "needs redis or redis_cluster (the data store)",
            ));
        }
        let targets = pick!(cache_target).unwrap_or_else(|| "CDN-Cache-Control".to_string());
        let cache_targets = targets
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                HeaderName::from_bytes(t.as_bytes())
                    .map_err(|_| invalid("cache_target", format!("{t:?} is not a header name")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cache_key = KeyConfig::from_parts(
            &self
                .cache_key
                .clone()
                .or(file.cache_key.map(StringOrList::joined))
                .unwrap_or_else(|| "host,path,query".to_string()),
            &pick!(cache_key_query).unwrap_or_else(|| "as-is".to_string()),
        )
        .map_err(|e| invalid("cache_key", e.to_string()))?;
        let request_cache_control = match pick!(request_cache_control)
            .unwrap_or_else(|| "revalidate".to_string())
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "revalidate" => RequestCacheControl::Revalidate,
            "ignore" => RequestCacheControl::Ignore,
            other => {
                return Err(invalid(
                    "request_cache_control",
                    format!("{other:?}: use \"revalidate\" or \"ignore\""),
                ))
            }
        };
        let trusted_proxies = self
            .trusted_proxies
            .clone()
            .or(file.trusted_proxies.map(StringOrList::joined))
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "trusted_proxies",
                            format!("{t:?} is not an address or CIDR block (e.g. 10.0.0.0/8)"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cache_namespace = match pick!(cache_namespace) {
            Some(n)
                if n.is_empty() || n.contains(|c: char| c.is_whitespace() || c.is_control()) =>
            {
                return Err(invalid(
                    "cache_namespace",
                    "must be non-empty, without spaces",
                ))
            }
            Some(n) => n,
            None => origin_identity(&origin_uri),
        };
        let positive = |field: &str, v: u64| {
            if v == 0 {
                Err(invalid(field, "must be greater than zero"))
            } else {
                Ok(v)
            }
        };
        let positive_usize = |field: &str, v: usize| {
            if v == 0 {
                Err(invalid(field, "must be greater than zero"))
            } else {
                Ok(v)
            }
        };
        let max_memory = match (
            self.max_memory.clone(),
            file.max_memory.clone(),
            pick!(max_cache_bytes),
        ) {
            (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => {
                return Err(invalid(
                    "max_cache_bytes",
                    "set max_memory only (max_cache_bytes is its deprecated name)",
                ))
            }
            (Some(text), _, _) => parse_size("max_memory", &text)?,
            (None, Some(SizeValue::Text(text)), _) => parse_size("max_memory", &text)?,
            (None, Some(SizeValue::Bytes(n)), _) => n,
            (None, None, Some(n)) => n,
            (None, None, None) => 256 << 20,
        };
        let max_memory = positive("max_memory", max_memory)?;
        let max_object_percent = pick!(max_object_percent).unwrap_or(10);
        if !(1..=50).contains(&max_object_percent) {
            return Err(invalid(
                "max_object_percent",
                format!("must be between 1 and 50, got {max_object_percent}"),
            ));
        }
        let max_object = max_memory / 100 * max_object_percent;
        let keep_client_host = self.keep_client_host || file.keep_client_host.unwrap_or(false);
        if keep_client_host && !cache_key.host {
            return Err(invalid(
                "keep_client_host",
                "needs host in cache_key (the origin's answer then depends on it)",
            ));
        }
        let path_rules = crate::path_rules::resolve(file.rule, max_object)?;
        // By default the budget is the only bound (one entry per 64 bytes of it
        // can never be reached: an entry weighs more than that).
        let max_entries = positive(
            "max_entries",
            pick!(max_entries).unwrap_or((max_memory / 64).max(1)),
        )?;
        let tls = match (pick!(tls_cert), pick!(tls_key)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(crate::tls::TlsConfig::load(&cert, &key)?),
            (Some(_), None) => return Err(invalid("tls_key", "needed with tls_cert")),
            (None, Some(_)) => return Err(invalid("tls_cert", "needed with tls_key")),
        };
        let h2_max_concurrent_streams = pick!(h2_max_concurrent_streams).unwrap_or(256);
        if h2_max_concurrent_streams == 0 {
            return Err(invalid(
                "h2_max_concurrent_streams",
                "must be greater than zero",
            ));
        }
        Ok(Settings {
            listen,
            origin: origin_uri,
            origin_trust,
            redis,
            redis_cluster,
            redis_lock_servers,
            admin,
            purge_token: purge_token.map(Secret),
            cache_targets,
            max_entries,
            max_memory,
            max_body_bytes: positive_usize(
                "max_body_bytes",
                pick!(max_body_bytes).unwrap_or(16 << 20),
            )?
            .min(usize::try_from(max_object).unwrap_or(usize::MAX))
            .max(1),
            max_request_body_bytes: positive_usize(
                "max_request_body_bytes",
                pick!(max_request_body_bytes).unwrap_or(16 << 20),
            )?,
            max_header_bytes: {
                let v = pick!(max_header_bytes).unwrap_or(64 << 10);
                // hyper needs room for at least one read buffer.
                if v < 8192 {
                    return Err(invalid("max_header_bytes", "must be at least 8192"));
                }
                v
            },
            redis_max_value_bytes: positive_usize(
                "redis_max_value_bytes",
                pick!(redis_max_value_bytes).unwrap_or(1 << 20),
            )?,
            origin_timeout: Duration::from_millis(positive(
                "origin_timeout_ms",
                pick!(origin_timeout_ms).unwrap_or(30_000),
            )?),
            origin_connect_timeout: Duration::from_millis(positive(
                "origin_connect_timeout_ms",
                pick!(origin_connect_timeout_ms).unwrap_or(5_000),
            )?),
            heuristic_max: Duration::from_secs(pick!(heuristic_max_secs).unwrap_or(86_400)),
            stale_if_error: Duration::from_secs(pick!(stale_if_error_secs).unwrap_or(0)),
            hit_for_miss: Duration::from_secs(positive(
                "hit_for_miss_secs",
                pick!(hit_for_miss_secs).unwrap_or(120),
            )?),
            redis_prefix: pick!(redis_prefix).unwrap_or_else(|| "herdguard:http:".to_string()),
            redis_op_timeout: Duration::from_millis(positive(
                "redis_op_timeout_ms",
                pick!(redis_op_timeout_ms).unwrap_or(250),
            )?),
            cache_namespace,
            cache_key,
            request_cache_control,
            trusted_proxies,
            threads: positive_usize("threads", pick!(threads).unwrap_or_else(default_threads))?,
            max_connections: positive_usize(
                "max_connections",
                pick!(max_connections).unwrap_or(4096),
            )?,
            admin_max_connections: positive_usize(
                "admin_max_connections",
                pick!(admin_max_connections).unwrap_or(64),
            )?,
            connection_limits: ConnectionLimits {
                header_read: Duration::from_millis(positive(
                    "header_read_timeout_ms",
                    pick!(header_read_timeout_ms).unwrap_or(10_000),
                )?),
                idle: Duration::from_millis(positive(
                    "idle_timeout_ms",
                    pick!(idle_timeout_ms).unwrap_or(60_000),
                )?),
                write: Duration::from_millis(positive(
                    "write_timeout_ms",
                    pick!(write_timeout_ms).unwrap_or(30_000),
                )?),
            },
            body_read_timeout: Duration::from_millis(positive(
                "body_read_timeout_ms",
                pick!(body_read_timeout_ms).unwrap_or(30_000),
            )?),
            // A flag can only turn it on; the file may too.
            access_log: self.access_log || file.access_log.unwrap_or(false),
            keep_client_host,
            path_rules,
            max_object_percent,
            log_level: file.log_level,
            tls,
            h2_max_concurrent_streams,
        })
    }
}

/// A short, stable name of an origin (scheme, authority and base path, lowercased):
/// the first 12 hex digits of its SHA-256.
fn origin_identity(origin: &Uri) -> String {
    use sha2::Digest;
    let text = format!(
        "{}://{}{}",
        origin.scheme_str().unwrap_or("http"),
        origin.authority().map_or("", |a| a.as_str()),
        origin.path().trim_end_matches('/')
    )
    .to_ascii_lowercase();
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            listen: Some("127.0.0.1:0".into()),
            origin: Some("http://127.0.0.1:9".into()),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn defaults_resolve() {
        let s = args().resolve().unwrap();
        assert_eq!(
            s.cache_targets,
            vec![HeaderName::from_static("cdn-cache-control")]
        );
    }

    #[test]
    fn max_memory_takes_units_and_bounds_the_largest_object() {
        let s = args().resolve().unwrap();
        assert_eq!(s.max_memory, 256 << 20);
        // 10 % of 256 MiB is above the 16 MiB default.
        assert_eq!(s.max_body_bytes, 16 << 20);
        let mut a = args();
        a.max_memory = Some("64MiB".into());
        let s = a.resolve().unwrap();
        assert_eq!(s.max_memory, 64 << 20);
        assert_eq!(s.max_body_bytes, (64 << 20) / 100 * 10);
        let mut a = args();
        a.max_memory = Some("2 GiB".into());
        a.max_object_percent = Some(1);
        let s = a.resolve().unwrap();
        assert_eq!(s.max_memory, 2 << 30);
        assert_eq!(s.max_body_bytes, 16 << 20);
        for bad in ["", "lots", "-1MiB", "0"] {
            let mut a = args();
            a.max_memory = Some(bad.into());
            assert_eq!(a.resolve().unwrap_err().field, "max_memory", "{bad:?}");
        }
        let mut a = args();
        a.max_object_percent = Some(80);
        assert_eq!(a.resolve().unwrap_err().field, "max_object_percent");
        let mut a = args();
        a.max_memory = Some("1GiB".into());
        a.max_cache_bytes = Some(1 << 30);
        assert_eq!(a.resolve().unwrap_err().field, "max_cache_bytes");
        // The deprecated name alone still works.
        let mut a = args();
        a.max_cache_bytes = Some(1 << 20);
        assert_eq!(a.resolve().unwrap().max_memory, 1 << 20);
    }

    #[test]
    fn errors_name_the_field() {
        let mut a = args();
        a.origin = Some("ftp://x".into());
        assert_eq!(a.resolve().unwrap_err().field, "origin");
        let mut a = args();
        a.origin_timeout_ms = Some(0);
        assert_eq!(a.resolve().unwrap_err().field, "origin_timeout_ms");
        for (field, set) in [
            (
                "trusted_proxies",
                (|a: &mut ServeArgs| a.trusted_proxies = Some("10.0.0.0/8, nope".into()))
                    as fn(&mut ServeArgs),
            ),
            ("request_cache_control", |a| {
                a.request_cache_control = Some("sometimes".into())
            }),
            ("cache_key", |a| a.cache_key = Some("host,query".into())),
            ("cache_key", |a| a.cache_key_query = Some("shuffled".into())),
            ("max_connections", |a| a.max_connections = Some(0)),
            ("header_read_timeout_ms", |a| {
                a.header_read_timeout_ms = Some(0)
            }),
            ("cache_namespace", |a| {
                a.cache_namespace = Some("a b".into())
            }),
            ("redis_cluster", |a| {
                a.redis = Some("redis://127.0.0.1:1".into());
                a.redis_cluster = Some("redis://127.0.0.1:2".into());
            }),
            ("redis_cluster", |a| {
                a.redis_cluster = Some("127.0.0.1:2".into())
            }),
            ("redis_lock_servers", |a| {
                a.redis_lock_servers = Some("redis://127.0.0.1:3".into())
            }),
        ] {
            let mut a = args();
            set(&mut a);
            assert_eq!(a.resolve().unwrap_err().field, field);
        }
    }

    #[test]
    fn new_settings_resolve() {
        let mut a = args();
        a.trusted_proxies = Some("10.0.0.0/8, 127.0.0.1".into());
        a.request_cache_control = Some("ignore".into());
        a.cache_key = Some("path,query".into());
        a.cache_key_query = Some("sorted".into());
        let s = a.resolve().unwrap();
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.request_cache_control, RequestCacheControl::Ignore);
        assert!(!s.cache_key.host);
        // Different origins, different namespaces; the same origin, the same one.
        let other = ServeArgs {
            origin: Some("http://127.0.0.1:10".into()),
            ..args()
        };
        assert_ne!(other.resolve().unwrap().cache_namespace, s.cache_namespace);
        assert_eq!(args().resolve().unwrap().cache_namespace, s.cache_namespace);
    }

    #[test]
    fn file_is_read_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("hg-proxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\norigin = \"http://127.0.0.1:2\"\nmax_entries = 7\n",
        )
        .unwrap();
        let a = ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:3".into()),
            ..ServeArgs::default()
        };
        let s = a.resolve().unwrap();
        assert_eq!(s.listen.port(), 3);
        assert_eq!(s.max_entries, 7);
        std::fs::write(&path, "max_entrys = 7\n").unwrap();
        let e = a.resolve().unwrap_err();
        assert!(e.to_string().contains("max_entrys"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
