//! The key-value store under the `none` and `classic` strategies: Redis-like
//! `GET`, `SET PX`, `SET NX PX` and compare-and-delete, over an in-process map.
//!
//! It is the store a team writes a hand-rolled lock against, with the same
//! semantics as Redis, so `classic` pays what it pays in production: the polling.
//! With `--redis`, [`Kv::Redis`] runs the very same commands against the server;
//! with `--redis-cluster`, [`Kv::Cluster`] against the cluster (every command
//! names one key, so redis-rs sends it to the shard that owns it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

/// Where `none` and `classic` keep values and locks.
pub enum Kv {
    /// The in-process map (the embedded default).
    Memory(MemoryKv),
    /// A real Redis server: GET, SET PX, SET NX PX, and a compare-and-delete script.
    Redis(ConnectionManager),
    /// A Redis Cluster: the same commands, each routed by its key's slot.
    Cluster(ClusterConnection),
}

/// Releases a lock only if it still holds our token (the Redis distributed-lock
/// page's script), so a holder whose lock expired cannot free someone else's.
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

fn px(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Kv {
    /// Runs `cmd` on the Redis server or cluster (not on the in-process map).
    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, redis::RedisError> {
        match self {
            Kv::Redis(conn) => cmd.query_async(&mut conn.clone()).await,
            Kv::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
            Kv::Memory(_) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "the in-process store runs no Redis command",
            ))),
        }
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, redis::RedisError> {
        match self {
            Kv::Memory(m) => Ok(m.get(key)),
            _ => self.query(redis::cmd("GET").arg(key)).await,
        }
    }

    /// `SET key value PX ttl`.
    pub async fn set_px(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), redis::RedisError> {
        match self {
            Kv::Memory(m) => {
                m.set_px(key, value, ttl);
                Ok(())
            }
            _ => {
                self.query(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(px(ttl)))
                    .await
            }
        }
    }

    /// `SET key value NX PX ttl`: true when this call set it.
    pub async fn set_nx_px(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<bool, redis::RedisError> {
        match self {
            Kv::Memory(m) => Ok(m.set_nx_px(key, value, ttl)),
            _ => {
                let set: Option<String> = self
                    .query(
                        redis::cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("NX")
                            .arg("PX")
                            .arg(px(ttl)),
                    )
                    .await?;
                Ok(set.is_some())
            }
        }
    }

    /// `DEL key`.
    pub async fn del(&self, key: &str) -> Result<(), redis::RedisError> {
        match self {
            Kv::Memory(m) => {
                m.map.lock().remove(key);
                Ok(())
            }
            Kv::Redis(_) | Kv::Cluster(_) => {
                let _: i64 = self.query(redis::cmd("DEL").arg(key)).await?;
                Ok(())
            }
        }
    }

    /// Deletes `key` only if it still holds `value`.
    pub async fn del_if(&self, key: &str, value: &str) -> Result<(), redis::RedisError> {
        let script = redis::Script::new(RELEASE);
        let mut invocation = script.key(key);
        invocation.arg(value);
        let _: i64 = match self {
            Kv::Memory(m) => {
                m.del_if(key, value);
                return Ok(());
            }
            Kv::Redis(conn) => invocation.invoke_async(&mut conn.clone()).await?,
            Kv::Cluster(conn) => invocation.invoke_async(&mut conn.clone()).await?,
        };
        Ok(())
    }
}

/// An in-process map with per-key expiry, shaped like the Redis commands it stands for.
#[derive(Default)]
pub struct MemoryKv {
    // A std-style blocking mutex: every operation is a few map steps, never held
    // across an await.
    map: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryKv {
    /// `GET key`: the value, if present and not expired.
    pub fn get(&self, key: &str) -> Option<String> {
        let map = self.map.lock();
        map.get(key)
            .filter(|(_, expires)| Instant::now() < *expires)
            .map(|(v, _)| v.clone())
    }

    /// `SET key value PX ttl`.
    pub fn set_px(&self, key: &str, value: String, ttl: Duration) {
        self.map
            .lock()
            .insert(key.to_string(), (value, Instant::now() + ttl));
    }

    /// `SET key value NX PX ttl`: true when this call set it.
    pub fn set_nx_px(&self, key: &str, value: String, ttl: Duration) -> bool {
        let mut map = self.map.lock();
        let now = Instant::now();
        if map.get(key).is_some_and(|(_, expires)| now < *expires) {
            return false;
        }
        map.insert(key.to_string(), (value, now + ttl));
        true
    }

    /// Deletes `key` only if it still holds `value` (the lock-release script).
    pub fn del_if(&self, key: &str, value: &str) {
        let mut map = self.map.lock();
        if map.get(key).is_some_and(|(v, _)| v == value) {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_nx_is_exclusive_until_expiry_or_release() {
        let kv = MemoryKv::default();
        assert!(kv.set_nx_px("lock", "a".into(), Duration::from_secs(10)));
        assert!(!kv.set_nx_px("lock", "b".into(), Duration::from_secs(10)));
        kv.del_if("lock", "b"); // not the holder: no effect
        assert!(!kv.set_nx_px("lock", "b".into(), Duration::from_secs(10)));
        kv.del_if("lock", "a");
        assert!(kv.set_nx_px("lock", "b".into(), Duration::ZERO));
        // Expired at once: free again.
        assert!(kv.set_nx_px("lock", "c".into(), Duration::from_secs(10)));
    }
}
