//! The live view on the admin listener: `/` is a dashboard page, `/events` a
//! server-sent-event stream that sends it one update a second.
//!
//! One `Sampler` task per process reads the counters once a second —
//! whatever number of pages are open — and turns them into this instance's
//! `record`: rates over the last second, totals, wait-time percentiles,
//! loads in flight, the lease, breaker and shared-store state. With a shared
//! store, the sampler also publishes the record to Redis and reads every other
//! instance's ([`herdguard_redis::RedisRemote::exchange_instance_record`]), so any instance's
//! dashboard shows the whole fleet. Each open page holds one receiver of the
//! latest update; the hit path is never touched.
//!
//! # Layout
//!
//! - `record`: one instance's figures, as the page and the fleet read them.
//! - `events`: the event-stream body of one open page.
//! - `page.html`: the page (charts from `herdguard-web`).

mod events;
mod record;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::handle::proxy::{FleetRemote, Proxy};

pub(crate) use events::EventStream;
pub use record::{Record, RESULT_FIELDS};

/// The dashboard page.
pub(crate) const PAGE: &str = include_str!("page.html");

/// How often the figures are sampled and sent.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Records older than this are left out of the fleet view (an instance that
/// stopped, or lost Redis).
const FLEET_MAX_AGE: Duration = Duration::from_secs(5);

/// The shared store the fleet view travels through.
pub(crate) type Fleet = FleetRemote;

/// Samples the counters once a second and hands the update to every open page.
pub(crate) struct Sampler {
    updates: watch::Receiver<Bytes>,
}

impl Sampler {
    /// Starts the sampling task for `proxy` (named `instance` in the fleet
    /// view); it ends when `stop` turns true.
    pub(crate) fn start(
        proxy: Arc<Proxy>,
        instance: String,
        fleet: Option<Fleet>,
        shared_store: bool,
        mut stop: watch::Receiver<bool>,
    ) -> Sampler {
        let mut sampling = record::Sampling::new(instance, shared_store);
        let first = sampling.update(&proxy, Instant::now());
        let (tx, rx) = watch::channel(update_json(&sampling.instance, &[first]));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let own = sampling.update(&proxy, Instant::now());
                let records = match &fleet {
                    Some(fleet) => fleet_records(fleet, &sampling.instance, own).await,
                    None => vec![own],
                };
                let _ = tx.send(update_json(&sampling.instance, &records));
            }
        });
        Sampler { updates: rx }
    }

    /// A new subscriber to the updates (the latest one first).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Bytes> {
        self.updates.clone()
    }
}

/// This instance's record published, and every fresh record of the fleet
/// (this one included); just this one when Redis does not answer.
async fn fleet_records(fleet: &Fleet, instance: &str, own: Record) -> Vec<Record> {
    let Ok(text) = serde_json::to_string(&own) else {
        return vec![own];
    };
    match fleet
        .exchange_instance_record(instance, &text, FLEET_MAX_AGE)
        .await
    {
        Ok(records) => {
            // Another instance's bytes are input like any other: what does not
            // parse is left out, and this instance's own figures are the ones
            // it just took.
            let mut all: Vec<Record> = records
                .iter()
                .filter_map(|r| serde_json::from_str::<Record>(r).ok())
                .filter(|r| r.id != instance)
                .collect();
            all.push(own);
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all
        }
        Err(_) => vec![own],
    }
}

/// One update: which record is this instance's, and the records.
fn update_json(instance: &str, records: &[Record]) -> Bytes {
    #[derive(serde::Serialize)]
    struct Update<'a> {
        me: &'a str,
        instances: &'a [Record],
    }
    serde_json::to_vec(&Update {
        me: instance,
        instances: records,
    })
    .map(Bytes::from)
    .unwrap_or_default()
}

/// The name of this instance in the fleet view: host, listening port, process.
pub(crate) fn instance_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{port}/{}", std::process::id())
}
