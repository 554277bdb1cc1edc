//! The change feed of a [`RedisRemote`](crate::RedisRemote): how a process
//! hears that a key it holds a copy of, or waits on, changed.
//!
//! Two ways, one state (this module):
//! - **Per key** (the default, `tracking.rs`): Redis's client tracking tells
//!   each process only of the keys it read — those it holds a copy of or waits
//!   on — whoever changed them, so the cost of a change grows with the
//!   processes that care, not with the fleet.
//! - **Broadcast** (Redis before 6.0, a server that refuses tracking, or
//!   [`RedisConfig::broadcast_feed`](crate::RedisConfig::broadcast_feed)): one
//!   pub/sub connection subscribed to the prefix's change channel, on which
//!   every write, invalidation and lease release in the fleet is announced
//!   (`<kind> <version> <tag>`, see `scripts.rs`).
//!
//! On a Redis Cluster the processes of the per-key feed announce nothing on
//! the change channel (each announcement would cross the cluster bus to every
//! node), so a process listening only there would never hear their changes.
//! There `broadcast_feed` therefore hears per key as well — tracking hears
//! every writer — and its tracking session listens on the change channel
//! rather than the broadcast channel (broadcasts go to both, and a release
//! without tracking sends them on the change channel alone); its own changes
//! are still announced on the change channel. Only a cluster that refuses tracking gets the
//! plain broadcast feed, and then it refuses every process alike.
//!
//! Either way the feed
//! - wakes the local waiters watching that key (a `watch` counter per key,
//!   registered locally: no SUBSCRIBE per key, so watching costs no round trip
//!   and nothing is serialised behind one connection);
//! - hands changes to the listeners (the caches, which evict their copy);
//! - hands broadcasts (`b <topic> <payload>`, from
//!   [`RedisRemote::broadcast`](crate::RedisRemote::broadcast)) to their listeners.
//!
//! Its connections are pinged every `PING_EVERY`; a ping unanswered within the
//! operation timeout (a half-open connection), or the connection ending,
//! counts as lost: every waiter is woken (to re-check rather than trust a dead
//! feed), listeners are told the feed is down (changes may go unheard), and
//! the feed reconnects with backoff, then tells them once it is back. Each
//! answer vouches that every notice Redis sent before the ping was handled.
//!
//! Bytes on the feed are untrusted: a message that does not parse is dropped
//! (and counted), never acted on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use herdguard::Notified;
use redis::aio::PubSub;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::conn::Endpoint;
use crate::keys::{fence_channel, fence_id, KeyNames, Part};
use crate::tracking::{Session, Tracker};

/// How often the feed's connections are pinged while they look healthy: with
/// the operation timeout, the bound on how long a frozen or half-open
/// connection goes unnoticed (one small command a connection, ten times a
/// second). Each answer also vouches that every notice sent before the ping
/// was handled.
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
    /// The key with this tag changed to a version the feed does not know.
    ChangedUnknown { tag: &'a str },
    /// A message another process broadcast to the fleet on `topic`.
    Broadcast { topic: &'a str, payload: &'a str },
    /// The connection is lost: changes go unheard until it is back.
    Down,
    /// The connection is back; changes made meanwhile went unheard.
    Up,
    /// Every notice Redis sent before `as_of` has been handled.
    Current { as_of: Instant },
}

impl Event<'_> {
    fn reborrow(&self) -> Event<'_> {
        match self {
            Event::Changed { tag, version } => Event::Changed {
                tag,
                version: *version,
            },
            Event::ChangedUnknown { tag } => Event::ChangedUnknown { tag },
            Event::Broadcast { topic, payload } => Event::Broadcast { topic, payload },
            Event::Down => Event::Down,
            Event::Up => Event::Up,
            Event::Current { as_of } => Event::Current { as_of: *as_of },
        }
    }
}

/// A listener of the feed.
pub(crate) type Sink = Box<dyn Fn(Event<'_>) + Send + Sync>;

/// One key's local watchers.
struct Watchers {
    refs: usize,
    bump: watch::Sender<u64>,
}

/// What the feed knows, shared by its task, its connections' push handlers
/// and the remote's calls.
pub(crate) struct State {
    watchers: Mutex<HashMap<String, Watchers>>,
    sinks: Mutex<Vec<Sink>>,
    live: AtomicBool,
    /// The last [`Event::Current`], for listeners that come later.
    current: Mutex<Option<Instant>>,
    /// The per-key feed's connections while they are up.
    session: Mutex<Option<Arc<Session>>>,
    /// Notices that did not parse.
    rejected: AtomicU64,
    /// Notices received: invalidation pushes and messages.
    notices: AtomicU64,
    /// This process's writes on the per-key feed's session, by id: see [`Window`].
    windows: Mutex<HashMap<u64, WindowState>>,
    /// How many of them are open (no lock taken while none is).
    open_windows: AtomicUsize,
    next_window: AtomicU64,
    /// The prefix of the key names the per-key feed is told of.
    prefix: String,
    pub(crate) op_timeout: Duration,
}

impl State {
    fn new(prefix: &str, op_timeout: Duration, since: Instant) -> Self {
        State {
            watchers: Mutex::new(HashMap::new()),
            sinks: Mutex::new(Vec::new()),
            live: AtomicBool::new(true),
            current: Mutex::new(Some(since)),
            session: Mutex::new(None),
            rejected: AtomicU64::new(0),
            notices: AtomicU64::new(0),
            windows: Mutex::new(HashMap::new()),
            open_windows: AtomicUsize::new(0),
            next_window: AtomicU64::new(0),
            prefix: prefix.to_string(),
            op_timeout,
        }
    }

    // A poisoned lock only means a panic elsewhere mid-update of a map whose
    // entries stay consistent, so keep using it.
    fn watchers(&self) -> MutexGuard<'_, HashMap<String, Watchers>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sinks(&self) -> MutexGuard<'_, Vec<Sink>> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<Session>>> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
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
            sink(event.reborrow());
        }
    }

    /// Every notice sent before `as_of` has been handled.
    pub(crate) fn vouch(&self, as_of: Instant) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(as_of);
        self.emit(Event::Current { as_of });
    }

    /// Acts on one message of a subscribed channel: a broadcast, or (on the
    /// broadcast feed) an announcement.
    pub(crate) fn message(&self, payload: &[u8]) {
        self.notices.fetch_add(1, Ordering::Relaxed);
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

    /// Acts on Redis's word that the key named `name` changed (the per-key
    /// feed): its copies go and its waiters wake.
    pub(crate) fn invalidated(&self, name: &[u8]) {
        self.notices.fetch_add(1, Ordering::Relaxed);
        let parsed = std::str::from_utf8(name)
            .ok()
            .and_then(|name| KeyNames::parse(&self.prefix, name));
        let Some((tag, part)) = parsed else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if part == Part::Value && !self.held_back(tag) {
            // Before the wake: a waiter that re-reads then has heard of it.
            self.emit(Event::ChangedUnknown { tag });
        }
        self.wake(tag);
    }

    /// Whether a push for the entry of `tag` falls in an open window of a
    /// write of this process (noted there, to be judged by its read-back).
    fn held_back(&self, tag: &str) -> bool {
        if self.open_windows.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut held = false;
        for window in self.windows().values_mut() {
            if window.open && window.tag == tag {
                window.heard = true;
                held = true;
            }
        }
        held
    }

    fn windows(&self) -> MutexGuard<'_, HashMap<u64, WindowState>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fence of a write's window came back (the reply to an `UNSUBSCRIBE`
    /// of its fence channel, handed over in order with the pushes).
    pub(crate) fn fenced(&self, channel: &[u8]) {
        let Some(id) = std::str::from_utf8(channel)
            .ok()
            .and_then(|c| fence_id(&self.prefix, c))
        else {
            return;
        };
        if let Some(window) = self.windows().get_mut(&id) {
            if std::mem::replace(&mut window.open, false) {
                self.open_windows.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Opens a window for a write of the key with `tag` about to be sent.
    pub(crate) fn window(&self, tag: &str) -> Window<'_> {
        let id = self.next_window.fetch_add(1, Ordering::Relaxed);
        self.windows().insert(
            id,
            WindowState {
                tag: tag.to_string(),
                open: true,
                heard: false,
            },
        );
        self.open_windows.fetch_add(1, Ordering::AcqRel);
        Window {
            state: self,
            id,
            tag: tag.to_string(),
            closed: false,
        }
    }

    /// Redis dropped every key at once (`FLUSHALL`, `FLUSHDB`): every copy is
    /// checked before it is served again, as after an interruption.
    pub(crate) fn flushed(&self) {
        self.notices.fetch_add(1, Ordering::Relaxed);
        self.emit(Event::Down);
        self.emit(Event::Up);
        self.wake_all();
    }

    /// A notice of this process's own write, which Redis does not send back
    /// to the connection that made it: the other caches on this remote (and
    /// waiters) hear of it as they would of another process's.
    pub(crate) fn own_change(&self, event: Event<'_>, tag: &str) {
        self.emit(event);
        self.wake(tag);
    }

    /// A notice that did not parse.
    pub(crate) fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The feed went down (or was never up): nothing it says can be trusted
    /// until it is back. Told once per interruption.
    pub(crate) fn lost(&self, why: &str) {
        if !self.live.swap(false, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(target: "herdguard::fleet", why, "change feed lost");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.wake_all();
        self.emit(Event::Down);
    }

    /// The feed is up again: tells the listeners once per interruption.
    fn restored(&self) {
        if !self.live.swap(true, Ordering::AcqRel) {
            // Back after a loss: changes made meanwhile went unheard.
            tracing::info!(target: "herdguard::fleet", "change feed restored");
            self.wake_all();
            self.emit(Event::Up);
        }
    }

    /// The per-key feed's session, while it is up.
    pub(crate) fn installed(&self) -> Option<Arc<Session>> {
        self.slot().clone()
    }

    /// Makes `session` the one calls use, and the feed up — unless it has
    /// failed already. Under the slot's lock, as a loss is: the feed is never
    /// left up without a session, nor down with one.
    pub(crate) fn install(&self, session: Arc<Session>) -> bool {
        let mut slot = self.slot();
        if session.dead() {
            return false;
        }
        *slot = Some(session);
        self.restored();
        true
    }

    /// The per-key feed's session of `generation` failed: calls stop using it
    /// and the feed is down.
    pub(crate) fn session_lost(&self, generation: u64, why: &str) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|s| s.generation() == generation) {
            *slot = None;
            self.lost(why);
        }
    }
}

struct WindowState {
    tag: String,
    open: bool,
    heard: bool,
}

/// A write of this process on the per-key feed's session, from before it is
/// sent to its fence (an `UNSUBSCRIBE` of [`Window::fence`] sent right after
/// it on the same connection). Without `NOLOOP` — which would also silence
/// the pushes Redis sends when this process's own command makes it evict
/// keys from its tracking table or its memory — Redis tells this process of
/// its own writes too: the pushes for the key that come inside the window
/// are held back rather than taken as a change made elsewhere, and the
/// write's tracked read-back of the entry (after the fence) says what they
/// meant. Every push after the fence is acted on as usual.
pub(crate) struct Window<'a> {
    state: &'a State,
    id: u64,
    tag: String,
    closed: bool,
}

impl Window<'_> {
    /// The channel whose `UNSUBSCRIBE` ends the window.
    pub(crate) fn fence(&self) -> String {
        fence_channel(&self.state.prefix, self.id)
    }

    /// Ends the window: whether a push for the entry was held back in it.
    pub(crate) fn close(mut self) -> bool {
        self.closed = true;
        self.forget()
    }

    fn forget(&self) -> bool {
        let Some(window) = self.state.windows().remove(&self.id) else {
            return false;
        };
        if window.open {
            self.state.open_windows.fetch_sub(1, Ordering::AcqRel);
        }
        window.heard
    }
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        // A write abandoned mid-way: what was held back may be a change.
        if !self.closed && self.forget() {
            self.state
                .own_change(Event::ChangedUnknown { tag: &self.tag }, &self.tag);
        }
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

/// Where the feed listens, and how long it waits.
pub(crate) struct Setup {
    pub(crate) endpoint: Endpoint,
    pub(crate) prefix: String,
    /// The broadcast feed's channel.
    pub(crate) changes: String,
    /// The per-key feed's channel of broadcasts.
    pub(crate) broadcasts: String,
    pub(crate) op_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// [`RedisConfig::broadcast_feed`](crate::RedisConfig::broadcast_feed):
    /// the change channel is listened to (alone, except on a cluster).
    pub(crate) broadcast_only: bool,
    /// The scripts run on the per-key feed's connections, loaded on each.
    pub(crate) scripts: Vec<redis::Script>,
}

/// The feed of one remote; stops its task when dropped.
pub(crate) struct Feed {
    state: Arc<State>,
    per_key: bool,
    task: AbortHandle,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
        // Not `slot()`: the last handle on the remote may go in a listener the
        // feed is calling under the slot's lock (a loss or a return it
        // reports), on this thread. That session is being replaced then, and
        // goes with the state.
        let mut slot = match self.state.session.try_lock() {
            Ok(slot) => slot,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if let Some(session) = slot.take() {
            session.close();
        }
    }
}

impl Feed {
    /// Connects the feed: per key unless configured otherwise off a cluster,
    /// or refused (then, once, a log line says why), else broadcast. `Err`
    /// when Redis does not answer.
    pub(crate) async fn start(setup: Setup) -> Result<Feed, String> {
        let since = Instant::now();
        let state = Arc::new(State::new(&setup.prefix, setup.op_timeout, since));
        let cluster = matches!(setup.endpoint, Endpoint::Cluster(_));
        if !setup.broadcast_only || cluster {
            let tracker = Tracker::new(&setup);
            match tracker.connect(&state).await {
                Ok((session, asked)) if state.install(Arc::clone(&session)) => {
                    state.vouch(asked);
                    let task = tokio::spawn(crate::tracking::run(
                        Arc::clone(&state),
                        tracker,
                        FIRST_BACKOFF,
                        MAX_BACKOFF,
                        PING_EVERY,
                    ))
                    .abort_handle();
                    return Ok(Feed {
                        state,
                        per_key: true,
                        task,
                    });
                }
                Err(crate::tracking::Refusal::Refused(why)) => {
                    tracing::warn!(
                        target: "herdguard::fleet",
                        reason = %why,
                        channel = %setup.changes,
                        "Redis refuses client tracking: every change is announced to every process on the change channel"
                    );
                }
                Ok(_) => return Err("the change feed's connection closed at once".into()),
                Err(crate::tracking::Refusal::Unreachable(why)) => return Err(why),
            }
        }
        let (pubsub, subscribed) = connect(&setup).await?;
        state.vouch(subscribed);
        let task = tokio::spawn(run(Arc::clone(&state), setup, pubsub)).abort_handle();
        Ok(Feed {
            state,
            per_key: false,
            task,
        })
    }

    /// Whether the feed is per key (client tracking), not broadcast.
    pub(crate) fn per_key(&self) -> bool {
        self.per_key
    }

    /// The per-key feed's connections while they are up: reads made there
    /// are tracked, writes made there are not told back.
    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        self.state.installed()
    }

    /// See [`State::own_change`].
    pub(crate) fn own_change(&self, event: Event<'_>, tag: &str) {
        self.state.own_change(event, tag);
    }

    /// See [`State::window`].
    pub(crate) fn window(&self, tag: &str) -> Window<'_> {
        self.state.window(tag)
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

    /// Whether the feed is connected and answering.
    pub(crate) fn live(&self) -> bool {
        self.state.live.load(Ordering::Acquire)
    }

    /// Notices that did not parse.
    pub(crate) fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::Relaxed)
    }

    /// Notices received.
    pub(crate) fn notices(&self) -> u64 {
        self.state.notices.load(Ordering::Relaxed)
    }

    /// Whether a local waiter watches the key with this tag now.
    pub(crate) fn watched(&self, tag: &str) -> bool {
        self.state.watchers().contains_key(tag)
    }

    /// Watches the key with this tag: resolves at its next change, or when
    /// the feed is lost or restored.
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

/// The broadcast feed: reads announcements until the connection is lost, then
/// reconnects, forever (until aborted).
async fn run(state: Arc<State>, setup: Setup, pubsub: PubSub) {
    let mut pubsub = Some(pubsub);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let connection = match pubsub.take() {
            Some(p) => Some((p, None)),
            None => connect(&setup)
                .await
                .ok()
                .map(|(p, asked)| (p, Some(asked))),
        };
        let Some((connection, subscribed)) = connection else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        backoff = FIRST_BACKOFF;
        state.restored();
        if let Some(as_of) = subscribed {
            // Everything announced since the SUBSCRIBE reaches this connection.
            state.vouch(as_of);
        }
        let why = read(&state, connection).await;
        state.lost(why);
    }
}

/// A new pub/sub connection subscribed to the channel, and when the SUBSCRIBE
/// was sent; each step within the connect timeout. With Sentinel, to the
/// server the sentinels name as primary now.
async fn connect(setup: &Setup) -> Result<(PubSub, Instant), String> {
    let limit = setup.connect_timeout;
    let late = |what: &str| format!("{what} within {limit:?}");
    let client = tokio::time::timeout(limit, setup.endpoint.client())
        .await
        .map_err(|_| late("no primary"))?
        .map_err(|e| e.to_string())?;
    let mut pubsub = tokio::time::timeout(limit, client.get_async_pubsub())
        .await
        .map_err(|_| late("no pub/sub connection"))?
        .map_err(|e| e.to_string())?;
    let asked = Instant::now();
    tokio::time::timeout(limit, pubsub.subscribe(&setup.changes))
        .await
        .map_err(|_| late("SUBSCRIBE not acknowledged"))?
        .map_err(|e| e.to_string())?;
    Ok((pubsub, asked))
}

/// Reads until the stream ends or a ping goes unanswered; says which.
async fn read(state: &State, pubsub: PubSub) -> &'static str {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(m) => state.message(m.get_payload_bytes()),
                None => return "connection closed",
            },
            _ = ping.tick() => {
                let sent = Instant::now();
                let answered = tokio::time::timeout(state.op_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return "ping unanswered";
                }
                // Redis answers in order: every announcement it sent before
                // the PONG is queued by now. Handle them, then vouch.
                loop {
                    match stream.next().now_or_never() {
                        Some(Some(m)) => state.message(m.get_payload_bytes()),
                        Some(None) => return "connection closed",
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
