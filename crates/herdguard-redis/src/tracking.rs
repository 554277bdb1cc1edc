//! The per-key change feed, on Redis's own machinery: server-assisted
//! client-side caching (`CLIENT TRACKING`, default mode, over RESP3).
//!
//! A process keeps one connection per node that owns slots (one server, the
//! Sentinel primary, or every primary of a cluster), with tracking on in
//! `OPTIN` mode:
//! - a read sent after `CLIENT CACHING YES` is tracked: Redis remembers that
//!   this connection read those keys and pushes `invalidate <key>` to it —
//!   to it alone — when one is next written, deleted, expired, evicted or
//!   flushed, or dropped from Redis's tracking table when it is full (each
//!   key once: the next tracked read tracks it again). The fleet's reads of
//!   an entry go here, and so does a waiter's re-check, which reads the lease
//!   too: its holder's write or release, its expiry or an invalidation pushes
//!   to exactly the processes waiting;
//! - other commands (the protocol's scripts) leave nothing in Redis's table;
//! - a write of an entry (or an invalidation) made here is told back to this
//!   connection too. Not `NOLOOP`: Redis would also skip the pushes for keys
//!   it drops from its table or its memory while running this connection's
//!   command — changes then lost. Instead the write opens a window
//!   (`feed::Window`) that an `UNSUBSCRIBE` of a fence channel, sent right
//!   after it, closes: the pushes for the key inside are held back, and the
//!   tracked read of the entry's version that follows in the same round trip
//!   says whether the copy written is the key's (and tracks it).
//!
//! The push handler runs in the connection's reader, before the reply of any
//! later command is handed over: once a ping's answer is in, every push Redis
//! sent before it has been acted on, so the answer vouches for the present.
//! A connection that closes, a ping unanswered within the operation timeout,
//! or a call that fails on it (a moved slot, a dropped connection, no answer)
//! ends the session: the feed is down — every copy is checked before it is
//! served — until a new session is up. Node 0's connection also subscribes
//! to the fleet's broadcast channel (for a process of the broadcast feed on a
//! cluster, to the change channel instead: see `feed.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    ConnectionAddr, ErrorKind, FromRedisValue, ProtocolVersion, PushInfo, PushKind, RedisError,
    RedisResult, ScriptInvocation, ServerErrorKind, Value,
};
use tokio::sync::Notify;

use crate::conn::{connection_config, Endpoint};
use crate::feed::{Setup, State};
use crate::keys::KeyNames;

/// The number of Redis Cluster hash slots.
const SLOTS: u16 = 16384;

/// Most nodes a new session connects to at once.
const CONNECT_AT_ONCE: usize = 8;

/// Why a session could not be set up.
pub(crate) enum Refusal {
    /// Redis answered, and said no (no RESP3 before Redis 6, tracking not
    /// allowed or not known): the broadcast feed is the way.
    Refused(String),
    /// Redis did not answer in time, or the connection failed.
    Unreachable(String),
}

/// Whether `e` is Redis saying no, rather than Redis not being there.
fn refusal(e: RedisError) -> Refusal {
    let said_no = matches!(
        e.kind(),
        ErrorKind::RESP3NotSupported
            | ErrorKind::Extension
            | ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoPerm)
    );
    if said_no {
        Refusal::Refused(e.to_string())
    } else {
        Refusal::Unreachable(e.to_string())
    }
}

/// Bounds `f` by `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = RedisResult<T>>,
) -> Result<T, Refusal> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| Refusal::Unreachable(format!("{what}: no answer within {limit:?}")))?
        .map_err(refusal)
}

/// A session's liveness, shared with its connections' push handlers.
struct Link {
    generation: u64,
    dead: AtomicBool,
    lost: Notify,
    state: Weak<State>,
}

impl Link {
    /// The session failed: the feed is down until the next one is up.
    fn fail(&self, why: &str) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(state) = self.state.upgrade() {
            state.session_lost(self.generation, why);
        }
        self.lost.notify_one();
    }
}

/// Acts on one push of a session's connection.
fn on_push(state: &State, link: &Link, push: PushInfo) {
    match push.kind {
        PushKind::Invalidate => match push.data.first() {
            Some(Value::Array(names)) => {
                for name in names {
                    match name {
                        Value::BulkString(bytes) => state.invalidated(bytes),
                        Value::SimpleString(text) => state.invalidated(text.as_bytes()),
                        _ => state.reject(),
                    }
                }
            }
            // `invalidate nil`: the whole database was flushed.
            Some(Value::Nil) => state.flushed(),
            _ => state.reject(),
        },
        PushKind::Message => match push.data.get(1) {
            Some(Value::BulkString(payload)) => state.message(payload),
            _ => state.reject(),
        },
        // A write's fence: the reply to `UNSUBSCRIBE`, handed over in order.
        PushKind::Unsubscribe => {
            if let Some(Value::BulkString(channel)) = push.data.first() {
                state.fenced(channel);
            }
        }
        PushKind::Disconnection => link.fail("connection closed"),
        _ => {}
    }
}

/// The per-key feed's connections of one session.
pub(crate) struct Session {
    nodes: Vec<MultiplexedConnection>,
    /// `(first slot, last slot, node)`, by first slot; empty with one node.
    slots: Vec<(u16, u16, usize)>,
    link: Arc<Link>,
}

impl Session {
    pub(crate) fn generation(&self) -> u64 {
        self.link.generation
    }

    pub(crate) fn dead(&self) -> bool {
        self.link.dead.load(Ordering::Acquire)
    }

    /// A call on the session failed: the feed is down until a new one is up.
    pub(crate) fn fail(&self, why: &str) {
        self.link.fail(why);
    }

    /// Ends the session without counting it as a loss (the feed is dropped).
    pub(crate) fn close(&self) {
        self.link.dead.store(true, Ordering::Release);
    }

    /// The connection to the node that owns `key`.
    fn node(&self, key: &str) -> RedisResult<MultiplexedConnection> {
        if self.dead() {
            return Err(RedisError::from((
                ErrorKind::Io,
                "the change feed's session ended",
            )));
        }
        let index = if self.slots.is_empty() {
            0
        } else {
            let slot = slot_of(key.as_bytes());
            let at = self.slots.partition_point(|(first, _, _)| *first <= slot);
            match at.checked_sub(1).map(|i| self.slots[i]) {
                Some((_, last, node)) if slot <= last => node,
                _ => {
                    return Err(RedisError::from((
                        ErrorKind::Server(ServerErrorKind::ClusterDown),
                        "no node owns the slot",
                    )))
                }
            }
        };
        self.nodes
            .get(index)
            .cloned()
            .ok_or_else(|| RedisError::from((ErrorKind::ClusterConnectionNotFound, "no such node")))
    }

    /// The entry and marker of `names` — and with `lease_too` its lease, for
    /// a waiter — read so that Redis tells this process of their next change.
    pub(crate) async fn read(
        &self,
        names: &KeyNames,
        lease_too: bool,
    ) -> RedisResult<Vec<Option<Vec<u8>>>> {
        let mut conn = self.node(&names.value)?;
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
        pipe.cmd("MGET").arg(&names.value).arg(&names.marker);
        if lease_too {
            pipe.arg(&names.lease);
        }
        let (values,): (Vec<Option<Vec<u8>>>,) = pipe.query_async(&mut conn).await?;
        Ok(values)
    }

    /// Runs a grant's script for the key whose entry is `value` on its node,
    /// then reads the entry's twenty version digits so that Redis tells this
    /// process of its next change — one round trip, after which every push
    /// Redis sent before has been acted on. Returns the script's answer and
    /// the digits (`None`: no entry, or bytes of another type, which the read
    /// treats as none too). Only the digits cross the wire, not the entry: a
    /// process refused the lease of a key with an entry (another refreshes
    /// it) pays no more than the script.
    pub(crate) async fn grant_and_track<T: FromRedisValue>(
        &self,
        value: &str,
        script: &ScriptInvocation<'_>,
    ) -> RedisResult<(T, Option<Vec<u8>>)> {
        let mut conn = self.node(value)?;
        let mut pipe = redis::pipe();
        // Each reply on its own: `GETRANGE` fails on a key of another type
        // (`WRONGTYPE`), and that must read as no entry, not fail the grant.
        pipe.ignore_errors();
        pipe.invoke_script(script);
        pipe.cmd("CLIENT").arg("CACHING").arg("YES");
        pipe.cmd("GETRANGE")
            .arg(value)
            .arg(1)
            .arg(crate::envelope::VERSION_DIGITS);
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        let Ok([granted, caching, digits]) = <[Value; 3]>::try_from(replies) else {
            return Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "grant: not three replies",
            )));
        };
        let granted = match granted {
            Value::ServerError(e) => return Err(e.into()),
            v => T::from_redis_value(v)?,
        };
        // Without tracking, the read below would not be tracked: the session is broken.
        if let Value::ServerError(e) = caching {
            return Err(e.into());
        }
        let digits = match digits {
            Value::BulkString(d) if !d.is_empty() => Some(d),
            // Bytes of another type: no entry, as the read says.
            Value::ServerError(e) if e.code() == "WRONGTYPE" => None,
            // Any other error (a slot moving, a node loading): the read-back
            // did not track the key, and the session is not to be trusted.
            Value::ServerError(e) => return Err(e.into()),
            _ => None,
        };
        Ok((granted, digits))
    }

    /// Runs a script (its `EVALSHA`) that writes the entry `value` on its node, closes the
    /// write's window (`fence`), then reads the entry's twenty version digits
    /// (empty: no entry) so that Redis tells this process of its next change
    /// — one round trip.
    pub(crate) async fn write_and_track<T: FromRedisValue>(
        &self,
        value: &str,
        evalsha: redis::Cmd,
        fence: &str,
    ) -> RedisResult<(T, Vec<u8>)> {
        let mut conn = self.node(value)?;
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha);
        pipe.cmd("UNSUBSCRIBE").arg(fence).ignore();
        pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
        // The version field (after the format byte): a tracked read of a few bytes.
        pipe.cmd("GETRANGE")
            .arg(value)
            .arg(1)
            .arg(crate::envelope::VERSION_DIGITS);
        pipe.query_async(&mut conn).await
    }

    /// Runs a script that changes the key `key` on its node, then closes the
    /// write's window (`fence`).
    pub(crate) async fn write<T: FromRedisValue>(
        &self,
        key: &str,
        script: &ScriptInvocation<'_>,
        fence: &str,
    ) -> RedisResult<T> {
        let mut conn = self.node(key)?;
        let mut pipe = redis::pipe();
        pipe.invoke_script(script);
        pipe.cmd("UNSUBSCRIBE").arg(fence).ignore();
        let (answer,): (T,) = pipe.query_async(&mut conn).await?;
        Ok(answer)
    }

    /// Pings every connection (in parallel) within `limit`; `Err` says why not.
    async fn ping(&self, limit: Duration) -> Result<(), String> {
        let pings = self.nodes.iter().map(|conn| {
            let mut conn = conn.clone();
            async move {
                tokio::time::timeout(limit, redis::cmd("PING").query_async::<Value>(&mut conn))
                    .await
            }
        });
        for answer in futures_util::future::join_all(pings).await {
            match answer {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("ping failed: {e}")),
                Err(_) => return Err("ping unanswered".to_string()),
            }
        }
        Ok(())
    }
}

/// The Redis Cluster hash slot of `key`, as Redis computes it: CRC16 of the
/// text inside the first non-empty `{…}`, else of the whole key. redis-rs
/// (1.8) computes it too but keeps the number private (`Slot::for_key`), so
/// it is computed here, once, and a test ties the two.
fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// Makes sessions.
pub(crate) struct Tracker {
    endpoint: Endpoint,
    /// What node 0's connection subscribes to: the fleet's broadcast
    /// channel, or with [`Setup::broadcast_only`] the change channel (where
    /// broadcasts go too, and a release without tracking sends them).
    channel: String,
    scripts: Vec<redis::Script>,
    op_timeout: Duration,
    connect_timeout: Duration,
    generation: AtomicU64,
}

impl Tracker {
    pub(crate) fn new(setup: &Setup) -> Self {
        Tracker {
            endpoint: setup.endpoint.clone(),
            channel: if setup.broadcast_only {
                setup.changes.clone()
            } else {
                setup.broadcasts.clone()
            },
            scripts: setup.scripts.clone(),
            op_timeout: setup.op_timeout,
            connect_timeout: setup.connect_timeout,
            generation: AtomicU64::new(0),
        }
    }

    /// A new session: a tracking connection to every node that owns slots,
    /// and when tracking was first asked for.
    pub(crate) async fn connect(
        &self,
        state: &Arc<State>,
    ) -> Result<(Arc<Session>, Instant), Refusal> {
        let limit = self.connect_timeout;
        let seed = within(limit, "finding the primary", self.endpoint.client()).await?;
        let (addresses, slots) = match self.endpoint {
            Endpoint::Cluster(_) => self.topology(&seed).await?,
            _ => (vec![seed.get_connection_info().clone()], Vec::new()),
        };
        let link = Arc::new(Link {
            generation: self.generation.fetch_add(1, Ordering::AcqRel) + 1,
            dead: AtomicBool::new(false),
            lost: Notify::new(),
            state: Arc::downgrade(state),
        });
        let mut nodes = Vec::with_capacity(addresses.len());
        let connected = self.connect_nodes(&addresses, &link, &mut nodes).await;
        match connected {
            Ok(asked) if !link.dead.load(Ordering::Acquire) => {
                Ok((Arc::new(Session { nodes, slots, link }), asked))
            }
            outcome => {
                // Before its connections drop: their closing is no loss of the feed.
                link.dead.store(true, Ordering::Release);
                drop(nodes);
                Err(outcome.err().unwrap_or_else(|| {
                    Refusal::Unreachable("a connection closed while connecting".into())
                }))
            }
        }
    }

    /// Connects to every address (into `nodes`, in order), up to
    /// [`CONNECT_AT_ONCE`] at a time, with tracking on; returns when tracking
    /// was first asked for. On a refusal, the connections made are in `nodes`
    /// all the same (the caller ends the session before they drop).
    async fn connect_nodes(
        &self,
        addresses: &[redis::ConnectionInfo],
        link: &Arc<Link>,
        nodes: &mut Vec<MultiplexedConnection>,
    ) -> Result<Instant, Refusal> {
        let asked = Instant::now();
        let mut refused = None;
        for (at, batch) in addresses.chunks(CONNECT_AT_ONCE).enumerate() {
            let batch = batch
                .iter()
                .enumerate()
                .map(|(i, info)| self.connect_node(info, link, at == 0 && i == 0));
            for conn in futures_util::future::join_all(batch).await {
                match conn {
                    Ok(conn) => nodes.push(conn),
                    Err(why) => refused = refused.or(Some(why)),
                }
            }
            if refused.is_some() {
                break;
            }
        }
        refused.map_or(Ok(asked), Err)
    }

    /// One node's connection: tracking on and the scripts loaded (a server
    /// that lost them, restarted, is a new session), and on node 0 the
    /// subscription — sent together, in one round trip after the handshake.
    async fn connect_node(
        &self,
        info: &redis::ConnectionInfo,
        link: &Arc<Link>,
        subscribes: bool,
    ) -> Result<MultiplexedConnection, Refusal> {
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.clone().set_redis_settings(settings))
            .map_err(|e| Refusal::Unreachable(e.to_string()))?;
        let handler = {
            let link = Arc::clone(link);
            move |push: PushInfo| -> Result<(), ()> {
                if let Some(state) = link.state.upgrade() {
                    on_push(&state, &link, push);
                }
                Ok(())
            }
        };
        let config =
            connection_config(self.connect_timeout, self.op_timeout).set_push_sender(handler);
        let conn = within(
            self.connect_timeout,
            "connecting (RESP3)",
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        let limit = self.op_timeout;
        let tracking = async {
            let mut on = redis::cmd("CLIENT");
            on.arg("TRACKING").arg("ON").arg("OPTIN");
            within(
                limit,
                "CLIENT TRACKING ON",
                on.query_async::<()>(&mut conn.clone()),
            )
            .await
        };
        let scripts = futures_util::future::try_join_all(self.scripts.iter().map(|script| {
            let mut conn = conn.clone();
            async move { within(limit, "SCRIPT LOAD", script.load_async(&mut conn)).await }
        }));
        let subscribed = async {
            if !subscribes {
                return Ok(());
            }
            within(limit, "SUBSCRIBE", conn.clone().subscribe(&self.channel)).await
        };
        futures_util::try_join!(tracking, scripts, subscribed)?;
        Ok(conn)
    }

    /// A cluster's primaries (the address of each, with the seed's settings)
    /// and which slots each owns, from `CLUSTER SLOTS`.
    async fn topology(
        &self,
        seed: &redis::Client,
    ) -> Result<(Vec<redis::ConnectionInfo>, Vec<(u16, u16, usize)>), Refusal> {
        let config = connection_config(self.connect_timeout, self.op_timeout);
        let mut conn = within(
            self.connect_timeout,
            "connecting to a seed",
            seed.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        let mut ask = redis::cmd("CLUSTER");
        ask.arg("SLOTS");
        let reply = within(
            self.op_timeout,
            "CLUSTER SLOTS",
            ask.query_async::<Value>(&mut conn),
        )
        .await?;
        let base = seed.get_connection_info();
        let (addresses, slots) = parse_slots(&reply, base)
            .ok_or_else(|| Refusal::Unreachable("CLUSTER SLOTS: unexpected reply".into()))?;
        if addresses.is_empty() {
            return Err(Refusal::Unreachable("CLUSTER SLOTS: no slot served".into()));
        }
        Ok((addresses, slots))
    }
}

/// Parses a `CLUSTER SLOTS` reply into the primaries' addresses (with
/// `base`'s settings; an empty host is `base`'s) and the slot ranges of each.
#[allow(clippy::type_complexity)]
fn parse_slots(
    reply: &Value,
    base: &redis::ConnectionInfo,
) -> Option<(Vec<redis::ConnectionInfo>, Vec<(u16, u16, usize)>)> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let mut hosts: Vec<(String, u16)> = Vec::new();
    let mut slots = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let first = u16::try_from(int(fields.first()?)?).ok()?;
        let last = u16::try_from(int(fields.get(1)?)?).ok()?;
        if first > last || last >= SLOTS {
            return None;
        }
        let Value::Array(primary) = fields.get(2)? else {
            return None;
        };
        let host = text(primary.first()?)?;
        let port = u16::try_from(int(primary.get(1)?)?).ok()?;
        let node = match hosts.iter().position(|h| *h == (host.clone(), port)) {
            Some(i) => i,
            None => {
                hosts.push((host, port));
                hosts.len() - 1
            }
        };
        slots.push((first, last, node));
    }
    slots.sort_unstable();
    let addresses = hosts
        .into_iter()
        .map(|(host, port)| {
            let addr = match base.addr().clone() {
                ConnectionAddr::Tcp(seed_host, _) => {
                    ConnectionAddr::Tcp(if host.is_empty() { seed_host } else { host }, port)
                }
                ConnectionAddr::TcpTls {
                    host: seed_host,
                    insecure,
                    tls_params,
                    ..
                } => ConnectionAddr::TcpTls {
                    host: if host.is_empty() { seed_host } else { host },
                    port,
                    insecure,
                    tls_params,
                },
                _ => ConnectionAddr::Tcp(host, port),
            };
            base.clone().set_addr(addr)
        })
        .collect();
    Some((addresses, slots))
}

/// Keeps the per-key feed up: pings the session's connections every
/// `ping_every` (each answer vouches for the present), and when the session
/// fails, connects a new one with backoff. Forever, until aborted.
pub(crate) async fn run(
    state: Arc<State>,
    tracker: Tracker,
    first_backoff: Duration,
    max_backoff: Duration,
    ping_every: Duration,
) {
    let mut backoff = first_backoff;
    let mut session = state.installed();
    loop {
        let current = match session.take() {
            Some(s) => s,
            None => match tracker.connect(&state).await {
                Ok((s, asked)) if state.install(Arc::clone(&s)) => {
                    state.vouch(asked);
                    backoff = first_backoff;
                    s
                }
                Ok(_) | Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            },
        };
        keep_alive(&state, &current, ping_every).await;
        current.close();
    }
}

/// Pings until the session fails.
async fn keep_alive(state: &State, session: &Session, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = session.link.lost.notified() => return,
            _ = tick.tick() => {
                let sent = Instant::now();
                match session.ping(state.op_timeout).await {
                    // The pushes sent before each answer were handled before it.
                    Ok(()) if !session.dead() => state.vouch(sent),
                    Ok(()) => return,
                    Err(why) => {
                        session.fail(&why);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag_as_redis_does() {
        // Values from `CLUSTER KEYSLOT` (Redis 7).
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"hg:{foo}:v"), 12182);
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
    }

    /// The session routes a key to the node redis-rs's cluster connection
    /// sends it to (whose slot number is not public: compared as a `Slot`).
    #[test]
    fn slots_agree_with_redis_rs_on_any_key() {
        use redis::cluster_routing::Slot;
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let key: Vec<u8> = (0..rng.usize(0..12))
                .map(|_| *rng.choice(b"{}ab:\xff").unwrap_or(&b'a'))
                .collect();
            assert_eq!(
                Slot::new(slot_of(&key)),
                Some(Slot::for_key(&key)),
                "{:?}",
                String::from_utf8_lossy(&key)
            );
        }
    }

    #[test]
    fn cluster_slots_replies_parse_and_junk_does_not() {
        let base = redis::Client::open("redis://10.0.0.9:7000/")
            .unwrap()
            .get_connection_info()
            .clone();
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
        ]);
        let (addresses, slots) = parse_slots(&reply, &base).unwrap();
        assert_eq!(slots, vec![(0, 5460, 1), (5461, 16383, 0)]);
        let shown: Vec<String> = addresses.iter().map(|a| a.addr().to_string()).collect();
        assert_eq!(shown, vec!["10.0.0.9:7001", "10.0.0.1:7000"]);
        for junk in [
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(9),
                Value::Int(1),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(16384),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                node("h", 70000),
            ])]),
        ] {
            assert!(parse_slots(&junk, &base).is_none(), "{junk:?}");
        }
    }
}
