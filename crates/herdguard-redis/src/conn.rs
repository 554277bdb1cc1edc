//! Where the data store is: one server at a fixed address, the primary that
//! Redis Sentinel names now (`redis+sentinel://host:port,host:port/name`), or a
//! Redis Cluster (`RedisConfig::cluster`).
//!
//! [`Endpoint`] makes clients for the current primary (the change feed
//! reconnects through it); [`Conn`] is the command connection every operation
//! clones. With Sentinel it asks the sentinels for the primary (redis-rs checks
//! that the server it names says it is the primary), keeps one multiplexed
//! connection to it, and forgets it at the first sign that it is gone or no
//! longer the primary (a dropped connection, `READONLY`, an operation that did
//! not answer in time), so the next operation asks the sentinels again.
//! Meanwhile operations fail as unavailable and the cache degrades; once the
//! sentinels name the promoted replica, the next operation (or the cache's
//! health probe) reaches it.
//!
//! Every client of this crate is made here ([`client`]), so `rediss://` —
//! TLS over rustls, the bundled web PKI roots or the configured private CA,
//! and the client certificate of mutual TLS — works alike for one server,
//! Sentinel, a cluster's nodes and the quorum lock servers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, TlsCertificates,
    TlsMode, Value,
};

use crate::config::{redact_url, RedisConfig, RedisSetupError};

/// The scheme of a Sentinel URL.
pub(crate) const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The scheme of a Sentinel URL whose sentinels and primary speak TLS.
pub(crate) const SENTINEL_TLS_SCHEME: &str = "rediss+sentinel://";

/// Whether `url` asks for TLS.
fn wants_tls(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with(SENTINEL_TLS_SCHEME)
}

/// A client for `url`: the one place this crate makes one. `tls` (a private
/// CA, a client certificate) applies to a `rediss://` URL and is refused for
/// any other, which would silently not use it.
pub(crate) fn client(
    url: &str,
    tls: Option<&TlsCertificates>,
) -> Result<redis::Client, RedisSetupError> {
    let made = if wants_tls(url) {
        ensure_crypto_provider();
        match tls {
            Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
            None => redis::Client::open(url),
        }
    } else if tls.is_some() {
        return Err(not_tls(url));
    } else {
        redis::Client::open(url)
    };
    made.map_err(|e| RedisSetupError::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

fn not_tls(url: &str) -> RedisSetupError {
    RedisSetupError::InvalidConfig {
        field: "ca_file",
        reason: format!(
            "a CA or client certificate is set but {} is not a rediss:// URL",
            redact_url(url)
        ),
    }
}

/// rustls needs a process-wide crypto provider; install ring (the one this
/// crate enables) unless the application chose one already.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Lost a race with another installer: theirs serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// What failed at start: the TLS handshake (a configuration fault, named as
/// such) or reaching the server.
pub(crate) fn setup_error(url: &str, e: &RedisError) -> RedisSetupError {
    match tls_failure(e) {
        Some(reason) => RedisSetupError::Tls {
            url: url.to_string(),
            reason,
        },
        None => RedisSetupError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        },
    }
}

/// The TLS layer's complaint behind `e`, if it is one. redis-rs keeps the
/// I/O error in an `Arc<dyn Error>` whose `source` skips the rustls error
/// inside, so each link is unwrapped by hand.
pub(crate) fn tls_failure(e: &RedisError) -> Option<String> {
    fn rustls_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.get_ref().and_then(|inner| rustls_in(inner));
        }
        if let Some(shared) = err.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            return rustls_in(&**shared);
        }
        None
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = rustls_in(err) {
            return Some(tls.to_string());
        }
        next = err.source();
    }
    None
}

/// Connects to the data store `config` names (one server, Sentinel or a
/// cluster) within its `connect_timeout`.
pub(crate) async fn open(
    config: &RedisConfig,
    tls: Option<&TlsCertificates>,
) -> Result<(Endpoint, Conn), RedisSetupError> {
    let deadline = config.connect_timeout;
    let unreachable = |reason: String| RedisSetupError::Unreachable {
        url: config.url.clone(),
        reason,
    };
    let invalid = |reason: String| RedisSetupError::InvalidUrl {
        url: config.url.clone(),
        reason,
    };
    if !config.cluster_seeds.is_empty() {
        let clients = config
            .cluster_seeds
            .iter()
            .map(|url| client(url, tls))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = redis::cluster::ClusterClient::builder(config.cluster_seeds.clone())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.op_timeout)
            .retries(1);
        if let Some(certs) = tls {
            builder = builder.certs(certs.clone());
        }
        let cluster = builder.build().map_err(|e| invalid(e.to_string()))?;
        let conn = match tokio::time::timeout(deadline, cluster.get_async_connection()).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "no cluster connection within {deadline:?}"
                )))
            }
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(cluster_setup_error(config, &clients, &e).await);
            }
        };
        return Ok((
            Endpoint::Cluster(Arc::new((clients, AtomicUsize::new(0)))),
            Conn::Cluster(conn),
        ));
    }
    if let Some(parsed) = SentinelUrl::parse(&config.url) {
        let parsed = parsed.map_err(invalid)?;
        let primary = Arc::new(
            Primary::new(
                &parsed,
                tls,
                connection_config(config.connect_timeout, config.op_timeout),
            )
            .map_err(invalid)?,
        );
        tokio::time::timeout(deadline, primary.connection())
            .await
            .map_err(|_| unreachable(format!("no primary within {deadline:?}")))?
            .map_err(|e| setup_error(&config.url, &e))?;
        return Ok((
            Endpoint::Sentinel(Arc::clone(&primary)),
            Conn::Sentinel(primary),
        ));
    }
    let client = client(&config.url, tls)?;
    let manager = manager(
        &client,
        &config.url,
        config.connect_timeout,
        Some(config.op_timeout),
    )
    .await?;
    Ok((Endpoint::Direct(Box::new(client)), Conn::Direct(manager)))
}

/// The settings of every plain connection of this crate: a connect and an
/// operation timeout.
pub(crate) fn connection_config(connect: Duration, op: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(op))
}

/// The settings of every `ConnectionManager` of this crate: one retry, then
/// reconnection with backoff up to 500 ms. `response` bounds each answer
/// (`None` where the caller bounds it, as for blocking reads).
pub(crate) fn manager_config(
    connect: Duration,
    response: Option<Duration>,
) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(response)
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// A `ConnectionManager` for `client` (of `url`) made at start, within
/// `connect`: a failure is a [`RedisSetupError`] ([`setup_error`]).
pub(crate) async fn manager(
    client: &redis::Client,
    url: &str,
    connect: Duration,
    response: Option<Duration>,
) -> Result<ConnectionManager, RedisSetupError> {
    let made =
        ConnectionManager::new_with_config(client.clone(), manager_config(connect, response));
    tokio::time::timeout(connect, made)
        .await
        .map_err(|_| RedisSetupError::Unreachable {
            url: url.to_string(),
            reason: format!("no connection within {connect:?}"),
        })?
        .map_err(|e| setup_error(url, &e))
}

/// Why a cluster connection failed at start: the cluster client flattens
/// its nodes' errors into text, so a refused TLS handshake is found by
/// connecting to each seed directly.
async fn cluster_setup_error(
    config: &RedisConfig,
    clients: &[redis::Client],
    e: &RedisError,
) -> RedisSetupError {
    let connection_config = connection_config(config.connect_timeout, config.op_timeout);
    for (url, client) in config.cluster_seeds.iter().zip(clients) {
        let direct = tokio::time::timeout(
            config.connect_timeout,
            client.get_multiplexed_async_connection_with_config(&connection_config),
        )
        .await;
        if let Ok(Err(direct)) = direct {
            if let Some(reason) = tls_failure(&direct) {
                return RedisSetupError::Tls {
                    url: url.clone(),
                    reason,
                };
            }
        }
    }
    setup_error(&config.url, e)
}

/// A parsed `redis+sentinel://host:port[,host:port…]/primary-name` URL
/// (`rediss+sentinel://` for TLS to the sentinels and the primary).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    /// `host:port` of each sentinel.
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub(crate) name: String,
    /// Whether the sentinels and the primary speak TLS.
    pub(crate) tls: bool,
}

impl SentinelUrl {
    /// `None` when `url` is not a Sentinel URL; `Err` when it is one, badly formed.
    pub(crate) fn parse(url: &str) -> Option<Result<SentinelUrl, String>> {
        if let Some(rest) = url.strip_prefix(SENTINEL_TLS_SCHEME) {
            return Some(Self::parse_rest(rest, true));
        }
        let rest = url.strip_prefix(SENTINEL_SCHEME)?;
        Some(Self::parse_rest(rest, false))
    }

    fn parse_rest(rest: &str, tls: bool) -> Result<SentinelUrl, String> {
        let (hosts, name) = rest
            .split_once('/')
            .ok_or("no primary name: expected redis+sentinel://host:port,…/name")?;
        let name = name.trim_end_matches('/');
        if name.is_empty() || name.contains(['/', '?', '#']) {
            return Err(format!("invalid primary name {name:?}"));
        }
        let sentinels = hosts
            .split(',')
            .map(|h| {
                let (host, port) = h
                    .rsplit_once(':')
                    .ok_or_else(|| format!("sentinel {h:?} has no port"))?;
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("sentinel {h:?} has an invalid port"))?;
                if host.is_empty() {
                    return Err(format!("sentinel {h:?} has no host"));
                }
                Ok((host.to_string(), port))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SentinelUrl {
            sentinels,
            name: name.to_string(),
            tls,
        })
    }
}

/// The data store's address: fixed, or found through Sentinel.
#[derive(Clone)]
pub(crate) enum Endpoint {
    /// One server (boxed: a TLS client's parameters make it large).
    Direct(Box<redis::Client>),
    /// The primary the sentinels name.
    Sentinel(Arc<Primary>),
    /// A cluster's nodes: the per-key feed keeps a tracking connection to
    /// every primary; the broadcast feed listens on any one node (a `PUBLISH`
    /// on a cluster reaches every node), trying the next after a loss.
    Cluster(Arc<(Vec<redis::Client>, AtomicUsize)>),
}

impl Endpoint {
    /// A client for the data store (with Sentinel: for the primary now).
    pub(crate) async fn client(&self) -> Result<redis::Client, RedisError> {
        match self {
            Endpoint::Direct(client) => Ok((**client).clone()),
            Endpoint::Sentinel(primary) => primary.sentinel.lock().await.async_get_client().await,
            Endpoint::Cluster(nodes) => {
                let (clients, next) = &**nodes;
                let i = next.fetch_add(1, Ordering::Relaxed) % clients.len().max(1);
                clients.get(i).cloned().ok_or_else(|| {
                    RedisError::from((redis::ErrorKind::InvalidClientConfig, "no cluster node"))
                })
            }
        }
    }
}

/// The current primary behind Sentinel, and one connection to it.
pub(crate) struct Primary {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: parking_lot::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
}

impl Primary {
    /// Asks the sentinels at `url` (nothing is connected yet); over TLS, with
    /// `tls` for both the sentinels and the primary.
    pub(crate) fn new(
        url: &SentinelUrl,
        tls: Option<&TlsCertificates>,
        config: AsyncConnectionConfig,
    ) -> Result<Self, String> {
        let addrs = url.sentinels.iter().map(|(host, port)| {
            let (host, port) = (host.clone(), *port);
            if url.tls {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            }
        });
        let mut builder =
            SentinelClientBuilder::new(addrs, url.name.clone(), SentinelServerType::Master)
                .map_err(|e| e.to_string())?;
        if url.tls {
            ensure_crypto_provider();
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certs) = tls {
                builder = builder
                    .set_client_to_sentinel_certificates(certs.clone())
                    .set_client_to_redis_certificates(certs.clone());
            }
        } else if tls.is_some() {
            return Err(
                "a CA or client certificate is set but the URL is not rediss+sentinel://"
                    .to_string(),
            );
        }
        let sentinel: SentinelClient = builder.build().map_err(|e| e.to_string())?;
        Ok(Primary {
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: parking_lot::Mutex::new(None),
            generation: AtomicU64::new(0),
            config,
        })
    }

    /// The connection to the primary, made now (through the sentinels) if
    /// there is none.
    pub(crate) async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(current) = self.current.lock().clone() {
            return Ok(current);
        }
        let sentinel = self.sentinel.lock().await;
        // Another caller may have connected while this one queued.
        if let Some(current) = self.current.lock().clone() {
            return Ok(current);
        }
        let conn = {
            let mut sentinel = sentinel;
            let client = sentinel.async_get_client().await?;
            client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?
        };
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.current.lock() = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forgets the connection of `generation` (or, with `None`, whichever there
    /// is): the next operation asks the sentinels again.
    pub(crate) fn forget(&self, generation: Option<u64>) {
        let mut current = self.current.lock();
        if current
            .as_ref()
            .is_some_and(|(g, _)| generation.is_none_or(|want| *g == want))
        {
            *current = None;
        }
    }
}

/// Whether `e` says the connection no longer reaches a primary.
fn gone(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        )
}

/// The command connection to the data store, cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnected by redis-rs.
    Direct(ConnectionManager),
    /// The primary the sentinels name.
    Sentinel(Arc<Primary>),
    /// A Redis Cluster (redis-rs routes each command by its keys' slot).
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    /// An operation on this connection failed or did not answer in time: with
    /// Sentinel, the primary may have changed.
    pub(crate) fn failed(&self) {
        if let Conn::Sentinel(primary) = self {
            primary.forget(None);
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Direct(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
            Conn::Sentinel(primary) => Box::pin(async move {
                let (generation, mut conn) = primary.connection().await?;
                let answer = conn.req_packed_command(cmd).await;
                if answer.as_ref().is_err_and(gone) {
                    primary.forget(Some(generation));
                }
                answer
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Direct(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(primary) => Box::pin(async move {
                let (generation, mut conn) = primary.connection().await?;
                let answer = conn.req_packed_commands(pipeline, offset, count).await;
                if answer.as_ref().is_err_and(gone) {
                    primary.forget(Some(generation));
                }
                answer
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Direct(conn) => conn.get_db(),
            Conn::Sentinel(_) | Conn::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse_and_bad_ones_do_not() {
        assert_eq!(SentinelUrl::parse("redis://127.0.0.1:6379/"), None);
        assert_eq!(
            SentinelUrl::parse("redis+sentinel://127.0.0.1:26379,10.0.0.2:26380/shop"),
            Some(Ok(SentinelUrl {
                sentinels: vec![
                    ("127.0.0.1".to_string(), 26379),
                    ("10.0.0.2".to_string(), 26380)
                ],
                name: "shop".to_string(),
                tls: false,
            }))
        );
        assert!(matches!(
            SentinelUrl::parse("rediss+sentinel://10.0.0.2:26380/shop"),
            Some(Ok(SentinelUrl { tls: true, .. }))
        ));
        for bad in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel://127.0.0.1/shop",
            "redis+sentinel://127.0.0.1:x/shop",
            "redis+sentinel://:26379/shop",
            "redis+sentinel://127.0.0.1:26379/a/b",
        ] {
            assert!(
                matches!(SentinelUrl::parse(bad), Some(Err(_))),
                "{bad} must not parse"
            );
        }
    }
}
