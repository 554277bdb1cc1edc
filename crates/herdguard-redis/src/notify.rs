//! The one pub/sub connection of a [`RedisRemote`](crate::RedisRemote): every
//! waiting key's channel multiplexed on it, each channel ref-counted.
//!
//! A background task owns the connection's message stream and bumps a
//! `watch` counter per channel; a waiter's [`Notified`] future resolves on the
//! next bump. When the connection drops, the task bumps *every* channel (so
//! waiters re-check at once instead of trusting a dead subscription), then
//! reconnects and resubscribes the channels still wanted.
//!
//! SUBSCRIBE and UNSUBSCRIBE go out under one async mutex (the sink's), and an
//! UNSUBSCRIBE is only sent if, under that mutex, nobody wants the channel any
//! more: so an UNSUBSCRIBE can never overtake a newer SUBSCRIBE of the same
//! channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use herdguard::{Notified, RemoteError};
use redis::aio::{PubSub, PubSubSink};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// One channel's waiters.
struct Channel {
    refs: usize,
    bump: watch::Sender<u64>,
}

struct Shared {
    channels: Mutex<HashMap<String, Channel>>,
    /// `None` while the connection is down.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    op_timeout: Duration,
}

impl Shared {
    // A poisoned lock only means a panic elsewhere mid-update of a counter map;
    // the map itself stays consistent, so keep using it.
    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self, name: &str) {
        if let Some(ch) = self.channels().get(name) {
            ch.bump.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        for ch in self.channels().values() {
            ch.bump.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// The subscriber of one remote; stops its task when dropped.
pub(crate) struct Hub {
    shared: Arc<Shared>,
    task: AbortHandle,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hub {
    /// Starts the subscriber task on an already connected `pubsub`.
    pub(crate) fn start(
        client: redis::Client,
        pubsub: PubSub,
        op_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            channels: Mutex::new(HashMap::new()),
            sink: tokio::sync::Mutex::new(None),
            op_timeout,
        });
        let task =
            tokio::spawn(run(Arc::clone(&shared), client, pubsub, connect_timeout)).abort_handle();
        Hub { shared, task }
    }

    /// Subscribes to `channel`; returns once Redis acknowledged the SUBSCRIBE.
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<Notified, RemoteError> {
        let mut rx = {
            let mut map = self.shared.channels();
            let ch = map.entry(channel.to_string()).or_insert_with(|| Channel {
                refs: 0,
                bump: watch::channel(0).0,
            });
            ch.refs += 1;
            ch.bump.subscribe()
        };
        // From here on, dropping the guard gives the reference back.
        let guard = Interest {
            shared: Arc::clone(&self.shared),
            channel: channel.to_string(),
        };
        let acked = tokio::time::timeout(self.shared.op_timeout, async {
            let mut sink = self.shared.sink.lock().await;
            match sink.as_mut() {
                Some(sink) => sink
                    .subscribe(channel)
                    .await
                    .map_err(|e| RemoteError::Unavailable(format!("SUBSCRIBE: {e}"))),
                None => Err(RemoteError::Unavailable(
                    "pub/sub connection is down".to_string(),
                )),
            }
        })
        .await;
        match acked {
            Ok(Ok(())) => Ok(Box::pin(async move {
                let _guard = guard;
                // Err means the channel entry went away: resolve too, the
                // waiter re-checks.
                let _ = rx.changed().await;
            })),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RemoteError::Unavailable(format!(
                "SUBSCRIBE not acknowledged within {:?}",
                self.shared.op_timeout
            ))),
        }
    }
}

/// One waiter's hold on a channel.
struct Interest {
    shared: Arc<Shared>,
    channel: String,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let last = {
            let mut map = self.shared.channels();
            match map.get_mut(&self.channel) {
                Some(ch) => {
                    ch.refs = ch.refs.saturating_sub(1);
                    if ch.refs == 0 {
                        map.remove(&self.channel);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if !last {
            return;
        }
        // Outside a runtime the subscription simply stays until the connection
        // goes: a stray subscription costs a message, nothing more.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let channel = std::mem::take(&mut self.channel);
        handle.spawn(async move {
            let mut sink = shared.sink.lock().await;
            // Someone subscribed again meanwhile: their SUBSCRIBE is queued
            // behind this lock, keep the channel.
            if shared.channels().contains_key(&channel) {
                return;
            }
            if let Some(sink) = sink.as_mut() {
                let _ = tokio::time::timeout(shared.op_timeout, sink.unsubscribe(&channel)).await;
            }
        });
    }
}

/// Reads messages until the connection drops, then reconnects, forever (until aborted).
async fn run(
    shared: Arc<Shared>,
    client: redis::Client,
    mut pubsub: PubSub,
    connect_timeout: Duration,
) {
    loop {
        let (mut sink, mut stream) = pubsub.split();
        {
            let mut slot = shared.sink.lock().await;
            let wanted: Vec<String> = shared.channels().keys().cloned().collect();
            if !wanted.is_empty() {
                let _ = tokio::time::timeout(shared.op_timeout, sink.subscribe(&wanted)).await;
            }
            *slot = Some(sink);
        }
        // Messages may have been lost while down: let every waiter re-check.
        shared.wake_all();
        while let Some(msg) = stream.next().await {
            shared.wake(msg.get_channel_name());
        }
        *shared.sink.lock().await = None;
        shared.wake_all();
        tracing::warn!("herdguard-redis: pub/sub connection lost, reconnecting");
        let mut backoff = Duration::from_millis(20);
        pubsub = loop {
            tokio::time::sleep(backoff).await;
            match tokio::time::timeout(connect_timeout, client.get_async_pubsub()).await {
                Ok(Ok(p)) => break p,
                _ => backoff = (backoff * 2).min(Duration::from_millis(500)),
            }
        };
    }
}
