//! [`RedisRemote`]: the `herdguard::Remote` seam over Redis.

use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use herdguard::{
    AtGrant, BoxFuture, ChangeListener, Entry, Lease, Marker, Notified, PutOutcome, QueuedPutError,
    Remote, RemoteError, Shared, WriteQueue,
};
use std::borrow::Cow;

use redis::{RedisError, Script, ScriptInvocation};
use serde::{de::DeserializeOwned, Serialize};

use crate::config::{RedisConfig, RedisSetupError};
use crate::conn::Conn;
use crate::envelope;
use crate::feed::{Event, Feed, Setup};
use crate::keys::{
    broadcast_channel, change_channel, instances_key, tag_set, unescape, KeyNames, MAX_TAG_BYTES,
};
use crate::queue::RedisWriteQueue;
use crate::quorum::{Acquired, Quorum, QuorumStats};
use crate::scripts::Scripts;
use crate::tracking::Session;

/// What `PUT` answers: stored (1 or 0), the version, the stream's length or -1.
type Written = (i64, u64, i64);

/// What `LEASE` and `FENCE` answer: granted (1 or 0), the version, taken
/// over (1 or 0), the version of the key's entry or 0.
type Granted = (i64, u64, i64, u64);

/// How a call on the per-key feed's session failed.
enum Lapse {
    /// Redis answered with an error, or the connection failed: the call may
    /// be made again on the command connection.
    Failed,
    /// No answer within the operation timeout: an outage.
    NoAnswer(RemoteError),
}

/// The least a held mark outlives its lease by (see `LEASE` in `scripts.rs`):
/// waiters re-check at their safety poll, so a take-over comes within one.
const HELD_MARGIN_FLOOR: Duration = Duration::from_secs(1);

/// Most keys one tag's set in Redis holds ([`RedisRemote::tag`]): past it,
/// the keys whose entries expire soonest are forgotten first.
pub const MAX_TAGGED_KEYS: usize = 100_000;

/// Most keys one `EXISTS` of [`RedisRemote::count_stored`] names.
pub const EXISTS_BATCH: usize = 1000;

/// Most instance records [`RedisRemote::exchange_instance_record`] returns.
pub const MAX_INSTANCES: usize = 64;

/// Largest instance record [`RedisRemote::exchange_instance_record`] takes.
const MAX_RECORD_BYTES: usize = 4096;

/// A fleet's shared tier, lease coordinator and change feed, on one Redis
/// server, the primary Redis Sentinel names, or a Redis Cluster — with leases,
/// optionally, from a quorum of independent lock servers
/// ([`RedisConfig::lease_quorum`]).
///
/// Operations go over one multiplexed connection (reconnected by redis-rs's
/// `ConnectionManager`; with Sentinel, found again through the sentinels; on a
/// cluster, redis-rs's cluster connection), each bounded by `op_timeout`;
/// quorum leases add one connection per lock server. Changes are heard on the
/// change feed: per key by default — the reads of entries, the writes of
/// entries and invalidations go over one tracking connection per node
/// instead, and Redis tells this process of the next change of each key it
/// read there — or, where Redis refuses tracking, on the prefix's change
/// channel. Keys are named by their `Display` text, so `K::from_str` must read
/// back what `Display` wrote (as for `String` and the integers): that is how
/// another process's change finds this process's copy.
pub struct RedisRemote<K, V> {
    conn: Conn,
    feed: Feed,
    scripts: Scripts,
    config: RedisConfig,
    /// The broadcast feed's channel, where broadcasts go too.
    channel: String,
    /// Where the per-key feed's processes hear broadcasts.
    broadcasts: String,
    /// Where the scripts announce each change, or `""` for nowhere: on the
    /// change channel for processes of the broadcast feed, except from a
    /// per-key feed on a cluster without `broadcast_feed`, where each
    /// announcement would cross the cluster bus to every node.
    announce: String,
    /// The lock servers of quorum leases, if configured.
    quorum: Option<Quorum>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> RedisRemote<K, V>
where
    K: Display + FromStr + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Validates the settings and URL, connects (within `connect_timeout`) and
    /// subscribes to the change feed, so a misconfiguration or an unreachable
    /// server shows up here, once, not as a stream of degraded calls.
    pub async fn connect(config: RedisConfig) -> Result<Arc<Self>, RedisSetupError> {
        config.validate()?;
        let unreachable = |reason: String| RedisSetupError::Unreachable {
            url: config.url.clone(),
            reason,
        };
        let tls = config.tls()?;
        let (endpoint, conn) = crate::conn::open(&config, tls.as_ref()).await?;
        let quorum = if config.lock_urls.is_empty() {
            None
        } else {
            let quorum = Quorum::new(
                &config.lock_urls,
                tls.as_ref(),
                config.op_timeout,
                config.connect_timeout,
            )?;
            quorum.connect().await?;
            Some(quorum)
        };
        let channel = change_channel(&config.prefix);
        let broadcasts = broadcast_channel(&config.prefix);
        let scripts = Scripts::new();
        let feed = Feed::start(Setup {
            endpoint,
            prefix: config.prefix.clone(),
            changes: channel.clone(),
            broadcasts: broadcasts.clone(),
            op_timeout: config.op_timeout,
            connect_timeout: config.connect_timeout,
            broadcast_only: config.broadcast_feed,
            scripts: vec![
                scripts.put.clone(),
                scripts.invalidate.clone(),
                scripts.lease.clone(),
                scripts.fence.clone(),
            ],
        })
        .await
        .map_err(unreachable)?;
        // Every process announces where a process may listen on the channel
        // (see `feed.rs`): all but those of the per-key feed on a cluster.
        let announce =
            if feed.per_key() && !config.cluster_seeds.is_empty() && !config.broadcast_feed {
                String::new()
            } else {
                channel.clone()
            };
        Ok(Arc::new(RedisRemote {
            conn,
            feed,
            scripts,
            config,
            channel,
            broadcasts,
            announce,
            quorum,
            _types: PhantomData,
        }))
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Whether the change feed is connected and answering pings now.
    pub fn feed_live(&self) -> bool {
        self.feed.live()
    }

    /// Whether the change feed is per key (Redis's client tracking: this
    /// process hears only of the keys it holds a copy of or waits on), rather
    /// than broadcast ([`RedisConfig::broadcast_feed`] off a cluster, or a
    /// Redis that refuses tracking).
    pub fn feed_per_key(&self) -> bool {
        self.feed.per_key()
    }

    /// Notices the change feed received: Redis's invalidation pushes (per
    /// key) or the channel's messages (broadcast), broadcasts included.
    pub fn feed_notices(&self) -> u64 {
        self.feed.notices()
    }

    /// With quorum leases, how many lock servers there are and how many grants
    /// make a lease.
    pub fn lease_quorum(&self) -> Option<(usize, usize)> {
        self.quorum.as_ref().map(|q| (q.len(), q.majority()))
    }

    /// With quorum leases, what their votes found so far: grants, split
    /// votes, majorities missing, each lock server's failures.
    pub fn quorum_stats(&self) -> Option<QuorumStats> {
        self.quorum.as_ref().map(Quorum::stats)
    }

    /// Notices on the change feed that did not parse (and were dropped).
    pub fn feed_rejected(&self) -> u64 {
        self.feed.rejected()
    }

    /// Sends `payload` to every process of the fleet listening on `topic`
    /// ([`RedisRemote::on_broadcast`], this process included), over the
    /// change channel (for processes of the broadcast feed) and the broadcast
    /// channel (per-key feed): for fleet-wide actions beyond one key, such as
    /// a purge of every variant of a URL. Best effort, like every notice: a
    /// process whose change feed is down misses it (and checks its copies
    /// against Redis until it is back). `topic` is one word: no whitespace.
    pub async fn broadcast(&self, topic: &str, payload: &str) -> Result<(), RemoteError> {
        if topic.is_empty() || topic.contains(char::is_whitespace) {
            return Err(RemoteError::Codec(format!(
                "broadcast topic {topic:?} must be one word"
            )));
        }
        let message = crate::feed::broadcast_message(topic, payload);
        // Sent together, not one after the other (not as one pipeline: on a
        // cluster, redis-rs takes each channel for a key, of another slot).
        let publish = |channel: &String| {
            let (mut conn, mut publish) = (self.conn.clone(), redis::cmd("PUBLISH"));
            publish.arg(channel).arg(&message);
            async move {
                self.op("PUBLISH", publish.query_async::<i64>(&mut conn))
                    .await
            }
        };
        futures_util::try_join!(publish(&self.channel), publish(&self.broadcasts))?;
        Ok(())
    }

    /// Records in Redis that the entry `key` carries `tag` (a surrogate key),
    /// for `ttl` (the longest the entry may live): a fleet-wide index that
    /// outlives the process that loaded the entry, read back by
    /// [`RedisRemote::take_tagged`]. The tag's set forgets each key when its
    /// time is up, holds at most [`MAX_TAGGED_KEYS`] (the soonest to go are
    /// dropped first) and lives no longer than its longest-lived key. `tag`
    /// must pass [`crate::valid_tag`].
    pub async fn tag(&self, tag: &str, key: &str, ttl: Duration) -> Result<(), RemoteError> {
        let name = self.tag_set(tag)?;
        let mut conn = self.conn.clone();
        let dropped: i64 = self
            .op(
                "tag",
                self.scripts
                    .tag_add
                    .key(name)
                    .arg(key)
                    .arg(Self::millis(ttl))
                    .arg(MAX_TAGGED_KEYS)
                    .invoke_async(&mut conn),
            )
            .await?;
        if dropped > 0 {
            tracing::warn!(
                target: "herdguard::purge",
                dropped,
                limit = MAX_TAGGED_KEYS,
                "a tag's set in Redis is full: the keys expiring soonest were forgotten"
            );
        }
        Ok(())
    }

    /// The keys [`RedisRemote::tag`] recorded for `tag`, which are forgotten
    /// (read and deleted in one step): what a purge of the tag removes.
    pub async fn take_tagged(&self, tag: &str) -> Result<Vec<String>, RemoteError> {
        let name = self.tag_set(tag)?;
        let mut conn = self.conn.clone();
        self.op(
            "take_tagged",
            self.scripts.tag_take.key(name).invoke_async(&mut conn),
        )
        .await
    }

    /// How many of `keys` have an entry in Redis (an undecodable one too),
    /// each counted once: one `EXISTS` per [`EXISTS_BATCH`] keys (redis-rs
    /// splits it by slot on a cluster), nothing read nor tracked — what a
    /// purge reports it removed, without fetching each value.
    pub async fn count_stored(&self, keys: &[K]) -> Result<usize, RemoteError> {
        let mut names: Vec<String> = keys.iter().map(|k| self.names(k).value).collect();
        names.sort_unstable();
        names.dedup();
        let mut stored = 0;
        for batch in names.chunks(EXISTS_BATCH) {
            let mut conn = self.conn.clone();
            let found: usize = self
                .op(
                    "EXISTS",
                    redis::cmd("EXISTS").arg(batch).query_async(&mut conn),
                )
                .await?;
            stored += found;
        }
        Ok(stored)
    }

    fn tag_set(&self, tag: &str) -> Result<String, RemoteError> {
        tag_set(&self.config.prefix, tag).ok_or_else(|| {
            RemoteError::Codec(format!(
                "{tag:?} is not a tag (1 to {MAX_TAG_BYTES} visible ASCII characters, no comma)"
            ))
        })
    }

    /// Calls `listener` with the payload of every broadcast on `topic`, from any
    /// process of the fleet (this one included), on the feed's task: keep it short.
    pub fn on_broadcast(&self, topic: &str, listener: impl Fn(&str) + Send + Sync + 'static) {
        let topic = topic.to_string();
        self.feed.listen(Box::new(move |event| {
            if let Event::Broadcast { topic: t, payload } = event {
                if t == topic {
                    listener(payload);
                }
            }
        }));
    }

    /// Publishes this instance's `record` to the fleet's live view and returns
    /// the records instances of the prefix published within `max_age`, in one
    /// round trip: all of them (this one included) up to [`MAX_INSTANCES`], the
    /// live ones of a random sample of twice that many beyond (at most that
    /// many; this one's not promised), so each
    /// call costs Redis the same whatever the fleet's size. Each instance
    /// calls it about once a second, so any instance's dashboard shows the
    /// fleet. `instance` names the record (one word, no spaces); `record` is
    /// opaque here (at most 4 KiB).
    pub async fn exchange_instance_record(
        &self,
        instance: &str,
        record: &str,
        max_age: Duration,
    ) -> Result<Vec<String>, RemoteError> {
        if instance.is_empty() || instance.contains(char::is_whitespace) {
            return Err(RemoteError::Codec(format!(
                "instance name {instance:?} must be one word"
            )));
        }
        if record.len() > MAX_RECORD_BYTES {
            return Err(RemoteError::TooLarge {
                size: record.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let mut conn = self.conn.clone();
        self.op(
            "instances",
            self.scripts
                .instances
                .key(instances_key(&self.config.prefix))
                .arg(instance)
                .arg(record)
                .arg(Self::millis(max_age))
                .arg(MAX_INSTANCES)
                .invoke_async(&mut conn),
        )
        .await
    }

    fn names(&self, key: &K) -> KeyNames {
        KeyNames::new(&self.config.prefix, key)
    }

    /// Runs one Redis operation under `op_timeout`.
    async fn op<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RemoteError> {
        match tokio::time::timeout(self.config.op_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conn.failed();
                Err(RemoteError::Unavailable(format!("{what}: {e}")))
            }
            Err(_) => {
                self.conn.failed();
                Err(RemoteError::Unavailable(format!(
                    "{what}: no answer within {:?}",
                    self.config.op_timeout
                )))
            }
        }
    }

    /// Runs one call on the per-key feed's session under `op_timeout`. A
    /// failure ends the session (the feed is down, every copy is checked,
    /// until the next is up): [`Lapse::Failed`] may be retried on the command
    /// connection, [`Lapse::NoAnswer`] is an outage.
    async fn on_session<T>(
        &self,
        session: &Session,
        what: &str,
        f: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, Lapse> {
        match tokio::time::timeout(self.config.op_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                session.fail(&format!("{what}: {e}"));
                Err(Lapse::Failed)
            }
            Err(_) => {
                let why = format!("{what}: no answer within {:?}", self.config.op_timeout);
                session.fail(&why);
                Err(Lapse::NoAnswer(RemoteError::Unavailable(why)))
            }
        }
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Runs `tracked` on the per-key feed's session while one is up; else,
    /// or when it failed there ([`Lapse::Failed`]: the feed is down now),
    /// `untracked` on the command connection. Every change sent this way is
    /// safe to send twice, should the first have been applied: a fenced
    /// write is then refused (its lease's version is gone) or an insert
    /// written twice, an invalidation made twice.
    async fn tracked_or<T, Tracked, Untracked>(
        &self,
        tracked: impl FnOnce(Arc<Session>) -> Tracked,
        untracked: impl FnOnce(Conn) -> Untracked,
    ) -> Result<T, RemoteError>
    where
        Tracked: std::future::Future<Output = Result<T, Lapse>>,
        Untracked: std::future::Future<Output = Result<T, RemoteError>>,
    {
        if let Some(session) = self.feed.session() {
            match tracked(session).await {
                Ok(answer) => return Ok(answer),
                Err(Lapse::NoAnswer(e)) => return Err(e),
                Err(Lapse::Failed) => {}
            }
        }
        untracked(self.conn.clone()).await
    }

    /// Sends a change of the key with `tag` on the per-key feed's session
    /// inside a window (see `feed::Window`): Redis tells this process of its
    /// own change too, and that is no news here. `send` gets the window's
    /// fence. Returns the answer and whether a push for the entry was held
    /// back; if the change failed after one was, this process's listeners
    /// hear of a change (it may be another's).
    async fn in_window<T, Fut>(
        &self,
        session: &Session,
        tag: &str,
        what: &str,
        send: impl FnOnce(String) -> Fut,
    ) -> (Result<T, Lapse>, bool)
    where
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let window = self.feed.window(tag);
        let answer = self.on_session(session, what, send(window.fence())).await;
        let held_back = window.close();
        if held_back && answer.is_err() {
            self.feed.own_change(Event::ChangedUnknown { tag }, tag);
        }
        (answer, held_back)
    }

    /// Writes the entry of `names` with the `PUT` invocation `script` on the
    /// per-key feed's session, in a window, and tells this process's
    /// listeners what the write and its tracked read-back say: the version
    /// written when the entry still carries it (the pushes held back were
    /// this write's own, or older changes it replaced), else a change of
    /// unknown version.
    async fn write_tracked(
        &self,
        session: &Session,
        names: &KeyNames,
        call: &PutCall<'_>,
    ) -> Result<Written, Lapse> {
        let tag = names.tag.as_str();
        let (written, held_back) = self
            .in_window(session, tag, "write", |fence| async move {
                let evalsha = call.evalsha(&self.scripts.put);
                session
                    .write_and_track::<Written>(&names.value, evalsha, &fence)
                    .await
            })
            .await;
        match &written {
            Ok(((1, version, _), digits)) if envelope::version_of(digits) == Some(*version) => {
                let version = *version;
                self.feed.own_change(Event::Changed { tag, version }, tag);
            }
            Ok(((stored, _, _), _)) if *stored == 1 || held_back => {
                self.feed.own_change(Event::ChangedUnknown { tag }, tag);
            }
            _ => {}
        }
        written.map(|(answer, _)| answer)
    }

    /// The `PUT` call of an entry's write (see `scripts.rs`).
    fn put_script<'s>(
        &'s self,
        names: &'s KeyNames,
        expected: &'s str,
        token: &'s str,
        payload: &'s [u8],
        px: u64,
    ) -> PutCall<'s> {
        PutCall {
            keys: vec![
                &names.value,
                &names.version,
                &names.lease,
                &names.marker,
                &names.held,
            ],
            args: vec![
                Cow::Borrowed(expected.as_bytes()),
                Cow::Borrowed(token.as_bytes()),
                Cow::Borrowed(payload),
                Cow::Owned(px.to_string().into_bytes()),
                Cow::Borrowed(self.announce.as_bytes()),
                Cow::Borrowed(names.tag.as_bytes()),
            ],
        }
    }

    /// Runs an entry's `PUT` on the per-key feed's session when it is up,
    /// else on the command connection. A call that failed on the session is
    /// made again on the command connection only when `again`: should the
    /// first have been applied, a second is refused (its lease's version is
    /// gone) or an insert written twice — never a write queued twice.
    async fn write_entry(
        &self,
        names: &KeyNames,
        call: &PutCall<'_>,
        again: bool,
    ) -> Result<Written, RemoteError> {
        self.tracked_or(
            |session| async move {
                match self.write_tracked(&session, names, call).await {
                    // A write that may have run is not made again where that
                    // would queue it twice: the caller says.
                    Err(Lapse::Failed) if !again => Err(Lapse::NoAnswer(RemoteError::Unavailable(
                        "write: failed on the change feed's connection (it may have been made)"
                            .to_string(),
                    ))),
                    written => written,
                }
            },
            |mut conn| async move {
                let script = call.invocation(&self.scripts.put);
                self.op("write", script.invoke_async(&mut conn)).await
            },
        )
        .await
    }

    /// Whether `queue` lives where this store writes, so that a write can
    /// append to it in the same script: the same URL, and not a cluster
    /// (there the queue's slot is not the key's).
    fn reaches(&self, queue: &RedisWriteQueue<K, V>) -> bool {
        self.config.cluster_seeds.is_empty() && queue.server() == self.config.url
    }

    /// The invocation of a grant's script (`LEASE` or `FENCE`: the same keys
    /// and arguments).
    fn grant_script<'s>(
        &'s self,
        script: &'s redis::Script,
        names: &'s KeyNames,
        token: &str,
    ) -> ScriptInvocation<'s> {
        let mut invocation = script.key(&names.lease);
        invocation
            .key(&names.version)
            .key(&names.held)
            .key(&names.value)
            .key(&names.marker)
            .arg(token)
            .arg(Self::millis(self.config.lease_ttl))
            .arg(self.held_px());
        invocation
    }

    /// Runs a grant's script (`LEASE` or `FENCE`) and says what it saw of the
    /// key's entry: on the per-key feed's session, by a tracked read of the
    /// entry in the same round trip — so this process hears of the
    /// entry's next change while it loads (a change between its read and the
    /// grant may have used up the read's tracking) and has heard of every
    /// earlier one —, else by the script's own reading. A grant that failed
    /// on the session is made again on the command connection (a grant is
    /// safe to make twice: see `LEASE`); made there with a per-key feed, it
    /// says nothing of the entry, so the core reads the key again — on the
    /// session, should one be up by then — and the load is tracked.
    async fn grant(
        &self,
        names: &KeyNames,
        script: &ScriptInvocation<'_>,
        token: String,
    ) -> Result<Option<Lease>, RemoteError> {
        let ((granted, version, took, entry), tracked) = self
            .tracked_or(
                // Made again on the command connection after a failure: a
                // grant is safe to make twice (see `LEASE` in `scripts.rs`).
                |session| async move {
                    let granted = session.grant_and_track::<Granted>(&names.value, script);
                    let granted = self.on_session(&session, "lease", granted).await?;
                    Ok((granted.0, Some(granted.1)))
                },
                |mut conn| async move {
                    let granted = self.op("lease", script.invoke_async::<Granted>(&mut conn));
                    Ok((granted.await?, None))
                },
            )
            .await?;
        let at_grant = match tracked {
            Some(digits) => digits
                .as_deref()
                .and_then(envelope::version_of)
                .map_or(AtGrant::Missing, AtGrant::Entry),
            // Untracked, with a per-key feed: nothing tracks the key yet.
            None if self.feed.per_key() => AtGrant::Unknown,
            None if entry != 0 => AtGrant::Entry(entry),
            None => AtGrant::Missing,
        };
        Ok((granted == 1).then_some(Lease {
            token,
            version,
            taken_over: took == 1,
            at_grant,
        }))
    }

    /// How long a held mark, and a version record, last from a grant or
    /// renewal (and a tombstone from an invalidation): the lease TTL, plus one
    /// more lease TTL (at least [`HELD_MARGIN_FLOOR`]) in which a grant still
    /// counts as a take-over and a late holder may still write.
    fn held_px(&self) -> u64 {
        let ttl = self.config.lease_ttl;
        Self::millis(ttl.saturating_add(ttl.max(HELD_MARGIN_FLOOR)))
    }

    /// A quorum lease: a majority of the lock servers, then the fencing
    /// version advanced in the data store (and the lease marked there, so the
    /// write and the release give it back and announce it as usual).
    async fn try_quorum_lease(
        &self,
        quorum: &Quorum,
        names: &KeyNames,
        token: String,
    ) -> Result<Option<Lease>, RemoteError> {
        let ttl = self.config.lease_ttl;
        match quorum
            .acquire(&self.scripts, &names.lock, &token, ttl)
            .await
        {
            Acquired::Held => {}
            Acquired::Taken => return Ok(None),
            Acquired::Unavailable(why) => return Err(RemoteError::Unavailable(why)),
        }
        let script = self.grant_script(&self.scripts.fence, names, &token);
        match self.grant(names, &script, token.clone()).await {
            Ok(lease) => Ok(lease),
            Err(e) => {
                // No fencing version, no lease: give the locks back.
                quorum.release(&self.scripts, &names.lock, &token).await;
                Err(e)
            }
        }
    }
}

/// The keys and arguments of an entry's `PUT`, made once per write and sent
/// as a bare `EVALSHA` on the change feed's session (whose connection loaded
/// the script when it connected: a server that lost it is a new session), or
/// as a script invocation, which loads it again, on the command connection.
/// An invocation copies every argument into a buffer of its own, and again
/// into the command: a tenth of a write-behind ack's client-side cost.
struct PutCall<'a> {
    keys: Vec<&'a str>,
    args: Vec<Cow<'a, [u8]>>,
}

impl PutCall<'_> {
    fn evalsha(&self, script: &Script) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(*key);
        }
        for arg in &self.args {
            cmd.arg(arg.as_ref());
        }
        cmd
    }

    fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(*key);
        }
        for arg in &self.args {
            invocation.arg(arg.as_ref());
        }
        invocation
    }
}

impl<K, V> Remote<K, V> for RedisRemote<K, V>
where
    K: Display + FromStr + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn get<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Shared<V>, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            // Tracked: Redis tells this process of the next change of what it
            // read — of the lease too for a waiter, whose re-check this is.
            // One round trip; a key holding another type reads as nothing.
            let names = &names;
            let (value, marker): (Option<Vec<u8>>, Option<Vec<u8>>) = self
                .tracked_or(
                    |session| async move {
                        let waiting = self.feed.watched(&names.tag);
                        let read = session.read(names, waiting);
                        let mut values = self.on_session(&session, "MGET", read).await?.into_iter();
                        Ok((values.next().flatten(), values.next().flatten()))
                    },
                    |mut conn| async move {
                        let mut read = redis::cmd("MGET");
                        read.arg(&names.value).arg(&names.marker);
                        self.op("MGET", read.query_async(&mut conn)).await
                    },
                )
                .await?;
            // An undecodable entry is an error the core counts and logs.
            let entry = value.map(|b| envelope::decode(&b)).transpose()?;
            Ok(Shared {
                entry,
                marker: marker.and_then(|m| envelope::decode_marker(&m)),
            })
        })
    }

    fn try_lease<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Lease>, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let token = format!("{:032x}-{}", fastrand::u128(..), std::process::id());
            if let Some(quorum) = &self.quorum {
                return self.try_quorum_lease(quorum, &names, token).await;
            }
            let script = self.grant_script(&self.scripts.lease, &names, &token);
            self.grant(&names, &script, token).await
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a K,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let mut conn = self.conn.clone();
            if let Some(quorum) = &self.quorum {
                // The mark in the data store follows (best effort: the fencing
                // version, not the mark, decides the write).
                let mut renew_mark = self.scripts.renew.key(&names.lease);
                renew_mark
                    .key(&names.held)
                    .key(&names.version)
                    .arg(&lease.token)
                    .arg(Self::millis(self.config.lease_ttl))
                    .arg(self.held_px());
                let mark = self.op("renew mark", renew_mark.invoke_async::<i64>(&mut conn));
                let locks = quorum.renew(
                    &self.scripts,
                    &names.lock,
                    &lease.token,
                    self.config.lease_ttl,
                );
                let (mark, locks) = tokio::join!(mark, locks);
                mark?;
                return locks.map_err(RemoteError::Unavailable);
            }
            let renewed: i64 = self
                .op(
                    "renew",
                    self.scripts
                        .renew
                        .key(&names.lease)
                        .key(&names.held)
                        .key(&names.version)
                        .arg(&lease.token)
                        .arg(Self::millis(self.config.lease_ttl))
                        .arg(self.held_px())
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(renewed == 1)
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a K,
        lease: &'a Lease,
        marker: Option<(&'a Marker, Duration)>,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let mut conn = self.conn.clone();
            let (bytes, ttl) = marker
                .map(|(m, ttl)| (envelope::encode_marker(m), Self::millis(ttl)))
                .unwrap_or((Vec::new(), 1));
            let released: Result<i64, RemoteError> = self
                .op(
                    "release",
                    self.scripts
                        .release
                        .key(&names.lease)
                        .key(&names.marker)
                        .key(&names.held)
                        .key(&names.version)
                        .arg(&lease.token)
                        .arg(&self.announce)
                        .arg(&names.tag)
                        .arg(bytes)
                        .arg(ttl)
                        .invoke_async(&mut conn),
                )
                .await;
            if let Some(quorum) = &self.quorum {
                quorum
                    .release(&self.scripts, &names.lock, &lease.token)
                    .await;
            }
            let _: i64 = released?;
            Ok(())
        })
    }

    fn watch(&self, key: &K) -> Notified {
        self.feed.watch(&self.names(key).tag)
    }

    fn put<'a>(
        &'a self,
        key: &'a K,
        lease: Option<&'a Lease>,
        entry: &'a Entry<V>,
        retain: Duration,
    ) -> BoxFuture<'a, Result<PutOutcome, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            // The script writes the version its write gives the key into the
            // envelope; what is encoded here is a placeholder.
            let payload = envelope::encode(entry, 0, self.config.max_value_bytes)?;
            let px = Self::millis(retain);
            let (expected, token) = match lease {
                Some(l) => (l.version.to_string(), l.token.as_str()),
                None => (String::new(), ""),
            };
            let call = self.put_script(&names, &expected, token, &payload, px);
            let written = self.write_entry(&names, &call, true).await;
            if let (Some(quorum), Some(lease)) = (&self.quorum, lease) {
                // The write gave the lease back in the data store, whatever it
                // decided; so do the lock servers.
                quorum
                    .release(&self.scripts, &names.lock, &lease.token)
                    .await;
            }
            let (stored, version, _) = written?;
            Ok(if stored == 1 {
                PutOutcome::Stored { version }
            } else {
                PutOutcome::Superseded
            })
        })
    }

    fn put_queued<'a>(
        &'a self,
        key: &'a K,
        entry: &'a Entry<V>,
        retain: Duration,
        queue: &'a dyn WriteQueue<K, V>,
        max_len: u64,
    ) -> Option<BoxFuture<'a, Result<u64, QueuedPutError>>> {
        let queue = queue
            .as_any()?
            .downcast_ref::<RedisWriteQueue<K, V>>()
            .filter(|q| self.reaches(q))?;
        Some(Box::pin(async move {
            let push = queue
                .prepare(key, entry.value(), max_len)
                .await
                .map_err(QueuedPutError::Queue)?;
            let names = self.names(key);
            let payload = envelope::encode(entry, 0, self.config.max_value_bytes)
                .map_err(QueuedPutError::Remote)?;
            let mut call = self.put_script(&names, "", "", &payload, Self::millis(retain));
            call.keys.push(queue.stream(&push));
            call.args.extend([
                Cow::Borrowed(push.key.as_bytes()),
                Cow::Borrowed(push.payload.as_slice()),
                Cow::Owned(push.queued_ms.to_string().into_bytes()),
                Cow::Borrowed(if push.look { &b"1"[..] } else { &b""[..] }),
            ]);
            // Not made again on another connection after a failure that may
            // have been applied: the write would be queued twice.
            let (_, version, len) = self
                .write_entry(&names, &call, false)
                .await
                .map_err(QueuedPutError::Remote)?;
            queue.pushed(&push, u64::try_from(len).ok());
            Ok(version)
        }))
    }

    fn invalidate<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<u64, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            if let Some(quorum) = &self.quorum {
                // The load in flight is void (the version below advances): let
                // a new one take the lease at once, as with a single server.
                quorum.clear(&names.lock).await;
            }
            let mut script = self.scripts.invalidate.key(&names.value);
            script
                .key(&names.version)
                .key(&names.lease)
                .key(&names.marker)
                .key(&names.held)
                .arg(&self.announce)
                .arg(self.held_px())
                .arg(&names.tag);
            let (names, script) = (&names, &script);
            if let Some(session) = self.feed.session() {
                let (session, tag) = (&session, names.tag.as_str());
                let (invalidated, _) = self
                    .in_window(session, tag, "invalidate", |fence| async move {
                        session.write(&names.value, script, &fence).await
                    })
                    .await;
                if let Ok(version) = invalidated {
                    // Every copy older than it goes, in the other caches
                    // on this remote too.
                    self.feed.own_change(Event::Changed { tag, version }, tag);
                    return Ok(version);
                }
                // Made again on the command connection after any failure,
                // no answer too (twice is harmless): a failed session's
                // connection closes once its last handle goes, and Redis
                // drops a command it held back (a client pause) on a closed
                // connection — while a
                // timed-out write held on an open one would run after it,
                // unvoided.
            }
            let mut conn = self.conn.clone();
            self.op("invalidate", script.invoke_async(&mut conn)).await
        })
    }

    fn lease_ttl(&self) -> Duration {
        self.config.lease_ttl
    }

    fn renews(&self) -> bool {
        self.config.renew
    }

    fn feed_bound(&self) -> Option<Duration> {
        Some(crate::feed::current_for(self.config.op_timeout))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), RemoteError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let _: String = self
                .op("PING", redis::cmd("PING").query_async(&mut conn))
                .await?;
            if let Some(quorum) = &self.quorum {
                quorum.ping().await.map_err(RemoteError::Unavailable)?;
            }
            Ok(())
        })
    }

    fn listen(&self, listener: Weak<dyn ChangeListener<K>>) {
        self.feed.listen(Box::new(move |event| {
            let Some(listener) = listener.upgrade() else {
                return;
            };
            match event {
                Event::Changed { tag, version } => {
                    // A tag that is not one of ours (another program's bytes,
                    // another key type on the prefix) names no key of this cache.
                    if let Some(key) = unescape(tag).and_then(|t| K::from_str(&t).ok()) {
                        listener.changed(&key, version);
                    }
                }
                Event::ChangedUnknown { tag } => {
                    if let Some(key) = unescape(tag).and_then(|t| K::from_str(&t).ok()) {
                        listener.changed_unknown(&key);
                    }
                }
                Event::Down => listener.feed_down(),
                Event::Up => listener.feed_up(),
                Event::Current { as_of } => listener.feed_current(as_of.elapsed()),
                Event::Broadcast { .. } => {}
            }
        }));
    }
}
