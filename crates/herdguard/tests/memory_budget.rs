//! `CacheBuilder::max_bytes`: the library's memory stays within its budget
//! whatever is loaded through it — distinct keys, values from 100 bytes to
//! 1 MB, four times the budget in all — and the bytes it reports holding never
//! pass the budget. Its own test binary (one test), so the resident set
//! measured is this traffic's.

use std::time::Duration;

use herdguard::Cache;
use herdguard_testkit::rss;

/// Loads `n` distinct keys of `size(i)` bytes through a cache of `budget`
/// bytes; returns (resident growth at the end, most bytes reported held,
/// entries at the end).
async fn fill(budget: u64, n: u64, size: fn(u64) -> usize) -> (u64, u64, usize) {
    let cache: Cache<String, Vec<u8>> = Cache::builder()
        .max_entries(u64::MAX / 2)
        .max_bytes(budget, |k: &String, v: &Vec<u8>| {
            (k.len() + v.capacity()) as u64
        })
        .ttl(Duration::from_secs(600))
        .build()
        .expect("valid settings");
    let baseline = rss();
    let mut most = 0;
    for i in 0..n {
        let len = size(i);
        let value = cache
            .get_or_load(format!("object-{i}"), move || async move {
                Ok::<_, std::io::Error>(vec![b'x'; len])
            })
            .await
            .expect("loads");
        assert_eq!(value.len(), len);
        if i % 64 == 0 {
            most = most.max(cache.metrics().bytes.expect("bounded by bytes"));
        }
    }
    let m = cache.metrics();
    most = most.max(m.bytes.expect("bounded by bytes"));
    (rss().saturating_sub(baseline), most, m.entries)
}

/// One test, small values first: the resident set is the process's, and memory
/// the allocator keeps from large values would hide the growth of small ones.
#[tokio::test]
async fn the_budget_holds_for_small_values_and_for_mixed_ones() {
    small_values_are_weighed_with_the_stores_bookkeeping().await;
    mixed_values_four_times_the_budget_stay_within_it().await;
}

async fn mixed_values_four_times_the_budget_stay_within_it() {
    const BUDGET: u64 = 32 << 20;
    const SIZES: [usize; 5] = [1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
    // About 271 KB a value on average: 500 values are about 4x the budget.
    let (grew, most, entries) = fill(BUDGET, 500, |i| {
        SIZES[(i.wrapping_mul(2_654_435_761) % 5) as usize]
    })
    .await;
    println!("32 MiB, mixed: grew {grew}, held at most {most} in {entries} entries");
    assert!(most <= BUDGET, "held {most} > budget {BUDGET}");
    assert!(most > BUDGET / 2, "the cache filled up: {most}");
    // Allowance measured: the allocator keeps freed 1 MB values for reuse.
    assert!(
        grew <= BUDGET + BUDGET / 4 + (16 << 20),
        "resident grew {grew}: over 1.25 x {BUDGET} + 16 MiB"
    );
}

async fn small_values_are_weighed_with_the_stores_bookkeeping() {
    const BUDGET: u64 = 8 << 20;
    let (grew, most, entries) = fill(BUDGET, 200_000, |_| 100).await;
    println!("8 MiB, 100-byte values: grew {grew}, held at most {most} in {entries} entries");
    assert!(most <= BUDGET, "held {most} > budget {BUDGET}");
    assert!(entries > 10_000, "the cache holds entries: {entries}");
    // Were only the key and value weighed, about 70,000 entries of about 400
    // bytes each would be kept: 3x the budget.
    assert!(
        grew <= BUDGET + BUDGET / 4 + (2 << 20),
        "resident grew {grew}: over 1.25 x {BUDGET} + 2 MiB"
    );
}
