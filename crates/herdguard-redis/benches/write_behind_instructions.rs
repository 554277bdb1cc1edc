//! A fixed number of operations for `valgrind --tool=callgrind`, whose
//! instruction counts no machine load moves: `N` write-behind acknowledgements
//! (`ack`: `Cache::write_behind` over `RedisRemote` with a `RedisWriteQueue` on
//! the same server, drained to completion by a writer that does nothing) or `N`
//! bare `XADD`s of the same payload on one multiplexed connection (`xadd`),
//! from 64 tasks, after a warm-up of 100 acknowledgements. Run twice with two
//! counts, the difference divided by the difference of the counts is the cost
//! of one operation, setup excluded: `scripts/bench-write-behind-instructions.sh`.
//! Arguments: `N` and `ack` or `xadd`; the server is
//! `HERDGUARD_BENCH_REDIS_URL` (or a private one).

mod common;

use std::time::Duration;

use herdguard::{BoxError, BoxFuture, Cache, Write, WriteBehind, Writer};
use herdguard_redis::{QueueConfig, RedisConfig, RedisRemote, RedisWriteQueue};

const TASKS: usize = 64;
const KEYS: usize = 10_000;

/// A system of record that takes every batch at once.
struct Nowhere;

impl Writer<String, String> for Nowhere {
    fn write<'a>(&'a self, _: &'a [Write<String, String>]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let count: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: write_behind_instructions N ack|xadd");
    let acks = match args.next().as_deref() {
        Some("ack") | None => true,
        Some("xadd") => false,
        Some(other) => panic!("{other:?}: ack or xadd"),
    };
    let target = common::target();
    let runtime = common::runtime();
    runtime.block_on(async move {
        let config = RedisConfig::new(target.url.clone()).prefix("wbcount");
        let queue = RedisWriteQueue::<String, String>::connect(config.clone(), QueueConfig::new())
            .await
            .expect("queue");
        let behind = WriteBehind::new(Nowhere)
            .queue(queue)
            .max_batch(256)
            .max_queue(10_000_000);
        let remote = RedisRemote::<String, String>::connect(config)
            .await
            .expect("remote");
        let cache = Cache::builder()
            .ttl(Duration::from_secs(600))
            .max_entries(KEYS as u64)
            .shared_store(remote)
            .write_behind(behind)
            .build()
            .expect("cache");
        let conn = redis::Client::open(target.url.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let value = "x".repeat(64);
        for i in 0..100 {
            cache
                .write_behind(format!("key-{i}"), value.clone())
                .await
                .expect("warm-up write");
        }
        cache.flush_writes(Duration::from_secs(60)).await;
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (cache, value, mut conn) = (cache.clone(), value.clone(), conn.clone());
                tokio::spawn(async move {
                    for j in 0..count / TASKS {
                        let key = format!("key-{}", (t * 7919 + j) % KEYS);
                        if acks {
                            cache
                                .write_behind(key, value.clone())
                                .await
                                .expect("write_behind");
                        } else {
                            let _: String = redis::cmd("XADD")
                                .arg("wbcount:plain")
                                .arg("MAXLEN")
                                .arg("~")
                                .arg(100_000)
                                .arg("*")
                                .arg("k")
                                .arg(key)
                                .arg("v")
                                .arg(&value)
                                .query_async(&mut conn)
                                .await
                                .expect("XADD");
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        assert!(cache.flush_writes(Duration::from_secs(60)).await, "drained");
    });
}
