//! [`RedisWriteQueue`]: the durable write-behind queue — Redis Streams with a
//! consumer group, so a write acknowledged to a caller survives the process
//! that queued it.
//!
//! Writes are spread over `partitions` streams by key; each partition is
//! drained by one process at a time, the holder of its owner lease (`SET NX
//! PX`, renewed while it drains), so the writes of one key reach the writer in
//! order. A push is a plain `XADD` (never trimmed: a queue must not drop
//! writes), one round trip and no script — or, from a `RedisRemote` on the
//! same server, the same `XADD` inside the shared-store write's script
//! (`Remote::put_queued`: the write in both or in neither, one round trip
//! for both; see `PUT` in `scripts.rs`). The bound (`max_queue`, shared among
//! the partitions) is checked against the length this process last saw plus
//! its own pushes since, and asked again before a refusal; a push also learns
//! the length (an `XLEN` in its round trip) only when that view is past half
//! the share or older than 100 ms. So the bound is passed only by pushes in
//! flight with an older view (one each), or when others push more than half a
//! partition's share within 100 ms (by what they pushed beyond that half). A
//! refused push is never queued; an accepted one is never trimmed. A process
//! that dies leaves its partitions' leases to expire and its
//! taken-but-unacknowledged writes pending in the group: the next owner claims
//! them (`XAUTOCLAIM`, once idle for `claim_idle`, looked for every half
//! `claim_idle`) before it reads new ones (`XREADGROUP`). Acknowledging a
//! batch (`XACK` + `XDEL`) records each key's newest written version (for the
//! `max_written_keys` written last; only the shared store's versions, see
//! `REMEMBERED_BELOW`), so an older write of a key still queued is skipped
//! rather than written over a newer one. An entry that does not
//! decode (bytes something else wrote into the stream) is moved to the
//! dead-letter stream once, with a warning, and the drain goes on past it.
//! Every key of one queue shares one hash tag, so the scripts (and a blocking
//! read of all partitions) also run on a Redis Cluster.
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always`, an
//! acknowledged write survives a Redis crash too; with `everysec`, up to a
//! second of them may not.

use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herdguard::{BoxFuture, QueueError, QueueId, Queued, Timestamp, Write, WriteQueue};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};
use serde::{de::DeserializeOwned, Serialize};

use crate::config::{RedisConfig, RedisSetupError};
use crate::keys::{QueueNames as Names, QUEUE_GROUP as GROUP};

/// How a [`RedisWriteQueue`] spreads and hands over its writes.
///
/// ```
/// use herdguard_redis::QueueConfig;
/// use std::time::Duration;
///
/// let queue = QueueConfig::new().partitions(16).claim_idle(Duration::from_secs(2));
/// # let _ = queue;
/// ```
#[derive(Clone, Debug)]
pub struct QueueConfig {
    partitions: u32,
    owner_ttl: Duration,
    claim_idle: Duration,
    max_written_keys: u64,
}

impl QueueConfig {
    /// 8 partitions; a partition's owner lease lasts 3 s unless renewed; writes
    /// a dead owner had taken are claimed once idle for 3 s; the newest
    /// written version of at most [`MAX_WRITTEN_KEYS`] keys remembered.
    pub fn new() -> Self {
        QueueConfig {
            partitions: 8,
            owner_ttl: Duration::from_secs(3),
            claim_idle: Duration::from_secs(3),
            max_written_keys: MAX_WRITTEN_KEYS,
        }
    }

    /// Most keys whose newest written version the queue remembers (in Redis,
    /// shared by the fleet), so that a write of a key older than one already
    /// written is skipped. Past it, the keys written longest ago are
    /// forgotten first: a forgotten key's older write still queued (pushed
    /// late by a racing process, or claimed from a dead one) reaches the
    /// writer after the newer one, which its version check must refuse (see
    /// `herdguard::Writer`). Each remembered key costs Redis its text and
    /// about 80 bytes.
    pub fn max_written_keys(mut self, n: u64) -> Self {
        self.max_written_keys = n;
        self
    }

    /// How many streams the writes are spread over (by key): how many
    /// processes may drain at once.
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    /// How long a partition's owner lease lasts unless renewed: the longest a
    /// dead owner holds its partition up.
    pub fn owner_ttl(mut self, ttl: Duration) -> Self {
        self.owner_ttl = ttl;
        self
    }

    /// How long a write taken by another consumer must have waited before it
    /// is claimed (`XAUTOCLAIM`'s minimum idle time).
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    fn validate(&self) -> Result<(), RedisSetupError> {
        let invalid = |field: &'static str, reason: &str| RedisSetupError::InvalidConfig {
            field,
            reason: reason.to_string(),
        };
        if self.partitions == 0 || self.partitions > 1024 {
            return Err(invalid("queue partitions", "must be between 1 and 1024"));
        }
        if self.owner_ttl < Duration::from_millis(30) {
            return Err(invalid("queue owner_ttl", "must be at least 30 ms"));
        }
        if self.claim_idle.is_zero() {
            return Err(invalid("queue claim_idle", "must be greater than zero"));
        }
        if self.max_written_keys == 0 {
            return Err(invalid(
                "queue max_written_keys",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Most writes the dead-letter stream keeps (approximately: `MAXLEN ~`),
/// the oldest dropped first. The one home of the number both scripts that
/// add to it are given.
pub const MAX_DEAD_LETTERS: u64 = 10_000;

/// Most keys whose newest written version the queue remembers by default
/// ([`QueueConfig::max_written_keys`]).
pub const MAX_WRITTEN_KEYS: u64 = 100_000;

/// How long the record of written versions outlives the last acknowledgement
/// (re-armed by each): a queue idle for a day leaves nothing in Redis.
const WRITTEN_TTL_MS: u64 = 24 * 3600 * 1000;

/// Versions the written set remembers and compares: those below 2^53, which a
/// score (a double) holds exactly. The shared store's versions (microseconds,
/// about 2^51) are; a version made in process (at or above
/// `herdguard::LOCAL_VERSIONS`, 2^63, where a double holds only multiples of
/// 2,048) would be rounded — a newer write of its key then skipped as written
/// — and is not comparable across processes or restarts anyway.
const REMEMBERED_BELOW: u64 = 1 << 53;

/// Whether a write's version is recorded once written and checked before a
/// write of its key (see [`REMEMBERED_BELOW`]).
fn remembered(version: u64) -> bool {
    version < REMEMBERED_BELOW
}

/// How long a partition's length, as last read, lets pushes go without
/// asking again (see `push`).
const LENGTH_FRESH: Duration = Duration::from_millis(100);

/// Most writes one acknowledgement script takes (`ack` sends more in parts):
/// it bounds the script's time, and keeps each command's argument list within
/// what Lua's `unpack` takes (a few thousand values).
const ACK_PART: usize = 1_000;

/// Acknowledges written entries, deletes them, and records each key's newest
/// written version in the written set (member the key's text, score the
/// version; `ZADD GT` keeps the higher), which keeps at most the given
/// number: past it, the lowest versions — the keys written longest ago — are
/// forgotten. Bytes of another type there are replaced. KEYS: written set,
/// then (stream) per entry. ARGV: group, set ms, most members, then (id, key
/// text, version or empty when not [`remembered`]) per entry, at most
/// [`ACK_PART`] entries. One XACK, XDEL per stream and one ZADD per call:
/// per-entry calls cost Redis more than the XADD.
/// Returns how many members the bound dropped.
const ACK: &str = r"
local ids, streams, scored = {}, {}, {}
for i = 2, #KEYS do
  local s, a = KEYS[i], 4 + (i - 2) * 3
  if not ids[s] then ids[s] = {}; streams[#streams + 1] = s end
  table.insert(ids[s], ARGV[a])
  if ARGV[a + 2] ~= '' then
    scored[#scored + 1] = ARGV[a + 2]
    scored[#scored + 1] = ARGV[a + 1]
  end
end
for _, s in ipairs(streams) do
  redis.call('XACK', s, ARGV[1], unpack(ids[s]))
  redis.call('XDEL', s, unpack(ids[s]))
end
if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then redis.call('DEL', KEYS[1]) end
if #scored > 0 then
  redis.call('ZADD', KEYS[1], 'GT', unpack(scored))
end
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1) else over = 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return over
";

/// Moves given-up entries to the dead-letter stream, once: only an entry
/// this call acknowledges (still pending in the group) is copied and deleted,
/// so a call repeated after a lost reply leaves one copy (as `BURY`). KEYS:
/// dead stream, then (stream) per entry. ARGV: group, most dead letters, then
/// (id, key text, version, payload) per entry, at most [`ACK_PART`] entries.
/// Returns how many entries it moved.
const GIVE_UP: &str = r"
local moved = 0
for i = 2, #KEYS do
  local s, a = KEYS[i], 3 + (i - 2) * 4
  if redis.call('XACK', s, ARGV[1], ARGV[a]) == 1 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[a + 1], 'v', ARGV[a + 2], 'd', ARGV[a + 3])
    redis.call('XDEL', s, ARGV[a])
    moved = moved + 1
  end
end
return moved
";

/// Moves undecodable entries to the dead-letter stream, once: only an entry
/// this call acknowledges (still pending in the group) is copied and deleted,
/// so consumers racing over one entry, or a call repeated after a lost reply,
/// leave one copy. The copy holds the entry's own fields (up to the given
/// number; past it, only how many there were), then where it came from.
/// KEYS: dead stream, then (stream) per entry. ARGV: group, most fields copied,
/// most dead letters, then (id) per entry. Returns how many entries it moved.
const BURY: &str = r"
local moved = 0
for i = 2, #KEYS do
  local s, id = KEYS[i], ARGV[i + 2]
  if redis.call('XACK', s, ARGV[1], id) == 1 then
    local copy = {}
    local e = redis.call('XRANGE', s, id, id)[1]
    if e and #e[2] <= tonumber(ARGV[2]) * 2 then
      copy = e[2]
    elseif e then
      copy = {'fields', tostring(#e[2] / 2)}
    end
    for _, x in ipairs({'stream', s, 'id', id, 'why', 'undecodable'}) do copy[#copy + 1] = x end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(copy))
    redis.call('XDEL', s, id)
    moved = moved + 1
  end
end
return moved
";

/// Most fields of an undecodable entry copied to the dead-letter stream (a
/// queued write has four).
const BURY_MAX_FIELDS: u32 = 16;

/// Takes a partition's owner lease, or renews it if ours. Returns 1 if ours.
/// KEYS: owner. ARGV: token, ttl ms.
const OWN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// A write ready to be appended (`RedisWriteQueue::prepare`): a plain
/// `XADD` (never trimmed: a queue must not drop writes) of fields `k` (the
/// key's text), `v` (the version), `d` (the value, postcard) and `t` (when
/// queued, Unix ms).
pub(crate) struct Push {
    partition: usize,
    /// The key's text.
    pub(crate) key: String,
    /// The value, encoded.
    pub(crate) payload: Vec<u8>,
    /// When it was queued, Unix ms.
    pub(crate) queued_ms: u64,
    /// Whether the push asks for the partition's length (an `XLEN`).
    pub(crate) look: bool,
    /// When the push began (`now_ms`).
    started: u64,
}

/// The queue's scripts, hashed once.
struct Scripts {
    ack: Script,
    give_up: Script,
    own: Script,
    bury: Script,
}

/// Which partitions this process drains, and until when it may believe so.
struct Owned {
    partitions: Vec<usize>,
    renew_at: Instant,
    /// When to look for writes other consumers left (`XAUTOCLAIM`): they
    /// can only be claimed once idle for `claim_idle`, so looking at every
    /// take would only cost Redis a command per partition per batch.
    claim_at: Instant,
}

/// The durable write-behind queue (module docs). `K` is written as its
/// `Display` text and read back with `FromStr`; `V` with serde (postcard).
pub struct RedisWriteQueue<K, V> {
    /// Pushes and acknowledgements: short commands.
    conn: ConnectionManager,
    /// Blocking reads, on their own connection (a `BLOCK` stalls the commands
    /// queued behind it on the same connection).
    reader: ConnectionManager,
    names: Names,
    /// The URL connected to (see `server`).
    url: String,
    config: QueueConfig,
    op_timeout: Duration,
    max_value_bytes: usize,
    /// This process's consumer name and owner token.
    consumer: String,
    owned: Mutex<Owned>,
    /// Each partition's length as last seen (an `XLEN` with or after this
    /// process's own push, or the drainer's count) plus this process's pushes
    /// since: the bound is checked here, and again on the server only when
    /// this says the partition is full.
    lengths: Vec<AtomicU64>,
    /// When each partition's length was last read (ms since `epoch`, taken
    /// before the read was sent).
    looked: Vec<AtomicU64>,
    epoch: Instant,
    scripts: Scripts,
    _types: PhantomData<fn(K, V)>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// FNV-1a: a stable partition for a key's text, the same in every process.
fn partition_of(text: &str, partitions: usize) -> usize {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % partitions as u64) as usize
}

impl<K, V> RedisWriteQueue<K, V>
where
    K: Display + FromStr + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects (two connections: commands and blocking reads) and creates the
    /// consumer group of every partition, so a bad URL or an unreachable server
    /// shows up here.
    pub async fn connect(
        redis: RedisConfig,
        config: QueueConfig,
    ) -> Result<Arc<Self>, RedisSetupError> {
        redis.validate()?;
        config.validate()?;
        let client = crate::conn::client(&redis.url, redis.tls()?.as_ref())?;
        let unreachable = |reason: String| RedisSetupError::Unreachable {
            url: redis.url.clone(),
            reason,
        };
        // Every call is bounded here (a blocking read's by its own wait).
        let manager = || crate::conn::manager(&client, &redis.url, redis.connect_timeout, None);
        let conn = manager().await?;
        let reader = manager().await?;
        let names = Names::new(&redis.prefix, config.partitions);
        let mut setup = conn.clone();
        for stream in &names.streams {
            let created: Result<Value, RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut setup)
                .await;
            match created {
                Ok(_) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(unreachable(format!("XGROUP CREATE {stream}: {e}"))),
            }
        }
        Ok(Arc::new(RedisWriteQueue {
            conn,
            reader,
            names,
            url: redis.url.clone(),
            op_timeout: redis.op_timeout,
            max_value_bytes: redis.max_value_bytes,
            consumer: format!("{:016x}-{}", fastrand::u64(..), std::process::id()),
            lengths: (0..config.partitions).map(|_| AtomicU64::new(0)).collect(),
            looked: (0..config.partitions).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            owned: Mutex::new(Owned {
                partitions: Vec::new(),
                renew_at: Instant::now(),
                claim_at: Instant::now(),
            }),
            config,
            scripts: Scripts {
                ack: Script::new(ACK),
                give_up: Script::new(GIVE_UP),
                own: Script::new(OWN),
                bury: Script::new(BURY),
            },
            _types: PhantomData,
        }))
    }

    /// Milliseconds since this queue was made, from 1 (0 is "never looked").
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Partition `n`'s length read as `len`, by a read sent at `at`
    /// (`now_ms`): the view is that, and fresh from then.
    fn saw_length(&self, n: usize, len: u64, at: u64) {
        self.lengths[n].store(len, Ordering::Relaxed);
        self.looked[n].fetch_max(at, Ordering::Relaxed);
    }

    /// Runs one Redis operation under the operation timeout.
    async fn op<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, QueueError> {
        match tokio::time::timeout(limit, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!("{what}: {e}"))),
            Err(_) => Err(QueueError::Unavailable(format!(
                "{what}: no answer within {limit:?}"
            ))),
        }
    }

    /// The partitions this process owns now, taking free ones and renewing its
    /// own every third of the owner lease.
    async fn owned(&self) -> Result<Vec<usize>, QueueError> {
        {
            let owned = self.owned.lock();
            if Instant::now() < owned.renew_at {
                return Ok(owned.partitions.clone());
            }
        }
        let ttl = u64::try_from(self.config.owner_ttl.as_millis()).unwrap_or(u64::MAX);
        let started = Instant::now();
        let mut mine = Vec::new();
        let mut conn = self.conn.clone();
        for (n, owner) in self.names.owners.iter().enumerate() {
            let got: i64 = self
                .op(
                    "partition lease",
                    self.op_timeout,
                    self.scripts
                        .own
                        .key(owner)
                        .arg(&self.consumer)
                        .arg(ttl)
                        .invoke_async(&mut conn),
                )
                .await?;
            if got == 1 {
                mine.push(n);
            }
        }
        let mut owned = self.owned.lock();
        if owned.partitions != mine {
            // New partitions may hold what their last owner left: look now.
            owned.claim_at = Instant::now();
        }
        owned.partitions = mine.clone();
        // Counted from before the calls: a lease is never believed past its life.
        owned.renew_at = started + self.config.owner_ttl / 3;
        Ok(mine)
    }

    fn decode(&self, stream: &str, id: &str, fields: &[(&[u8], &[u8])]) -> Option<Queued<K, V>> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| *f == name.as_bytes())
                .map(|(_, v)| *v)
        };
        let key = K::from_str(std::str::from_utf8(get("k")?).ok()?).ok()?;
        let version = std::str::from_utf8(get("v")?).ok()?.parse().ok()?;
        let value: V = postcard::from_bytes(get("d")?).ok()?;
        let queued_ms: u64 = std::str::from_utf8(get("t")?).ok()?.parse().ok()?;
        Some(Queued {
            id: QueueId([stream, " ", id].concat()),
            write: Write::new(key, value, version),
            queued_at: Timestamp::from_unix_nanos(queued_ms.saturating_mul(1_000_000)),
        })
    }

    /// Entries of a stream reply (`[[id, [field, value, …]], …]`), decoded;
    /// undecodable ones are returned apart (stream, id), to be buried.
    fn entries(
        &self,
        stream: &str,
        reply: &Value,
        out: &mut Vec<Queued<K, V>>,
        junk: &mut Vec<(String, String)>,
    ) {
        let Value::Array(items) = reply else { return };
        for item in items {
            let Value::Array(pair) = item else { continue };
            let (Some(Value::BulkString(id)), Some(Value::Array(kv))) = (pair.first(), pair.get(1))
            else {
                continue;
            };
            let id = String::from_utf8_lossy(id).into_owned();
            // Borrowed from the reply, not copied: the drain reads every
            // acknowledged write back.
            let fields: Vec<(&[u8], &[u8])> = kv
                .chunks(2)
                .filter_map(|c| match c {
                    [Value::BulkString(f), Value::BulkString(v)] => Some((&f[..], &v[..])),
                    _ => None,
                })
                .collect();
            match self.decode(stream, &id, &fields) {
                Some(q) => out.push(q),
                None => junk.push((stream.to_string(), id)),
            }
        }
    }

    /// Moves undecodable entries to the dead-letter stream (once each, see
    /// `BURY`) and logs the ones this call moved: an entry another consumer
    /// moved, or that a failed call leaves pending to be claimed again, is not
    /// logged twice.
    async fn bury(&self, junk: &[(String, String)]) -> Result<(), QueueError> {
        let mut invocation = self.scripts.bury.key(&self.names.dead);
        invocation
            .arg(GROUP)
            .arg(BURY_MAX_FIELDS)
            .arg(MAX_DEAD_LETTERS);
        for (stream, id) in junk {
            invocation.key(stream).arg(id);
        }
        let mut conn = self.conn.clone();
        let moved: u64 = self
            .op(
                "bury undecodable",
                self.op_timeout,
                invocation.invoke_async(&mut conn),
            )
            .await?;
        if moved > 0 {
            tracing::warn!(
                count = moved,
                dead_letter_stream = %self.names.dead,
                "herdguard-redis: undecodable queued writes moved to the dead-letter stream"
            );
        }
        Ok(())
    }

    /// The server this queue lives on, as its URL names it: a shared store
    /// on the same URL (not a cluster) appends to it in its own write.
    pub(crate) fn server(&self) -> &str {
        &self.url
    }

    /// What appending a write of `key` and `value` takes, checked against the
    /// bound: `max_len` shared among the partitions, against the length this
    /// process last saw plus its own pushes since, asked again (`XLEN`)
    /// before a refusal. The one home of the bound's rule, for a plain push
    /// and for one made in the shared store's write (`RedisRemote`).
    pub(crate) async fn prepare(
        &self,
        key: &K,
        value: &V,
        max_len: u64,
    ) -> Result<Push, QueueError> {
        let payload = postcard::to_allocvec(value).map_err(|e| QueueError::Codec(e.to_string()))?;
        if payload.len() > self.max_value_bytes {
            return Err(QueueError::Codec(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                self.max_value_bytes
            )));
        }
        let key = key.to_string();
        let n = partition_of(&key, self.names.streams.len());
        let share = max_len.div_ceil(self.names.streams.len() as u64).max(1);
        let started = self.now_ms();
        if self.lengths[n].load(Ordering::Relaxed) >= share {
            // Full as far as this process knows: ask before refusing.
            let mut conn = self.conn.clone();
            let len: u64 = self
                .op(
                    "XLEN",
                    self.op_timeout,
                    redis::cmd("XLEN")
                        .arg(&self.names.streams[n])
                        .query_async(&mut conn),
                )
                .await?;
            self.saw_length(n, len, started);
            if len >= share {
                return Err(QueueError::Full);
            }
        }
        // The push learns the length (an XLEN in the same round trip) only
        // when this process's view is past half the share, or older than
        // `LENGTH_FRESH`: below that, the fleet would have to push half a
        // share within `LENGTH_FRESH` for the partition to be full unseen.
        let known = self.lengths[n].load(Ordering::Relaxed);
        let looked = self.looked[n].load(Ordering::Relaxed);
        let fresh = looked != 0 && started.saturating_sub(looked) < LENGTH_FRESH.as_millis() as u64;
        Ok(Push {
            partition: n,
            key,
            payload,
            queued_ms: unix_ms(),
            look: known >= share / 2 || !fresh,
            started,
        })
    }

    /// The stream of a prepared push.
    pub(crate) fn stream(&self, push: &Push) -> &str {
        &self.names.streams[push.partition]
    }

    /// A prepared push was appended; `len` is the partition's length after
    /// it when the push asked (`Push::look`).
    pub(crate) fn pushed(&self, push: &Push, len: Option<u64>) {
        let n = push.partition;
        match len {
            Some(len) => {
                // Never lowered by a reply that overtook a later one: only a
                // read of the length alone (`prepare`, or the drainer's)
                // lowers it.
                self.lengths[n].fetch_max(len, Ordering::Relaxed);
                self.looked[n].fetch_max(push.started, Ordering::Relaxed);
            }
            None => {
                self.lengths[n].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops writes older than one already written for their key (they are
    /// acknowledged): a write may be delivered again after a crash. Only
    /// [`remembered`] versions are compared.
    async fn drop_written(
        &self,
        taken: Vec<Queued<K, V>>,
    ) -> Result<Vec<Queued<K, V>>, QueueError> {
        let keys: Vec<String> = taken
            .iter()
            .filter(|q| remembered(q.write.version()))
            .map(|q| q.write.key().to_string())
            .collect();
        if keys.is_empty() {
            return Ok(taken);
        }
        let mut conn = self.conn.clone();
        let scores: Result<Vec<Option<f64>>, RedisError> = tokio::time::timeout(
            self.op_timeout,
            redis::cmd("ZMSCORE")
                .arg(&self.names.written)
                .arg(&keys)
                .query_async(&mut conn),
        )
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from((
                redis::ErrorKind::Io,
                "no answer within the operation timeout",
            )))
        });
        let done: Vec<Option<u64>> = match scores {
            // Only remembered versions are recorded: exact as scores.
            Ok(scores) => scores.into_iter().map(|s| s.map(|v| v as u64)).collect(),
            // Bytes of another type there (the next acknowledgement replaces
            // them): nothing is known to be written.
            Err(e) if e.code() == Some("WRONGTYPE") => vec![None; keys.len()],
            Err(e) => return Err(QueueError::Unavailable(format!("ZMSCORE written: {e}"))),
        };
        // In the order taken: the writes of one key reach the writer in order.
        let mut done = done.into_iter();
        let (older, keep): (Vec<_>, Vec<_>) = taken.into_iter().partition(|q| {
            let version = q.write.version();
            remembered(version) && done.next().flatten().is_some_and(|d| d >= version)
        });
        if !older.is_empty() {
            self.ack(&older).await?;
        }
        Ok(keep)
    }
}

/// `stream id` → (stream, id).
fn split_id(id: &QueueId) -> (&str, &str) {
    id.0.split_once(' ').unwrap_or(("", &id.0))
}

impl<K, V> WriteQueue<K, V> for RedisWriteQueue<K, V>
where
    K: Display + FromStr + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn push<'a>(
        &'a self,
        write: &'a Write<K, V>,
        max_len: u64,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let push = self.prepare(write.key(), write.value(), max_len).await?;
            let mut pipe = redis::pipe();
            pipe.cmd("XADD")
                .arg(&self.names.streams[push.partition])
                .arg("*")
                .arg("k")
                .arg(&push.key)
                .arg("v")
                .arg(write.version())
                .arg("d")
                .arg(&push.payload)
                .arg("t")
                .arg(push.queued_ms)
                .ignore();
            let mut conn = self.conn.clone();
            if push.look {
                pipe.cmd("XLEN").arg(&self.names.streams[push.partition]);
                let (len,): (u64,) = self
                    .op("XADD", self.op_timeout, pipe.query_async(&mut conn))
                    .await?;
                self.pushed(&push, Some(len));
            } else {
                let _: () = self
                    .op("XADD", self.op_timeout, pipe.query_async(&mut conn))
                    .await?;
                self.pushed(&push, None);
            }
            Ok(())
        })
    }

    fn take<'a>(
        &'a self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Queued<K, V>>, QueueError>> {
        Box::pin(async move {
            let owned = self.owned().await?;
            if owned.is_empty() {
                // Every partition is drained by another process: wait a little.
                tokio::time::sleep(wait).await;
                return Ok(Vec::new());
            }
            let mut taken = Vec::new();
            let mut junk = Vec::new();
            let idle = u64::try_from(self.config.claim_idle.as_millis()).unwrap_or(u64::MAX);
            let mut conn = self.conn.clone();
            // First what other consumers took and left (they died, or lost
            // the partition): claimed once idle long enough, looked for every
            // half `claim_idle` (so within 1.5 × `claim_idle` of being taken).
            let claim = Instant::now() >= self.owned.lock().claim_at;
            for &n in owned.iter().filter(|_| claim) {
                let stream = &self.names.streams[n];
                let claimed: Value = self
                    .op(
                        "XAUTOCLAIM",
                        self.op_timeout,
                        redis::cmd("XAUTOCLAIM")
                            .arg(stream)
                            .arg(GROUP)
                            .arg(&self.consumer)
                            .arg(idle)
                            .arg("0-0")
                            .arg("COUNT")
                            .arg(max)
                            .query_async(&mut conn),
                    )
                    .await?;
                if let Value::Array(parts) = &claimed {
                    if let Some(entries) = parts.get(1) {
                        self.entries(stream, entries, &mut taken, &mut junk);
                    }
                }
                if taken.len() >= max {
                    break;
                }
            }
            if claim {
                // While claims fill whole batches, there may be more: look again.
                let full = taken.len() >= max;
                self.owned.lock().claim_at = Instant::now()
                    + if full {
                        Duration::ZERO
                    } else {
                        self.config.claim_idle / 2
                    };
            }
            if taken.is_empty() {
                // Then new ones, from every partition we own, waiting up to `wait`.
                let block = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
                // COUNT is per stream: share `max` among them.
                let count = (max / owned.len()).max(1);
                let streams: Vec<&String> = owned.iter().map(|&n| &self.names.streams[n]).collect();
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(&streams);
                for _ in &streams {
                    cmd.arg(">");
                }
                let mut reader = self.reader.clone();
                let read: Value = self
                    .op(
                        "XREADGROUP",
                        wait + self.op_timeout,
                        cmd.query_async(&mut reader),
                    )
                    .await?;
                // `[[stream, entries], …]` (RESP2) or a map (RESP3).
                let pairs: Vec<(&Value, &Value)> = match &read {
                    Value::Array(per_stream) => per_stream
                        .iter()
                        .filter_map(|s| match s {
                            Value::Array(p) if p.len() == 2 => Some((&p[0], &p[1])),
                            _ => None,
                        })
                        .collect(),
                    Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
                    _ => Vec::new(),
                };
                for (name, entries) in pairs {
                    if let Value::BulkString(name) = name {
                        let stream = String::from_utf8_lossy(name).into_owned();
                        self.entries(&stream, entries, &mut taken, &mut junk);
                    }
                }
            }
            if !junk.is_empty() {
                // On failure they stay pending: claimed and buried by a later take.
                let _ = self.bury(&junk).await;
            }
            self.drop_written(taken).await
        })
    }

    fn ack<'a>(&'a self, done: &'a [Queued<K, V>]) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            if done.is_empty() {
                return Ok(());
            }
            // In parts of at most ACK_PART writes: a script holds Redis for
            // every client while it runs, and each part must finish within
            // the operation timeout even on a loaded machine. Acknowledging a
            // part again is harmless (XACK, ZADD GT), so a failed part is
            // retried with the whole batch.
            let mut forgotten = 0u64;
            for part in done.chunks(ACK_PART) {
                let mut invocation = self.scripts.ack.key(&self.names.written);
                invocation
                    .arg(GROUP)
                    .arg(WRITTEN_TTL_MS)
                    .arg(self.config.max_written_keys);
                for q in part {
                    let (stream, id) = split_id(&q.id);
                    let version = q.write.version();
                    invocation
                        .key(stream)
                        .arg(id)
                        .arg(q.write.key().to_string())
                        .arg(if remembered(version) {
                            version.to_string()
                        } else {
                            String::new()
                        });
                }
                let mut conn = self.conn.clone();
                forgotten += self
                    .op(
                        "XACK",
                        self.op_timeout,
                        invocation.invoke_async::<u64>(&mut conn),
                    )
                    .await?;
            }
            if forgotten > 0 {
                tracing::debug!(
                    forgotten,
                    limit = self.config.max_written_keys,
                    "herdguard-redis: the write queue's written versions are at their bound: the oldest forgotten"
                );
            }
            Ok(())
        })
    }

    fn give_up<'a>(&'a self, failed: &'a [Queued<K, V>]) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            if failed.is_empty() {
                return Ok(());
            }
            // In parts, as `ack`: each script within the operation timeout.
            // A part given up again moves nothing twice (see `GIVE_UP`), so a
            // failed part is retried with the whole batch.
            let mut moved = 0u64;
            let mut result = Ok(());
            for part in failed.chunks(ACK_PART) {
                let mut invocation = self.scripts.give_up.key(&self.names.dead);
                invocation.arg(GROUP).arg(MAX_DEAD_LETTERS);
                for q in part {
                    let (stream, id) = split_id(&q.id);
                    let payload = postcard::to_allocvec(q.write.value()).unwrap_or_default();
                    invocation
                        .key(stream)
                        .arg(id)
                        .arg(q.write.key().to_string())
                        .arg(q.write.version())
                        .arg(payload);
                }
                let mut conn = self.conn.clone();
                match self
                    .op(
                        "give up",
                        self.op_timeout,
                        invocation.invoke_async::<u64>(&mut conn),
                    )
                    .await
                {
                    Ok(n) => moved += n,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if moved > 0 {
                // Only what this call moved: a retry does not log them again.
                tracing::warn!(
                    count = moved,
                    dead_letter_stream = %self.names.dead,
                    "herdguard-redis: writes given up after repeated writer failures (kept in the dead-letter stream)"
                );
            }
            result
        })
    }

    fn pending(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        Box::pin(async move {
            let started = self.now_ms();
            let mut pipe = redis::pipe();
            for stream in &self.names.streams {
                pipe.cmd("XLEN").arg(stream);
            }
            let mut conn = self.conn.clone();
            let lens: Vec<u64> = self
                .op("XLEN", self.op_timeout, pipe.query_async(&mut conn))
                .await?;
            for (n, len) in lens.iter().enumerate() {
                self.saw_length(n, *len, started);
            }
            Ok(lens.iter().sum())
        })
    }

    fn durable(&self) -> bool {
        true
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("user:1", 8), partition_of("user:1", 8));
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            seen.insert(partition_of(&format!("user:{i}"), 8));
        }
        assert_eq!(seen.len(), 8);
    }

    /// Two consumers that both took one undecodable entry (one claimed it
    /// from the other), or one call repeated after its reply was lost, bury
    /// it: one copy in the dead-letter stream.
    #[tokio::test]
    async fn an_entry_buried_twice_is_copied_once() {
        let redis = herdguard_testkit::RedisServer::start().unwrap();
        let queue = RedisWriteQueue::<String, String>::connect(
            RedisConfig::new(redis.url()),
            QueueConfig::new().partitions(1),
        )
        .await
        .unwrap();
        let mut c = queue.conn.clone();
        let stream = queue.names.streams[0].clone();
        let id: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("k")
            .arg(&[0xff_u8][..])
            .query_async(&mut c)
            .await
            .unwrap();
        let _: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("a")
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
        let junk = [(stream.clone(), id)];
        queue.bury(&junk).await.unwrap();
        queue.bury(&junk).await.unwrap();
        let dead: u64 = redis::cmd("XLEN")
            .arg(&queue.names.dead)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(dead, 1);
        let left: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(QueueConfig::new().partitions(0).validate().is_err());
        assert!(QueueConfig::new()
            .owner_ttl(Duration::from_millis(1))
            .validate()
            .is_err());
        assert!(QueueConfig::new().validate().is_ok());
    }
}
