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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

/// The scheme of a Sentinel URL.
pub(crate) const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// A parsed `redis+sentinel://host:port[,host:port…]/primary-name` URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    /// `redis://host:port/` of each sentinel.
    pub(crate) sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under.
    pub(crate) name: String,
}

impl SentinelUrl {
    /// `None` when `url` is not a Sentinel URL; `Err` when it is one, badly formed.
    pub(crate) fn parse(url: &str) -> Option<Result<SentinelUrl, String>> {
        let rest = url.strip_prefix(SENTINEL_SCHEME)?;
        Some(Self::parse_rest(rest))
    }

    fn parse_rest(rest: &str) -> Result<SentinelUrl, String> {
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
                Ok(format!("redis://{host}:{port}/"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SentinelUrl {
            sentinels,
            name: name.to_string(),
        })
    }
}

/// The data store's address: fixed, or found through Sentinel.
#[derive(Clone)]
pub(crate) enum Endpoint {
    /// One server.
    Direct(redis::Client),
    /// The primary the sentinels name.
    Sentinel(Arc<Primary>),
    /// A cluster's nodes: the change feed listens on any one of them (a
    /// `PUBLISH` on a cluster reaches every node), trying the next after a loss.
    Cluster(Arc<(Vec<redis::Client>, AtomicUsize)>),
}

impl Endpoint {
    /// A client for the data store (with Sentinel: for the primary now).
    pub(crate) async fn client(&self) -> Result<redis::Client, RedisError> {
        match self {
            Endpoint::Direct(client) => Ok(client.clone()),
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
    /// Asks the sentinels at `url` (nothing is connected yet).
    pub(crate) fn new(url: &SentinelUrl, config: AsyncConnectionConfig) -> Result<Self, String> {
        let sentinel = SentinelClient::build(
            url.sentinels.clone(),
            url.name.clone(),
            None,
            SentinelServerType::Master,
        )
        .map_err(|e| e.to_string())?;
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
                    "redis://127.0.0.1:26379/".to_string(),
                    "redis://10.0.0.2:26380/".to_string()
                ],
                name: "shop".to_string(),
            }))
        );
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
