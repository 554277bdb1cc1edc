//! 200 concurrent requests for 4 cities through herdguard: 4 calls to the slow
//! weather API, and every answer says how it was served.
//!
//! Run: `cargo run -p herdguard --example weather`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::Cache;

/// The slow origin: 200 ms per call.
async fn weather_api(city: String, calls: Arc<AtomicUsize>) -> Result<String, std::io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(format!("{city}: 12 °C, light rain"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache: Cache<String, String> = Cache::builder()
        .ttl(Duration::from_secs(60))
        .early_refresh(1.0)
        .stale_while_revalidate(Duration::from_secs(30))
        .build()?;
    let calls = Arc::new(AtomicUsize::new(0));
    let cities = ["oslo", "lima", "pune", "kyiv"];
    let started = Instant::now();
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let (cache, calls) = (cache.clone(), calls.clone());
            let city = cities[i % cities.len()].to_string();
            tokio::spawn(async move {
                let key = city.clone();
                cache
                    .get_or_load(key, move || weather_api(city, calls))
                    .await
            })
        })
        .collect();
    let mut served = BTreeMap::new();
    for request in requests {
        let answer = request.await??;
        *served.entry(answer.served().as_str()).or_insert(0) += 1;
    }
    println!(
        "200 requests in {:?}: {} origin calls; served {:?}",
        started.elapsed(),
        calls.load(Ordering::SeqCst),
        served
    );
    Ok(())
}
