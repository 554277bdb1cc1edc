//! The benchmark's stampede client (`scripts/bench-tower.sh`): `tower-stampede URL N`
//! sends N requests at once, each on its own connection, and prints
//! `p50_ms p99_ms failures` of their latencies (whole answer read).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, n] = args.as_slice() else {
        return Err("usage: tower-stampede URL N".into());
    };
    let n: usize = n.parse().map_err(|_| format!("N={n:?} is not a count"))?;
    let uri: hyper::Uri = url.parse()?;
    // A pool per request: N connections, as N clients would open.
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let uri = uri.clone();
            tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                let sent = Instant::now();
                let ok = match client.get(uri).await {
                    Ok(r) if r.status().is_success() => r.into_body().collect().await.is_ok(),
                    _ => false,
                };
                (sent.elapsed(), ok)
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(n);
    let mut failures = 0;
    for task in tasks {
        let (took, ok) = task.await?;
        latencies.push(took);
        failures += usize::from(!ok);
    }
    latencies.sort();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "{:.1} {:.1} {failures}",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
