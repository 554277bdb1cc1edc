//! Running one scenario: every strategy side by side, each with its own origin and
//! cache, fed the same requests at the same moments.
//!
//! Strategies run at the same time (not one after the other) so a default run
//! stays short; they share nothing but the Tokio runtime, and the load is far
//! below what it can carry, so they don't disturb each other's latencies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;

use crate::args::{Scenario, ScenarioPlan};
use crate::error::{runtime, DemoError};
use crate::origin::{city, WeatherOrigin};
use crate::relay::Relay;
use crate::stats::{OriginCall, Outcome, RawRun, Sample};
use crate::strategy::{Client, ClientConfig, Strategy};
use crate::tally::Tally;

/// Runs every strategy of `plan` at once and returns what each did.
pub async fn run_scenario(
    plan: &ScenarioPlan,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Vec<RawRun>, DemoError> {
    run_scenario_counted(plan, seed, progress, None).await
}

/// [`run_scenario`], also counting each answer in `tally` as it comes (the
/// web demonstrator's live table).
pub async fn run_scenario_counted(
    plan: &ScenarioPlan,
    seed: u64,
    progress: &ProgressBar,
    tally: Option<Arc<Tally>>,
) -> Result<Vec<RawRun>, DemoError> {
    let mut tasks = Vec::new();
    for (i, &strategy) in plan.strategies.iter().enumerate() {
        let (plan, progress, tally) = (plan.clone(), progress.clone(), tally.clone());
        // Each strategy draws its own, reproducible, origin behaviour.
        let seed = seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.push(tokio::spawn(async move {
            run_strategy(&plan, strategy, seed, &progress, tally).await
        }));
    }
    let mut runs = Vec::new();
    for task in tasks {
        runs.push(
            task.await
                .map_err(|e| runtime(format!("a strategy's run failed: {e}")))??,
        );
    }
    Ok(runs)
}

async fn run_strategy(
    plan: &ScenarioPlan,
    strategy: Strategy,
    seed: u64,
    progress: &ProgressBar,
    tally: Option<Arc<Tally>>,
) -> Result<RawRun, DemoError> {
    let origin = Arc::new(WeatherOrigin::new(plan.origin.clone(), seed));
    // store-outage: this strategy reaches Redis through its own relay, which
    // plays the outage below.
    let mut relay = match (&plan.redis, plan.outage_window) {
        (Some(url), Some(_)) => Some(Relay::start(url).await?),
        _ => None,
    };
    let config = ClientConfig {
        ttl: plan.ttl,
        origin_latency: plan.origin.latency,
        seed,
        redis: match &relay {
            Some(relay) => Some(relay.url().to_string()),
            None => plan.redis.clone(),
        },
        redis_ca: plan.redis_ca.clone(),
        redis_cluster: plan.redis_cluster.clone(),
        store_outage: relay.is_some(),
    };
    let client = Arc::new(Client::new(strategy, &config).await?);
    let key = |i: u32| {
        format!(
            "{}:{}:{}:{}:{}",
            crate::KEY_PREFIX,
            plan.run_id,
            plan.scenario.name(),
            strategy.name(),
            city(i)
        )
    };

    // The processes of a fleet run meet at one wall-clock moment.
    let meet = plan.start_at_unix_ms.map(instant_of_unix_ms);
    if let Some(meet) = meet {
        tokio::time::sleep_until(meet.into()).await;
    }
    if plan.scenario != Scenario::Cold {
        // Warm every key once, unmeasured, so the run shows expiry under load and
        // not a cold start.
        let warm: Vec<_> = (0..plan.keys)
            .map(|i| {
                let (client, origin, key) = (Arc::clone(&client), Arc::clone(&origin), key(i));
                tokio::spawn(async move { client.request(&key, &city(i), &origin).await })
            })
            .collect();
        for w in warm {
            w.await
                .map_err(|e| runtime(format!("warm-up failed: {e}")))?;
        }
        origin.reset_counts();
    }
    // Counted from here: the warm-up is not part of the figures.
    if let Some(tally) = &tally {
        tally.origin(strategy, &origin);
    }

    // A moment ahead, so every request task is spawned before the first is due;
    // in a fleet run the same moment in every process, after the warm-up.
    let start = match meet {
        Some(meet) if plan.scenario == Scenario::Cold => meet,
        Some(meet) => {
            (meet + plan.origin.latency * 2 + Duration::from_millis(300)).max(Instant::now())
        }
        None => Instant::now() + Duration::from_millis(30),
    };
    if let Some((from, until)) = plan.failure_window {
        origin.fail_between(
            start + plan.duration.mul_f64(from),
            start + plan.duration.mul_f64(until),
        );
    }
    if let (Some(relay), Some((from, until))) = (relay.as_mut(), plan.outage_window) {
        relay.outage_between(
            start + plan.duration.mul_f64(from),
            start + plan.duration.mul_f64(until),
        );
    }
    let due: Vec<(u32, Instant)> = match plan.scenario {
        Scenario::Cold => (0..plan.keys)
            .flat_map(|k| (0..plan.threads).map(move |_| (k, start)))
            .collect(),
        // `patterns` has its own runner; were it sent here it would run as a steady load.
        Scenario::Expiry | Scenario::OriginFailure | Scenario::StoreOutage | Scenario::Patterns => {
            let every = Duration::from_secs_f64(1.0 / f64::from(plan.rate));
            (0..plan.requests())
                .map(|i| {
                    (
                        (i % u64::from(plan.keys)) as u32,
                        start + every.mul_f64(i as f64),
                    )
                })
                .collect()
        }
    };
    let mut tasks = Vec::with_capacity(due.len());
    for (k, at) in due {
        let (client, origin, key, progress, tally) = (
            Arc::clone(&client),
            Arc::clone(&origin),
            key(k),
            progress.clone(),
            tally.clone(),
        );
        let deadline = plan.deadline;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let began = Instant::now();
            let outcome = tokio::time::timeout(deadline, client.request(&key, &city(k), &origin))
                .await
                .unwrap_or(Outcome::Timeout);
            let latency = began.elapsed();
            progress.inc(1);
            if let Some(tally) = &tally {
                tally.record(strategy, outcome, latency);
            }
            Sample {
                key: k,
                start_us: micros(began.saturating_duration_since(start)),
                latency_us: micros(latency),
                outcome,
            }
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(
            task.await
                .map_err(|e| runtime(format!("a request task failed: {e}")))?,
        );
    }
    drop(relay);
    let keys: HashMap<String, u32> = (0..plan.keys).map(|i| (city(i), i)).collect();
    let calls = origin
        .call_log()
        .into_iter()
        .filter_map(|c| {
            Some(OriginCall {
                key: *keys.get(&c.city)?,
                start_us: micros(c.started.saturating_duration_since(start)),
                end_us: c.ended.map(|e| micros(e.saturating_duration_since(start))),
            })
        })
        .collect();
    Ok(RawRun {
        strategy,
        origin_calls: origin.calls(),
        origin_failures: origin.failures(),
        samples,
        calls,
    })
}

/// The `Instant` of a Unix time in ms (now, if it has passed).
fn instant_of_unix_ms(ms: u64) -> Instant {
    let target = UNIX_EPOCH + Duration::from_millis(ms);
    let ahead = target
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + ahead.min(Duration::from_secs(60))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
