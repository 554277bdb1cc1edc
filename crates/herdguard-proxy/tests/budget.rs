//! `max_memory`: the sidecar's memory stays within its budget whatever streams
//! through it. Distinct keys with bodies from 1 KB to 1 MB, four times the
//! budget in all, through a real origin; the process's resident set and the
//! bytes the cache says it holds are sampled throughout. Its own test binary
//! (one test), so the resident set measured is
//! this traffic's and nothing else's.

mod support;

use herdguard_testkit::rss;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{get, metrics, origin, proxy, Reply};

fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// What the process may hold beyond the budget whatever the budget: the
/// runtime, connection buffers of the concurrent requests, the test's own
/// origin and client buffers, the allocator's free lists. Measured: 2–23 MB
/// over the budget here (1 MB objects make the allocator keep the most).
const ALLOWANCE: u64 = 32 << 20;

/// The same for small objects only, whose buffers are small: measured 1–2 MB.
const SMALL_ALLOWANCE: u64 = 4 << 20;

/// Streams `requests` distinct keys with bodies of `size(i)` bytes through a
/// sidecar with `max_memory`, `concurrency` at a time; returns (peak resident
/// growth, peak bytes held by the cache's count, entries at the end).
async fn stream(
    max_memory: &str,
    requests: u64,
    concurrency: u64,
    size: fn(u64) -> usize,
) -> (u64, u64, u64) {
    let o = origin(move |seen, _| {
        let n: u64 = seen.target.trim_start_matches("/obj/").parse().unwrap_or(0);
        Reply::ok(&[("cache-control", "max-age=600")], vec![b'x'; size(n)])
    })
    .await;
    o.stop_recording();
    let p = proxy(
        &format!("http://{}", o.addr),
        &[&format!("max_memory = {max_memory:?}")],
    )
    .await;
    // Warm the connections, the runtime and the allocator first.
    for i in 0..concurrency {
        get(p.addr, &format!("/warm/{i}"), &[]).await;
    }
    let baseline = rss();
    let peak_rss = Arc::new(AtomicU64::new(baseline));
    let peak_bytes = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak_rss, peak_bytes, admin) =
            (Arc::clone(&peak_rss), Arc::clone(&peak_bytes), p.admin);
        tokio::spawn(async move {
            loop {
                peak_rss.fetch_max(rss(), Ordering::Relaxed);
                if let Some(b) = gauge(&metrics(admin).await, "herdguard_cache_bytes") {
                    peak_bytes.fetch_max(b, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, addr) = (Arc::clone(&next), p.addr);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return;
                    }
                    let a = get(addr, &format!("/obj/{i}"), &[]).await;
                    assert_eq!(a.status, 200, "request {i}");
                }
            })
        })
        .collect();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the stream ends within 120 s")
            .expect("no request failed");
    }
    let text = metrics(p.admin).await;
    peak_rss.fetch_max(rss(), Ordering::Relaxed);
    sampler.abort();
    if let Some(b) = gauge(&text, "herdguard_cache_bytes") {
        peak_bytes.fetch_max(b, Ordering::Relaxed);
    }
    let entries = gauge(&text, "herdguard_cache_entries").unwrap_or(0);
    let grew = peak_rss.load(Ordering::Relaxed).saturating_sub(baseline);
    (grew, peak_bytes.load(Ordering::Relaxed), entries)
}

/// Deterministic sizes from 1 KB to 1 MB, most of the bytes in the large ones.
fn mixed(i: u64) -> usize {
    const SIZES: [usize; 6] = [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
    SIZES[(i.wrapping_mul(2_654_435_761) % 6) as usize]
}

/// One test, small objects first: the resident set is the process's, and
/// memory the allocator keeps from large bodies would hide the growth of small
/// ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_holds_for_small_objects_and_for_mixed_ones() {
    many_small_objects_are_weighed_with_their_bookkeeping().await;
    mixed_sizes_four_times_the_budget_stay_within_it().await;
}

async fn mixed_sizes_four_times_the_budget_stay_within_it() {
    const BUDGET: u64 = 64 << 20;
    // About 227 KB a request on average: 1,200 requests are about 4x the budget.
    let (grew, bytes, entries) = stream("64MiB", 1_200, 8, mixed).await;
    println!(
        "64 MiB budget, mixed 1 KB-1 MB: resident grew {:.1} MB, cache held at most {:.1} MB in {entries} entries",
        grew as f64 / 1e6,
        bytes as f64 / 1e6
    );
    assert!(bytes > BUDGET / 2, "the cache filled up: {bytes}");
    assert!(bytes <= BUDGET, "bytes held {bytes} > budget {BUDGET}");
    assert!(
        grew <= BUDGET + BUDGET / 4 + ALLOWANCE,
        "resident grew {grew} bytes: over 1.25 x {BUDGET} + {ALLOWANCE}"
    );
}

async fn many_small_objects_are_weighed_with_their_bookkeeping() {
    // Small bodies are where per-entry bookkeeping dominates: were only the
    // bodies and fields weighed, the cache would hold several times more
    // entries than the budget allows for.
    const BUDGET: u64 = 8 << 20;
    let (grew, bytes, entries) = stream("8MiB", 24_000, 16, |_| 200).await;
    println!(
        "8 MiB budget, 200-byte bodies: resident grew {:.1} MB, cache held at most {:.1} MB in {entries} entries",
        grew as f64 / 1e6,
        bytes as f64 / 1e6
    );
    assert!(bytes <= BUDGET, "bytes held {bytes} > budget {BUDGET}");
    assert!(entries > 1_000, "the cache holds entries: {entries}");
    // With these small objects the resident set follows the entries closely
    // (measured: 11.4 MB for 8.4 MB held), so the bound is tight: weighing only
    // bodies and fields held twice the entries and grew 17.3 MB.
    assert!(
        grew <= BUDGET + BUDGET / 4 + SMALL_ALLOWANCE,
        "resident grew {grew} bytes: over 1.25 x {BUDGET} + {SMALL_ALLOWANCE}"
    );
}
