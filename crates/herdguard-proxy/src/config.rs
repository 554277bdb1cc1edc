//! Configuration: flags and `HERDGUARD_*` environment variables (clap) over a
//! TOML file (`--config`) over defaults, resolved into validated [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Uri};
use serde::Deserialize;

/// `herdguard serve` flags. Every flag also reads an environment variable, and
/// every field (without the leading `--`, dashes as underscores) may be set in
/// the TOML file; a flag or variable wins over the file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to serve the proxy on, e.g. 127.0.0.1:8080.
    #[arg(long, env = "HERDGUARD_LISTEN")]
    pub listen: Option<String>,
    /// The origin's base URL, e.g. http://127.0.0.1:9000.
    #[arg(long, env = "HERDGUARD_ORIGIN")]
    pub origin: Option<String>,
    /// Redis URL for fleet-wide coalescing and a shared cache tier.
    #[arg(long, env = "HERDGUARD_REDIS")]
    pub redis: Option<String>,
    /// Address of the admin listener (/metrics, /healthz, /readyz).
    #[arg(long, env = "HERDGUARD_ADMIN")]
    pub admin: Option<String>,
    /// TOML file with any of these settings.
    #[arg(long, env = "HERDGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// RFC 9213 targeted cache-control fields this cache obeys, in order of
    /// precedence, comma-separated (default: CDN-Cache-Control).
    #[arg(long, env = "HERDGUARD_CACHE_TARGET")]
    pub cache_target: Option<String>,
    /// Most responses kept in memory.
    #[arg(long, env = "HERDGUARD_MAX_ENTRIES")]
    pub max_entries: Option<u64>,
    /// Most bytes of responses kept in memory.
    #[arg(long, env = "HERDGUARD_MAX_CACHE_BYTES")]
    pub max_cache_bytes: Option<u64>,
    /// Largest origin response body accepted, bytes.
    #[arg(long, env = "HERDGUARD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest client request body accepted, bytes (larger: 413).
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
}

/// The TOML file: the same fields as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    origin: Option<String>,
    redis: Option<String>,
    admin: Option<String>,
    cache_target: Option<String>,
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

/// Validated settings of one proxy.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Proxy listen address.
    pub listen: SocketAddr,
    /// Origin base URL.
    pub origin: Uri,
    /// Redis URL, if fleet-wide.
    pub redis: Option<String>,
    /// Admin listen address, if any.
    pub admin: Option<SocketAddr>,
    /// Targeted cache-control fields obeyed.
    pub cache_targets: Vec<HeaderName>,
    /// Most responses in memory.
    pub max_entries: u64,
    /// Most bytes in memory.
    pub max_cache_bytes: u64,
    /// Largest origin body.
    pub max_body_bytes: usize,
    /// Largest client body.
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
        if origin_uri.scheme_str() != Some("http") || origin_uri.authority().is_none() {
            return Err(invalid(
                "origin",
                format!("{origin:?}: need an http://host:port URL"),
            ));
        }
        let admin = match pick!(admin) {
            None => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "admin",
                    format!("{a:?} is not an address like 127.0.0.1:9090"),
                )
            })?),
        };
        let redis = pick!(redis);
        if let Some(r) = &redis {
            if !(r.starts_with("redis://") || r.starts_with("rediss://")) {
                return Err(invalid("redis", format!("{r:?}: need a redis:// URL")));
            }
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
        Ok(Settings {
            listen,
            origin: origin_uri,
            redis,
            admin,
            cache_targets,
            max_entries: positive("max_entries", pick!(max_entries).unwrap_or(100_000))?,
            max_cache_bytes: positive(
                "max_cache_bytes",
                pick!(max_cache_bytes).unwrap_or(256 << 20),
            )?,
            max_body_bytes: positive_usize(
                "max_body_bytes",
                pick!(max_body_bytes).unwrap_or(16 << 20),
            )?,
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
        })
    }
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
    fn errors_name_the_field() {
        let mut a = args();
        a.origin = Some("ftp://x".into());
        assert_eq!(a.resolve().unwrap_err().field, "origin");
        let mut a = args();
        a.origin_timeout_ms = Some(0);
        assert_eq!(a.resolve().unwrap_err().field, "origin_timeout_ms");
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
