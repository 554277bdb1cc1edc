//! One write-behind process (a test and benchmark helper): a `Cache` over
//! `RedisRemote` with write-behind through `RedisWriteQueue` into a "system of
//! record" kept in the same Redis:
//!
//! - `db:val` / `db:ver` (hashes): each key's value and version, updated only by
//!   a newer version (an idempotent writer, as the docs ask);
//! - `db:log:KEY` (lists): every version applied to the key, in order;
//! - `db:batches` (counter): batches written.
//!
//! Prints `ready`, then for each line on stdin: `w KEY VALUE` → write-behind,
//! prints `ack KEY VALUE` once queued (or `err KEY why`); `flush` → waits
//! until the queue is empty, prints `flushed` (or `not flushed`); `burst N` →
//! N write-behinds at once (`b0`…, values `v0`…), each printing its `ack` or
//! `err` as it ends. Stops at the
//! end of stdin, without flushing (as a crash would, but for the process).

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herdguard::{BoxError, BoxFuture, Cache, Write, WriteBehind, Writer};
use herdguard_redis::{QueueConfig, RedisConfig, RedisRemote, RedisWriteQueue};
use redis::aio::ConnectionManager;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(about = "herdguard-redis write-behind process (test helper)")]
struct Args {
    /// Redis URL.
    #[arg(long)]
    url: String,
    /// How long each batch takes the system of record.
    #[arg(long, default_value_t = 5)]
    writer_delay_ms: u64,
    /// Most writes per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// How long a dead owner holds a partition up, and a taken write waits
    /// before another process claims it.
    #[arg(long, default_value_t = 500)]
    handover_ms: u64,
}

/// The system of record, in Redis (module docs).
struct Db {
    conn: ConnectionManager,
    delay: Duration,
    apply: redis::Script,
}

/// Applies a write only if newer than what the record has, and logs it.
/// KEYS: db:val, db:ver, db:log:KEY. ARGV: key, value, version.
const APPLY: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if tonumber(ARGV[3]) > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('RPUSH', KEYS[3], ARGV[3])
end
return 1
";

impl Writer<String, String> for Db {
    fn write<'a>(
        &'a self,
        batch: &'a [Write<String, String>],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            let mut conn = self.conn.clone();
            for w in batch {
                let _: i64 = self
                    .apply
                    .key("db:val")
                    .key("db:ver")
                    .key(format!("db:log:{}", w.key()))
                    .arg(w.key())
                    .arg(w.value())
                    .arg(w.version())
                    .invoke_async(&mut conn)
                    .await?;
            }
            let _: i64 = redis::cmd("INCR")
                .arg("db:batches")
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }
}

fn main() -> std::process::ExitCode {
    common::run_main(Args::parse(), run)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let redis_config = RedisConfig::new(args.url.clone());
    let remote = RedisRemote::<String, String>::connect(redis_config.clone())
        .await
        .context("connecting the shared store")?;
    let handover = Duration::from_millis(args.handover_ms);
    let queue = RedisWriteQueue::<String, String>::connect(
        redis_config,
        QueueConfig::new().owner_ttl(handover).claim_idle(handover),
    )
    .await
    .context("connecting the write queue")?;
    let conn = redis::Client::open(args.url.as_str())
        .context("the record's client")?
        .get_connection_manager()
        .await
        .context("the record's connection")?;
    let db = Db {
        conn,
        delay: Duration::from_millis(args.writer_delay_ms),
        apply: redis::Script::new(APPLY),
    };
    let cache: Cache<String, String> = Cache::builder()
        .shared_store(remote)
        .write_behind(
            WriteBehind::new(db)
                .queue(queue)
                .max_batch(args.batch)
                .retry_backoff(Duration::from_millis(20), Duration::from_millis(500)),
        )
        .build()
        .context("building the cache")?;
    println!("ready");
    let cache = Arc::new(cache);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line == "flush" {
            let done = cache.flush_writes(Duration::from_secs(30)).await;
            println!("{}", if done { "flushed" } else { "not flushed" });
            continue;
        }
        if let Some(n) = line.strip_prefix("burst ") {
            let n: usize = n.parse().context("burst N")?;
            for i in 0..n {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move {
                    let (key, value) = (format!("b{i}"), format!("v{i}"));
                    match cache.write_behind(key.clone(), value.clone()).await {
                        Ok(()) => println!("ack {key} {value}"),
                        Err(e) => println!("err {key} {e}"),
                    }
                });
            }
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some("w"), Some(key), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("expected `w KEY VALUE`, `burst N` or `flush`, got {line:?}");
        };
        match cache.write_behind(key.to_string(), value.to_string()).await {
            Ok(()) => println!("ack {key} {value}"),
            Err(e) => println!("err {key} {e}"),
        }
    }
    Ok(())
}
