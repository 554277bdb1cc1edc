//! The change feed of a [`RedisRemote`](crate::RedisRemote): one pub/sub
//! connection, subscribed once to the prefix's change channel, for as long as
//! the remote lives.
//!
//! Every write, invalidation and lease release in the fleet is announced there
//! (`<kind> <version> <tag>`, see `scripts.rs`). A background task reads the
//! announcements and
//! - wakes the local waiters watching that key (a `watch` counter per key,
//!   registered locally: no SUBSCRIBE per key, so watching costs no round trip
//!   and nothing is serialised behind one connection);
//! - hands writes and invalidations to the listeners (the caches, which evict
//!   their older copy);
//! - hands broadcasts (`b <topic> <payload>`, from
//!   [`RedisRemote::broadcast`](crate::RedisRemote::broadcast)) to their listeners.
//!
//! The connection is pinged every `PING_EVERY`; a ping unanswered within the
//! operation timeout (a half-open connection), or the stream ending, counts as
//! lost: every waiter is woken (to re-check rather than trust a dead feed),
//! listeners are told the feed is down (announcements may go unseen), and the
//! task reconnects with backoff, then tells them once it is back.
//!
//! Bytes on the channel are untrusted: a message that does not parse is
//! dropped (and counted), never acted on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use herdguard::Notified;
use redis::aio::PubSub;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::conn::Endpoint;

/// How often the pub/sub connection is pinged while it looks healthy: with the
/// operation timeout, the bound on how long a frozen or half-open connection
/// goes unnoticed (one small command a process, ten times a second). Each
/// answer also vouches that every notice sent before the ping was handled.
const PING_EVERY: Duration = Duration::from_millis(100);

/// How long one such answer vouches for the process's copies
/// ([`herdguard::Remote::feed_bound`]): until the next ping's answer is
/// overdue — the time the feed takes to count itself lost — so only a feed
/// that is failing, or a process too paused or starved to read it, lapses.
pub(crate) fn current_for(op_timeout: Duration) -> Duration {
    PING_EVERY + op_timeout
}
/// Reconnection backoff: first wait and cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// What the feed tells its listeners.
pub(crate) enum Event<'a> {
    /// The key with this tag was written or invalidated, and now has `version`.
    Changed { tag: &'a str, version: u64 },
    /// A message another process broadcast to the fleet on `topic`.
    Broadcast { topic: &'a str, payload: &'a str },
    /// The connection is lost: announcements go unseen until it is back.
    Down,
    /// The connection is back; announcements made meanwhile were missed.
    Up,
    /// Every announcement Redis sent before `as_of` has been handled.
    Current { as_of: Instant },
}

/// A listener of the feed.
pub(crate) type Sink = Box<dyn Fn(Event<'_>) + Send + Sync>;

/// One key's local watchers.
struct Watchers {
    refs: usize,
    bump: watch::Sender<u64>,
}

struct State {
    watchers: Mutex<HashMap<String, Watchers>>,
    sinks: Mutex<Vec<Sink>>,
    live: AtomicBool,
    /// The last [`Event::Current`], for listeners that come later.
    current: Mutex<Option<Instant>>,
    /// Messages on the channel that did not parse.
    rejected: AtomicU64,
    channel: String,
    op_timeout: Duration,
}

impl State {
    // A poisoned lock only means a panic elsewhere mid-update of a map whose
    // entries stay consistent, so keep using it.
    fn watchers(&self) -> MutexGuard<'_, HashMap<String, Watchers>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sinks(&self) -> MutexGuard<'_, Vec<Sink>> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self, tag: &str) {
        if let Some(w) = self.watchers().get(tag) {
            w.bump.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        for w in self.watchers().values() {
            w.bump.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn emit(&self, event: Event<'_>) {
        for sink in self.sinks().iter() {
            sink(match &event {
                Event::Changed { tag, version } => Event::Changed {
                    tag,
                    version: *version,
                },
                Event::Broadcast { topic, payload } => Event::Broadcast { topic, payload },
                Event::Down => Event::Down,
                Event::Up => Event::Up,
                Event::Current { as_of } => Event::Current { as_of: *as_of },
            });
        }
    }

    /// Every announcement sent before `as_of` has been handled.
    fn vouch(&self, as_of: Instant) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(as_of);
        self.emit(Event::Current { as_of });
    }

    /// Acts on one announcement.
    fn handle(&self, payload: &[u8]) {
        if let Some((topic, message)) = parse_broadcast(payload) {
            self.emit(Event::Broadcast {
                topic,
                payload: message,
            });
            return;
        }
        let Some((kind, version, tag)) = parse(payload) else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if kind != b'r' {
            self.emit(Event::Changed { tag, version });
        }
        self.wake(tag);
    }

    /// The feed went down (or was never up): nothing it says can be trusted
    /// until it is back.
    fn lost(&self) {
        self.live.store(false, Ordering::Release);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.wake_all();
        self.emit(Event::Down);
    }
}

/// `b <topic> <payload>`: a broadcast (see [`broadcast_message`]).
fn parse_broadcast(payload: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let rest = text.strip_prefix("b ")?;
    let (topic, message) = rest.split_once(' ')?;
    (!topic.is_empty()).then_some((topic, message))
}

/// The announcement of a broadcast on `topic` (no whitespace) with `payload`.
pub(crate) fn broadcast_message(topic: &str, payload: &str) -> String {
    format!("b {topic} {payload}")
}

/// `<kind> <version> <tag>` with kind one of `w`, `i`, `r`.
fn parse(payload: &[u8]) -> Option<(u8, u64, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = text.split_once(' ')?;
    let (version, tag) = rest.split_once(' ')?;
    let kind = match kind {
        "w" | "i" | "r" => kind.as_bytes()[0],
        _ => return None,
    };
    Some((kind, version.parse().ok()?, tag))
}

/// The feed of one remote; stops its task when dropped.
pub(crate) struct Feed {
    state: Arc<State>,
    task: AbortHandle,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    /// Starts the reader task on `pubsub`, subscribed to `channel` by a
    /// SUBSCRIBE sent at `subscribed`.
    pub(crate) fn start(
        endpoint: Endpoint,
        pubsub: PubSub,
        subscribed: Instant,
        channel: String,
        op_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let state = Arc::new(State {
            watchers: Mutex::new(HashMap::new()),
            sinks: Mutex::new(Vec::new()),
            live: AtomicBool::new(true),
            current: Mutex::new(Some(subscribed)),
            rejected: AtomicU64::new(0),
            channel,
            op_timeout,
        });
        let task =
            tokio::spawn(run(Arc::clone(&state), endpoint, pubsub, connect_timeout)).abort_handle();
        Feed { state, task }
    }

    /// Adds a listener, told at once how current the feed is.
    pub(crate) fn listen(&self, sink: Sink) {
        let mut sinks = self.state.sinks();
        let current = *self.state.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(as_of) = current {
            sink(Event::Current { as_of });
        }
        sinks.push(sink);
    }

    /// Whether the feed is subscribed and answering.
    pub(crate) fn live(&self) -> bool {
        self.state.live.load(Ordering::Acquire)
    }

    /// Messages on the channel that did not parse.
    pub(crate) fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::Relaxed)
    }

    /// Watches the key with this tag: resolves at its next announcement, or
    /// when the feed is lost or restored.
    pub(crate) fn watch(&self, tag: &str) -> Notified {
        let mut rx = {
            let mut map = self.state.watchers();
            let w = map.entry(tag.to_string()).or_insert_with(|| Watchers {
                refs: 0,
                bump: watch::channel(0).0,
            });
            w.refs += 1;
            w.bump.subscribe()
        };
        // Registered now (the receiver has seen the current value), so a bump
        // from here on resolves it even before the future is first polled.
        let interest = Interest {
            state: Arc::clone(&self.state),
            tag: tag.to_string(),
        };
        Box::pin(async move {
            let _interest = interest;
            // Err: the sender is gone with the feed: resolve, the waiter re-checks.
            let _ = rx.changed().await;
        })
    }
}

/// One watcher's hold on a key's counter; the last one out removes it.
struct Interest {
    state: Arc<State>,
    tag: String,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut map = self.state.watchers();
        if let Some(w) = map.get_mut(&self.tag) {
            w.refs = w.refs.saturating_sub(1);
            if w.refs == 0 {
                map.remove(&self.tag);
            }
        }
    }
}

/// Reads announcements until the connection is lost, then reconnects,
/// forever (until aborted).
async fn run(state: Arc<State>, endpoint: Endpoint, pubsub: PubSub, connect_timeout: Duration) {
    let mut pubsub = Some(pubsub);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let connection = match pubsub.take() {
            Some(p) => Some((p, None)),
            None => connect(&state, &endpoint, connect_timeout)
                .await
                .map(|(p, asked)| (p, Some(asked))),
        };
        let Some((connection, subscribed)) = connection else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        backoff = FIRST_BACKOFF;
        if !state.live.swap(true, Ordering::AcqRel) {
            // Back after a loss: announcements made meanwhile are gone.
            tracing::info!(target: "herdguard::fleet", "change feed restored");
            state.wake_all();
            state.emit(Event::Up);
        }
        if let Some(as_of) = subscribed {
            // Everything announced since the SUBSCRIBE reaches this connection.
            state.vouch(as_of);
        }
        read(&state, connection).await;
        tracing::warn!(target: "herdguard::fleet", "change feed lost");
        state.lost();
    }
}

/// A new pub/sub connection subscribed to the channel, and when the SUBSCRIBE
/// was sent, or `None`. With Sentinel, to the server the sentinels name as
/// primary now.
async fn connect(state: &State, endpoint: &Endpoint, limit: Duration) -> Option<(PubSub, Instant)> {
    let client = tokio::time::timeout(limit, endpoint.client())
        .await
        .ok()?
        .ok()?;
    let mut pubsub = tokio::time::timeout(limit, client.get_async_pubsub())
        .await
        .ok()?
        .ok()?;
    let asked = Instant::now();
    tokio::time::timeout(state.op_timeout, pubsub.subscribe(&state.channel))
        .await
        .ok()?
        .ok()?;
    Some((pubsub, asked))
}

/// Reads until the stream ends or a ping goes unanswered.
async fn read(state: &State, pubsub: PubSub) {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(m) => state.handle(m.get_payload_bytes()),
                None => return,
            },
            _ = ping.tick() => {
                let sent = Instant::now();
                let answered = tokio::time::timeout(state.op_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
                // Redis answers in order: every announcement it sent before
                // the PONG is queued by now. Handle them, then vouch.
                loop {
                    match stream.next().now_or_never() {
                        Some(Some(m)) => state.handle(m.get_payload_bytes()),
                        Some(None) => return,
                        None => break,
                    }
                }
                state.vouch(sent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_round_trip_and_are_not_changes() {
        let m = broadcast_message("purge", "GET /a b?c");
        assert_eq!(parse_broadcast(m.as_bytes()), Some(("purge", "GET /a b?c")));
        assert_eq!(parse(m.as_bytes()), None);
        for junk in [&b"b"[..], b"b ", b"b  x", b"bx y z", b"\xff b y"] {
            assert_eq!(parse_broadcast(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn announcements_parse_and_junk_does_not() {
        assert_eq!(parse(b"w 17 user:1"), Some((b'w', 17, "user:1")));
        assert_eq!(parse(b"i 3 a b c"), Some((b'i', 3, "a b c")));
        assert_eq!(parse(b"r 0 "), Some((b'r', 0, "")));
        for junk in [
            &b""[..],
            b"w",
            b"w 1",
            b"x 1 k",
            b"w -1 k",
            b"w 1e3 k",
            b"\xff 1 k",
        ] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
    }
}
