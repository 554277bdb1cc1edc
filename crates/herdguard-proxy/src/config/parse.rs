//! The parsers of the settings' rows: each takes the setting's name (for its
//! error) and its input, and returns the value or a [`ConfigError`] naming
//! the setting. Those that take more arguments check a rule between settings.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use herdguard_http::key::KeyConfigError;
use herdguard_http::KeyConfig;
use http::{HeaderName, Uri};
use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::error::{invalid, ConfigError};
use super::secret::Secret;
use crate::handle::proxy::RequestCacheControl;
use crate::listen::tls::TlsConfig;
use crate::origin::OriginTrust;

/// A TOML value that may be one comma-separated string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl From<StringOrList> for String {
    fn from(value: StringOrList) -> String {
        match value {
            StringOrList::One(s) => s,
            StringOrList::Many(v) => v.join(","),
        }
    }
}

/// A size in the TOML file: `"2GiB"` or a number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl From<SizeValue> for String {
    fn from(value: SizeValue) -> String {
        match value {
            SizeValue::Bytes(n) => n.to_string(),
            SizeValue::Text(text) => text,
        }
    }
}

/// The input as it is.
pub(crate) fn as_is<T>(_field: &str, input: T) -> Result<T, ConfigError> {
    Ok(input)
}

/// A number greater than zero.
pub(crate) fn positive<T: Default + PartialEq>(field: &str, n: T) -> Result<T, ConfigError> {
    if n == T::default() {
        Err(invalid(field, "must be greater than zero"))
    } else {
        Ok(n)
    }
}

/// Milliseconds, more than zero.
pub(crate) fn millis(field: &str, ms: u64) -> Result<Duration, ConfigError> {
    positive(field, ms).map(Duration::from_millis)
}

/// Seconds, zero included.
pub(crate) fn secs(_field: &str, secs: u64) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(secs))
}

/// Seconds, more than zero.
pub(crate) fn positive_secs(field: &str, secs: u64) -> Result<Duration, ConfigError> {
    positive(field, secs).map(Duration::from_secs)
}

/// A socket address, `example` showing one in the error.
pub(crate) fn address_like(
    example: &'static str,
) -> impl Fn(&str, String) -> Result<SocketAddr, ConfigError> {
    move |field, text| {
        text.parse()
            .map_err(|_| invalid(field, format!("{text:?} is not an address like {example}")))
    }
}

/// The origin's base URL: `http://` or `https://` with a host.
pub(crate) fn origin(field: &str, text: String) -> Result<Uri, ConfigError> {
    let uri = text
        .parse::<Uri>()
        .map_err(|e| invalid(field, format!("{text:?} is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(invalid(
            field,
            format!("{text:?}: need an http://host:port or https://host URL"),
        ));
    }
    Ok(uri)
}

/// The roots an `https://` `origin`'s certificate must chain to: the PEM file
/// at `path`, read and checked now.
pub(crate) fn origin_ca(
    field: &str,
    path: std::path::PathBuf,
    origin: &Uri,
) -> Result<OriginTrust, ConfigError> {
    if origin.scheme_str() != Some("https") {
        return Err(invalid(field, "only for an https:// origin"));
    }
    let pem =
        std::fs::read(&path).map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    let trust = OriginTrust::Pem(pem);
    trust
        .roots()
        .map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    Ok(trust)
}

/// A Redis setting that means nothing without a Redis URL (`with_redis`).
pub(crate) fn with_redis<T>(field: &str, value: T, with_redis: bool) -> Result<T, ConfigError> {
    if with_redis {
        Ok(value)
    } else {
        Err(invalid(field, "needs redis or redis_cluster"))
    }
}

/// Two settings given together or not at all.
pub(crate) fn pair<T>(
    first: &str,
    a: Option<T>,
    second: &str,
    b: Option<T>,
) -> Result<Option<(T, T)>, ConfigError> {
    match (a, b) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (Some(_), None) => Err(invalid(second, format!("needed with {first}"))),
        (None, Some(_)) => Err(invalid(first, format!("needed with {second}"))),
    }
}

/// A Redis URL: one server (`redis://`, `rediss://`) or a Sentinel-managed
/// primary (`redis+sentinel://`).
pub(crate) fn redis_url(field: &str, url: String) -> Result<String, ConfigError> {
    if [
        "redis://",
        "rediss://",
        "redis+sentinel://",
        "rediss+sentinel://",
    ]
    .iter()
    .any(|p| url.starts_with(p))
    {
        Ok(url)
    } else {
        Err(invalid(
            field,
            format!(
                "{:?}: need a redis://, rediss:// or redis+sentinel:// URL",
                herdguard_redis::redact_url(&url)
            ),
        ))
    }
}

/// Comma-separated `redis://` (or `rediss://`) URLs.
fn redis_urls(field: &str, list: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = items(list).map(str::to_string).collect();
    match urls
        .iter()
        .find(|u| !u.starts_with("redis://") && !u.starts_with("rediss://"))
    {
        Some(u) => Err(invalid(
            field,
            format!(
                "{:?}: need redis:// or rediss:// URLs",
                herdguard_redis::redact_url(u)
            ),
        )),
        None => Ok(urls),
    }
}

/// Redis Cluster seeds, never beside a `redis` URL (`with_redis`).
pub(crate) fn cluster(
    field: &str,
    list: String,
    with_redis: bool,
) -> Result<Vec<String>, ConfigError> {
    let seeds = redis_urls(field, &list)?;
    if with_redis && !seeds.is_empty() {
        return Err(invalid(field, "set redis or redis_cluster, not both"));
    }
    Ok(seeds)
}

/// Lock servers of quorum leases, which need a data store (`with_store`).
pub(crate) fn lock_servers(
    field: &str,
    list: String,
    with_store: bool,
) -> Result<Vec<String>, ConfigError> {
    let servers = redis_urls(field, &list)?;
    if !servers.is_empty() && !with_store {
        return Err(invalid(
            field,
            "needs redis or redis_cluster (the data store)",
        ));
    }
    Ok(servers)
}

/// A purge token: at least 16 characters, without spaces.
pub(crate) fn purge_token(field: &str, token: String) -> Result<Secret, ConfigError> {
    if token.len() < 16 || token.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            "must be at least 16 characters, without spaces",
        ));
    }
    Ok(Secret(token))
}

/// Comma-separated header field names.
pub(crate) fn header_names(field: &str, list: String) -> Result<Vec<HeaderName>, ConfigError> {
    items(&list)
        .map(|t| {
            HeaderName::from_bytes(t.as_bytes())
                .map_err(|_| invalid(field, format!("{t:?} is not a header name")))
        })
        .collect()
}

/// A size with a unit (`64MiB`, `2 GiB`, `1.5GB`) or plain bytes, more than zero.
pub(crate) fn memory(field: &str, text: String) -> Result<u64, ConfigError> {
    let bytes = match text.trim().parse::<u64>() {
        Ok(n) => n,
        Err(_) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| invalid(field, format!("{text:?} is not a size like 512MiB or 2GiB")))?,
    };
    positive(field, bytes)
}

/// A share of the memory budget, percent: 1 to 50.
pub(crate) fn percent(field: &str, n: u64) -> Result<u64, ConfigError> {
    if (1..=50).contains(&n) {
        Ok(n)
    } else {
        Err(invalid(field, format!("must be between 1 and 50, got {n}")))
    }
}

/// The largest response stored: `percent` of the memory budget.
pub(crate) fn object_cap(max_memory: u64, percent: u64) -> u64 {
    max_memory / 100 * percent
}

/// A size in bytes, more than zero and at most `cap`.
pub(crate) fn capped(field: &str, n: usize, cap: u64) -> Result<usize, ConfigError> {
    Ok(positive(field, n)?
        .min(usize::try_from(cap).unwrap_or(usize::MAX))
        .max(1))
}

/// The request head limit: at least 8192 bytes, hyper's least read buffer.
pub(crate) fn head_bytes(field: &str, n: usize) -> Result<usize, ConfigError> {
    if n < 8192 {
        return Err(invalid(field, "must be at least 8192"));
    }
    Ok(n)
}

/// A name in Redis keys: not empty, without spaces.
pub(crate) fn namespace(field: &str, name: String) -> Result<String, ConfigError> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(invalid(field, "must be non-empty, without spaces"));
    }
    Ok(name)
}

/// A short, stable name of an origin (scheme, authority and base path, lowercased):
/// the first 12 hex digits of its SHA-256.
pub(crate) fn origin_identity(origin: &Uri) -> String {
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

/// The parts of the cache key (`None`: the default), with the query taking
/// part as `query` says; the host is in it whenever the origin sees the
/// client's host (`keep_client_host` as its `Host`, `forward_host` as
/// `X-Forwarded-Host`).
pub(crate) fn cache_key(
    field: &str,
    parts: Option<&str>,
    query: &str,
    keep_client_host: bool,
    forward_host: bool,
) -> Result<KeyConfig, ConfigError> {
    KeyConfig::resolve(parts, query, keep_client_host || forward_host).map_err(|e| {
        let field = match e {
            KeyConfigError::Parts(_) => field,
            KeyConfigError::HostLeftOut if keep_client_host => "keep_client_host",
            KeyConfigError::HostLeftOut => "forward_host",
        };
        invalid(field, e.to_string())
    })
}

/// `revalidate` or `ignore`.
pub(crate) fn request_cache_control(
    field: &str,
    text: String,
) -> Result<RequestCacheControl, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "revalidate" => Ok(RequestCacheControl::Revalidate),
        "ignore" => Ok(RequestCacheControl::Ignore),
        other => Err(invalid(
            field,
            format!("{other:?}: use \"revalidate\" or \"ignore\""),
        )),
    }
}

/// Comma-separated addresses or CIDR blocks.
pub(crate) fn networks(field: &str, list: String) -> Result<Vec<IpNet>, ConfigError> {
    items(&list)
        .map(|t| {
            t.parse::<IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        field,
                        format!("{t:?} is not an address or CIDR block (e.g. 10.0.0.0/8)"),
                    )
                })
        })
        .collect()
}

/// The proxy listener's certificate and key, loaded: both or neither.
pub(crate) fn tls(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<TlsConfig>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => load_tls(cert, key).map(Some),
        (Some(_), None) => Err(invalid("tls_key", "needed with tls_cert")),
        (None, Some(_)) => Err(invalid("tls_cert", "needed with tls_key")),
    }
}

/// Reads a PEM certificate chain (`cert`, leaf first) and its private key
/// (`key`: PKCS#8, PKCS#1 or SEC1); an error names the field (`tls_cert` or
/// `tls_key`), the file and what is wrong.
fn load_tls(cert: &Path, key: &Path) -> Result<TlsConfig, ConfigError> {
    let fail = |field: &str, path: &Path, reason: String| {
        invalid(field, format!("{}: {reason}", path.display()))
    };
    let cert_pem = std::fs::read(cert).map_err(|e| fail("tls_cert", cert, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("tls_cert", cert, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(fail(
            "tls_cert",
            cert,
            "no CERTIFICATE block in the PEM".into(),
        ));
    }
    let key_pem = std::fs::read(key).map_err(|e| fail("tls_key", key, e.to_string()))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| fail("tls_key", key, format!("not a PEM private key: {e}")))?;
    let files = format!("{}, {}", cert.display(), key.display());
    TlsConfig::new(chain, private, files).map_err(|e| {
        fail(
            "tls_key",
            key,
            format!("unusable with {}: {e}", cert.display()),
        )
    })
}

/// One serving thread per core but one: a sidecar shares its host with the
/// application it serves, and threads that compete with it for every core
/// serve fewer requests, with a longer tail, than one fewer that do not (see
/// docs/performance.md).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}

/// What on the admin listener needs the purge token: `all` needs one to check.
pub(crate) fn admin_auth(
    field: &str,
    value: &str,
    token: bool,
) -> Result<crate::admin::auth::AdminAuth, ConfigError> {
    use crate::admin::auth::AdminAuth;
    match value {
        "purge" => Ok(AdminAuth::Purge),
        "all" if token => Ok(AdminAuth::All),
        "all" => Err(invalid(
            field,
            "\"all\" needs purge_token, the token it asks for",
        )),
        _ => Err(invalid(field, "must be \"purge\" or \"all\"")),
    }
}

/// Origin requests in flight at once by default: 32 per core of this machine.
/// A sidecar's origin most often runs on a machine like it, and an application
/// server rarely answers more than a few tens of requests per core at once
/// without queueing them itself; past that, they wait here, bounded, instead.
pub(crate) fn default_origin_requests() -> usize {
    32 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The non-empty items of a comma-separated list, trimmed.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty())
}
