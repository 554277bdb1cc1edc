//! A cold stampede client for `scripts/bench-serve.sh`: `--n` concurrent GETs of
//! one URL, each on its own connection; prints `p50_ms p99_ms max_ms ok`.
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
    /// The URL every request asks for.
    #[arg(long)]
    url: String,
    /// How many concurrent requests.
    #[arg(long, default_value_t = 100)]
    n: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let uri: http::Uri = args.url.parse()?;
    // Connections are opened first, so the timed requests measure the cache, not TCP setup.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.n)
        .build_http();
    let warm: Vec<_> = (0..args.n)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
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
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let r = client.get(uri).await?;
                let ok = r.status().is_success();
                r.into_body().collect().await?;
                Ok::<_, anyhow::Error>((start.elapsed(), ok))
            })
        })
        .collect();
    let mut times = Vec::with_capacity(args.n);
    let mut ok = 0;
    for c in calls {
        let (t, good) = c.await??;
        times.push(t);
        ok += usize::from(good);
    }
    times.sort();
    let q = |p: f64| {
        times
            .get(((times.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:.1} {:.1} {:.1} {}",
        ms(q(0.5)),
        ms(q(0.99)),
        ms(q(1.0)),
        ok
    );
    Ok(())
}
