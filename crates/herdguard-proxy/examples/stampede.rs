//! A cold stampede client for `scripts/bench-serve.sh` and
//! `scripts/bench-stampede.sh`: `--n` concurrent GETs, each on its own
//! connection opened beforehand; prints `p50_ms p99_ms max_ms ok`. Given
//! `--url` more than once (one URL per instance of a fleet), the requests are
//! split over them in turn, and a line `URL p50_ms p99_ms max_ms ok` follows
//! for each. With `--new-connections` no connection is opened beforehand: each
//! request connects inside the timed window, as clients arriving cold do.
//!
//! `cargo run --release --example stampede -- --url http://127.0.0.1:8080/slow/1 --n 100`

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Parser)]
struct Args {
    /// The URL the requests ask for; repeat it to split them over several.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// How many concurrent requests.
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Connect inside the timed window instead of beforehand.
    #[arg(long)]
    new_connections: bool,
}

/// "p50 p99 max ok" of `times` (sorted here).
fn summary(times: &mut [Duration], ok: usize) -> String {
    times.sort();
    let q = |p: f64| {
        times
            .get(((times.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:.1} {:.1} {:.1} {}",
        ms(q(0.5)),
        ms(q(0.99)),
        ms(q(1.0)),
        ok
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let uris = args
        .url
        .iter()
        .map(|u| u.parse::<http::Uri>())
        .collect::<Result<Vec<_>, _>>()?;
    let uri_of = |i: usize| uris[i % uris.len()].clone();
    // Connections are opened first, so the timed requests measure the cache, not TCP setup.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.n)
        .build_http();
    let warm: Vec<_> = (0..if args.new_connections { 0 } else { args.n })
        .map(|i| {
            let (client, uri) = (client.clone(), uri_of(i));
            tokio::spawn(async move {
                let warm_uri: http::Uri = format!(
                    "{}://{}/warm",
                    uri.scheme_str().unwrap_or("http"),
                    uri.authority().map(|a| a.as_str()).unwrap_or("")
                )
                .parse()?;
                let r = client.get(warm_uri).await?;
                r.into_body().collect().await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for w in warm {
        w.await??;
    }
    let start = Instant::now();
    let calls: Vec<_> = (0..args.n)
        .map(|i| {
            let (client, uri) = (client.clone(), uri_of(i));
            tokio::spawn(async move {
                let r = client.get(uri).await?;
                let ok = r.status().is_success();
                r.into_body().collect().await?;
                Ok::<_, anyhow::Error>((start.elapsed(), ok))
            })
        })
        .collect();
    let mut all = Vec::with_capacity(args.n);
    let mut per_url = vec![(Vec::new(), 0); uris.len()];
    for (i, c) in calls.into_iter().enumerate() {
        let (t, good) = c.await??;
        all.push(t);
        let (times, ok) = &mut per_url[i % uris.len()];
        times.push(t);
        *ok += usize::from(good);
    }
    let ok = per_url.iter().map(|(_, ok)| ok).sum();
    println!("{}", summary(&mut all, ok));
    if uris.len() > 1 {
        for (url, (times, ok)) in args.url.iter().zip(&mut per_url) {
            println!("{url} {}", summary(times, *ok));
        }
    }
    Ok(())
}
