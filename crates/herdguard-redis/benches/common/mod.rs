//! What the benchmarks share: the Redis server to run against, the runtime and percentiles.

#![allow(dead_code)]

use herdguard_testkit::RedisServer;

/// The server under test: `HERDGUARD_BENCH_REDIS_URL` (as `scripts/bench-redis.sh`
/// sets it, `redis://127.0.0.1:PORT/`), or a private one started here.
pub struct Target {
    /// Kept alive for the run when the benchmark started it.
    _own: Option<RedisServer>,
    pub url: String,
    pub port: u16,
}

pub fn target() -> Target {
    if let Ok(url) = std::env::var("HERDGUARD_BENCH_REDIS_URL") {
        let port = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in HERDGUARD_BENCH_REDIS_URL={url}"));
        return Target {
            _own: None,
            url,
            port,
        };
    }
    let server = RedisServer::start().expect("start redis-server");
    Target {
        url: server.url(),
        port: server.port(),
        _own: Some(server),
    }
}

/// The runtime every benchmark runs on: two worker threads, one per core of
/// the machine the figures are taken on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
