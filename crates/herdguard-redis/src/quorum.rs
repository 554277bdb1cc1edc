//! Quorum leases (the Redlock algorithm) over independent lock servers.
//!
//! A lease is held when a majority of the lock servers granted it
//! (`SET lock token NX PX ttl` on each, in parallel) within the lease's
//! validity: the TTL minus the time the acquisition took and a clock-drift
//! margin (1 % of the TTL plus 2 ms). Otherwise it is given back on every
//! server (compare-and-delete) at once. Renewal needs a majority too
//! (compare-and-pexpire), and the release goes to all of them.
//!
//! The lock alone does not keep data safe: a holder paused past its validity
//! (a GC pause, a lost majority after lock servers restarted empty) still
//! believes it holds the lease. So the grant also advances the key's version
//! in the data store (see `FENCE` in `scripts.rs`), and the write of a load is
//! fenced on that version there, exactly as with a single-server lease.
//!
//! Lock servers that are unreachable when the remote connects are connected
//! lazily, at the next use, so a minority of them may be down from the start.
//!
//! What the votes found is counted ([`QuorumStats`]): grants, split votes,
//! validity spent acquiring, majorities missing, and each server's failures —
//! a server that keeps failing is a majority one failure closer to degrading.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::aio::ConnectionManager;
use redis::{RedisError, TlsCertificates};
use tokio::sync::OnceCell;

use crate::config::{redact_url, RedisSetupError};

use crate::scripts::Scripts;

/// The clock-drift margin of a lease of `ttl`: 1 % of it plus 2 ms (the
/// Redlock algorithm's factor, plus the millisecond granularity of `PX` twice).
pub(crate) fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// How long a lease of `ttl`, acquired in `elapsed`, is still valid; `None`
/// when it is not.
pub(crate) fn validity(ttl: Duration, elapsed: Duration) -> Option<Duration> {
    ttl.checked_sub(elapsed + drift(ttl))
        .filter(|v| !v.is_zero())
}

/// One independent lock server.
struct LockServer {
    url: String,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    /// Commands it failed (no connection, no answer in time, an error).
    failures: AtomicU64,
}

/// The lock servers of quorum leases.
pub(crate) struct Quorum {
    servers: Vec<LockServer>,
    majority: usize,
    op_timeout: Duration,
    connect_timeout: Duration,
    granted: AtomicU64,
    split_votes: AtomicU64,
    validity_spent: AtomicU64,
    unavailable: AtomicU64,
}

/// What the quorum leases of one [`RedisRemote`](crate::RedisRemote) found
/// since it connected ([`RedisRemote::quorum_stats`](crate::RedisRemote::quorum_stats)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuorumStats {
    /// Leases held: a majority granted within the validity.
    pub granted: u64,
    /// Votes in which some lock servers granted the lease but fewer than a
    /// majority (contenders asking at once, or servers failing): given back
    /// and retried after 2–20 ms, at most twice per acquisition.
    pub split_votes: u64,
    /// Votes a majority granted too late: the acquisition took the lease's
    /// validity (TTL minus the drift margin). Given back.
    pub validity_spent: u64,
    /// Acquisitions and renewals that failed because fewer than a majority of
    /// the lock servers answered: the cache degrades meanwhile.
    pub unavailable: u64,
    /// Each lock server's failed commands (no connection, no answer within
    /// `op_timeout`, an error), by URL (its password hidden: it becomes a
    /// metric's label) in the configured order.
    pub server_failures: Vec<(String, u64)>,
}

/// What an attempt to take a quorum lease found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// A majority granted it, within its validity.
    Held,
    /// Another holder has it (or the vote split): given back everywhere.
    Taken,
    /// Fewer than a majority of the lock servers answered.
    Unavailable(String),
}

/// One server's answer.
enum Answer {
    Yes,
    No,
    Failed(String),
}

/// How many split votes are retried (after a short random delay, as the
/// Redlock algorithm prescribes) before the attempt counts as taken.
const SPLIT_RETRIES: usize = 2;

impl Quorum {
    /// The lock servers at `urls` (parsed now; connected by [`Quorum::connect`]),
    /// over TLS with `tls` for `rediss://` ones.
    pub(crate) fn new(
        urls: &[String],
        tls: Option<&TlsCertificates>,
        op_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, RedisSetupError> {
        let servers = urls
            .iter()
            .map(|url| {
                crate::conn::client(url, tls).map(|client| LockServer {
                    url: url.clone(),
                    client,
                    conn: OnceCell::new(),
                    failures: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let majority = servers.len() / 2 + 1;
        Ok(Quorum {
            servers,
            majority,
            op_timeout,
            connect_timeout,
            granted: AtomicU64::new(0),
            split_votes: AtomicU64::new(0),
            validity_spent: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
        })
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> QuorumStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QuorumStats {
            granted: read(&self.granted),
            split_votes: read(&self.split_votes),
            validity_spent: read(&self.validity_spent),
            unavailable: read(&self.unavailable),
            server_failures: self
                .servers
                .iter()
                .map(|s| (redact_url(&s.url), read(&s.failures)))
                .collect(),
        }
    }

    /// How many lock servers there are.
    pub(crate) fn len(&self) -> usize {
        self.servers.len()
    }

    /// How many grants make a lease.
    pub(crate) fn majority(&self) -> usize {
        self.majority
    }

    /// Connects to every lock server (within `connect_timeout`, in parallel);
    /// fails unless a majority answered, or when any refused the TLS handshake
    /// (a misconfiguration retrying will not cure). The others are retried at
    /// each use.
    pub(crate) async fn connect(&self) -> Result<(), RedisSetupError> {
        let answers: Vec<_> = self
            .servers
            .iter()
            .map(|s| async move {
                let made = tokio::time::timeout(self.connect_timeout, self.manager(s)).await;
                match made {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(crate::conn::setup_error(&s.url, &e)),
                    Err(_) => Err(RedisSetupError::Unreachable {
                        url: s.url.clone(),
                        reason: format!("no connection within {:?}", self.connect_timeout),
                    }),
                }
            })
            .collect::<FuturesUnordered<_>>()
            .collect()
            .await;
        let up = answers.iter().filter(|a| a.is_ok()).count();
        let mut errors: Vec<RedisSetupError> =
            answers.into_iter().filter_map(Result::err).collect();
        if let Some(i) = errors
            .iter()
            .position(|e| matches!(e, RedisSetupError::Tls { .. }))
        {
            return Err(errors.swap_remove(i));
        }
        if up >= self.majority {
            return Ok(());
        }
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Err(RedisSetupError::QuorumUnreachable {
            reason: format!(
                "{up} of {} lock servers reachable, {} needed: {}",
                self.servers.len(),
                self.majority,
                errors.join("; ")
            ),
        })
    }

    /// The server's connection manager, made now if it has none yet.
    async fn manager(&self, server: &LockServer) -> Result<ConnectionManager, RedisError> {
        let config = crate::conn::manager_config(self.connect_timeout, Some(self.op_timeout));
        server
            .conn
            .get_or_try_init(|| ConnectionManager::new_with_config(server.client.clone(), config))
            .await
            .cloned()
    }

    /// The server's connection, made now if it has none yet (within `limit`).
    async fn conn(
        &self,
        server: &LockServer,
        limit: Duration,
    ) -> Result<ConnectionManager, String> {
        match tokio::time::timeout(limit, self.manager(server)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(format!("{}: {e}", redact_url(&server.url))),
            Err(_) => Err(format!(
                "{}: no connection within {limit:?}",
                redact_url(&server.url)
            )),
        }
    }

    /// Runs `f` on one server under the operation timeout. A connection found
    /// broken (the server restarted since its last use) is reconnected and the
    /// command sent once more, within the same bound: every command here is
    /// safe to repeat (a repeated `SET NX` of ours answers "no", which only
    /// undercounts a grant; the release goes to every server anyway).
    async fn on<T, F, Fut>(&self, server: &LockServer, f: F) -> Result<T, String>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let run = async {
            let conn = self.conn(server, self.op_timeout).await?;
            match f(conn.clone()).await {
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    f(conn).await.map_err(|e| format!("{}: {e}", server.url))
                }
                other => other.map_err(|e| format!("{}: {e}", server.url)),
            }
        };
        let left = self.op_timeout.saturating_sub(started.elapsed());
        let result = tokio::time::timeout(left, run).await.unwrap_or_else(|_| {
            Err(format!(
                "{}: no answer within {:?}",
                server.url, self.op_timeout
            ))
        });
        if result.is_err() {
            server.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Asks every server in parallel, until a majority said yes or can no
    /// longer say it. Answers still on their way are dropped (a late grant is
    /// the caller's token, given back by [`Quorum::release`] on all servers).
    async fn vote<F, Fut>(&self, ask: F) -> (usize, usize, Vec<String>)
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<bool>>,
    {
        let n = self.servers.len();
        let mut pending: FuturesUnordered<_> = self
            .servers
            .iter()
            .map(|s| async {
                match self.on(s, &ask).await {
                    Ok(true) => Answer::Yes,
                    Ok(false) => Answer::No,
                    Err(e) => Answer::Failed(e),
                }
            })
            .collect();
        let (mut yes, mut no, mut failed) = (0, 0, Vec::new());
        while let Some(answer) = pending.next().await {
            match answer {
                Answer::Yes => yes += 1,
                Answer::No => no += 1,
                Answer::Failed(e) => failed.push(e),
            }
            if yes >= self.majority || no + failed.len() > n - self.majority {
                break;
            }
        }
        (yes, no, failed)
    }

    /// Tries to take the lock `key` with `token` for `ttl`.
    pub(crate) async fn acquire(
        &self,
        scripts: &Scripts,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Acquired {
        let px = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let (yes, _no, failed) = self
                .vote(|mut conn| async move {
                    let set: Option<String> = redis::cmd("SET")
                        .arg(key)
                        .arg(token)
                        .arg("NX")
                        .arg("PX")
                        .arg(px)
                        .query_async(&mut conn)
                        .await?;
                    Ok(set.is_some())
                })
                .await;
            if yes >= self.majority {
                if validity(ttl, started.elapsed()).is_some() {
                    self.granted.fetch_add(1, Ordering::Relaxed);
                    return Acquired::Held;
                }
                self.validity_spent.fetch_add(1, Ordering::Relaxed);
            }
            // Not held: give back whatever was granted, at once.
            self.release(scripts, key, token).await;
            if failed.len() > self.servers.len() - self.majority {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                return Acquired::Unavailable(format!(
                    "quorum lease: {} of {} lock servers failed, {} grants needed: {}",
                    failed.len(),
                    self.servers.len(),
                    self.majority,
                    failed.join("; ")
                ));
            }
            // Granted by some but not a majority: a split vote among contenders
            // (or a validity spent acquiring). Retry after a random delay.
            if yes > 0 && yes < self.majority {
                self.split_votes.fetch_add(1, Ordering::Relaxed);
            }
            if yes == 0 || attempt >= SPLIT_RETRIES {
                return Acquired::Taken;
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(2..=20))).await;
        }
    }

    /// Extends the lock if a majority still has it as ours, within the new
    /// validity: `Ok(false)` when they do not, `Err` when fewer than a
    /// majority answered.
    pub(crate) async fn renew(
        &self,
        scripts: &Scripts,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, String> {
        let px = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let started = Instant::now();
        let (yes, _no, failed) = self
            .vote(|mut conn| async move {
                let renewed: i64 = scripts
                    .renew
                    .key(key)
                    .arg(token)
                    .arg(px)
                    .invoke_async(&mut conn)
                    .await?;
                Ok(renewed == 1)
            })
            .await;
        if yes >= self.majority {
            return Ok(validity(ttl, started.elapsed()).is_some());
        }
        if failed.len() > self.servers.len() - self.majority {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "quorum lease renewal: {} of {} lock servers failed: {}",
                failed.len(),
                self.servers.len(),
                failed.join("; ")
            ));
        }
        Ok(false)
    }

    /// Gives the lock back on every server where `token` still holds it
    /// (compare-and-delete), in parallel, best effort: a server that does not
    /// answer lets it expire.
    pub(crate) async fn release(&self, scripts: &Scripts, key: &str, token: &str) {
        let all: FuturesUnordered<_> = self
            .servers
            .iter()
            .map(|s| {
                self.on(s, |mut conn| async move {
                    scripts
                        .unlock
                        .key(key)
                        .arg(token)
                        .invoke_async::<i64>(&mut conn)
                        .await
                })
            })
            .collect();
        let _: Vec<_> = all.collect().await;
    }

    /// Deletes the lock on every server whoever holds it (an invalidation
    /// voids the load in flight: a new one may start at once). Best effort.
    pub(crate) async fn clear(&self, key: &str) {
        let all: FuturesUnordered<_> = self
            .servers
            .iter()
            .map(|s| {
                self.on(s, |mut conn| async move {
                    redis::cmd("DEL")
                        .arg(key)
                        .query_async::<i64>(&mut conn)
                        .await
                })
            })
            .collect();
        let _: Vec<_> = all.collect().await;
    }

    /// Whether a majority of the lock servers answer PING.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        let (yes, _no, failed) = self
            .vote(|mut conn| async move {
                let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
                Ok(pong == "PONG")
            })
            .await;
        if yes >= self.majority {
            Ok(())
        } else {
            Err(format!(
                "quorum lease: {yes} of {} lock servers answer PING, {} needed: {}",
                self.servers.len(),
                self.majority,
                failed.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_subtracts_the_time_taken_and_the_drift() {
        let ttl = Duration::from_secs(1);
        assert_eq!(drift(ttl), Duration::from_millis(12));
        assert_eq!(
            validity(ttl, Duration::from_millis(100)),
            Some(Duration::from_millis(888))
        );
        assert_eq!(validity(ttl, Duration::from_millis(988)), None);
        assert_eq!(validity(ttl, Duration::from_secs(2)), None);
    }

    #[test]
    fn majority_of_five_is_three_and_of_four_is_three() {
        let urls = |n: u16| -> Vec<String> {
            (0..n)
                .map(|i| format!("redis://127.0.0.1:{}/", 1 + i))
                .collect()
        };
        let d = Duration::from_millis(10);
        assert_eq!(Quorum::new(&urls(5), None, d, d).unwrap().majority(), 3);
        assert_eq!(Quorum::new(&urls(4), None, d, d).unwrap().majority(), 3);
        assert_eq!(Quorum::new(&urls(1), None, d, d).unwrap().majority(), 1);
    }

    #[test]
    fn lock_server_counters_name_urls_without_their_password() {
        let d = Duration::from_millis(100);
        let quorum = Quorum::new(
            &["rediss://app:s3cret@10.0.0.1:6380/".to_string()],
            None,
            d,
            d,
        )
        .unwrap();
        assert_eq!(
            quorum.stats().server_failures,
            vec![("rediss://app:***@10.0.0.1:6380/".to_string(), 0)]
        );
    }
}
