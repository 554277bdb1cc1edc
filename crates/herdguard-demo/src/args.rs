//! The demo's flags, their validation, and the resolved [`Plan`] a run follows.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::error::{bad, DemoError};
use crate::origin::OriginConfig;
use crate::strategy::Strategy;

/// A stampede scenario.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// T concurrent requests per key × K keys on an empty cache.
    Cold,
    /// Steady load on keys with a short TTL, so they expire under load.
    Expiry,
    /// Steady load while the origin fails for a window.
    OriginFailure,
    /// Steady load while Redis goes away for a window and comes back (needs
    /// `--redis`; the outage is played by a TCP relay the demo controls).
    StoreOutage,
    /// Reads and writes against a simulated database: cache-aside, write-through
    /// and write-behind side by side (with `--redis`, a write-behind process is
    /// also killed mid-run to count lost writes).
    Patterns,
}

impl Scenario {
    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Cold => "cold",
            Scenario::Expiry => "expiry",
            Scenario::OriginFailure => "origin-failure",
            Scenario::StoreOutage => "store-outage",
            Scenario::Patterns => "patterns",
        }
    }

    /// The strategies compared in this scenario, in table order; `fleet` only
    /// with a Redis server; `herdguard`, the recommended configuration, in every
    /// read scenario.
    pub fn strategies(self, redis: bool) -> Vec<Strategy> {
        use Strategy::*;
        let all: &[Strategy] = match self {
            Scenario::Cold => &[None, Classic, SingleFlight, Fleet, Herdguard],
            Scenario::Expiry => &[None, Classic, SingleFlight, Fleet, Xfetch, Swr, Herdguard],
            Scenario::OriginFailure => &[None, SingleFlight, Sie, Breaker, Herdguard],
            // Every one of these goes through the relay to Redis.
            Scenario::StoreOutage => &[None, Classic, Fleet, Herdguard],
            Scenario::Patterns => &[CacheAside, WriteThrough, WriteBehind, WriteBehindNaive],
        };
        all.iter()
            .copied()
            .filter(|s| redis || !matches!(s, Fleet | WriteBehindNaive))
            .collect()
    }
}

/// Flags of `herdguard demo`.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Scenarios to run (repeatable or comma-separated; default: cold, expiry,
    /// origin-failure, and store-outage with --redis; `patterns` on request).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Strategies to compare (repeatable or comma-separated; default: all that apply).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub strategy: Vec<Strategy>,
    /// Concurrent requests per key in the cold scenario.
    #[arg(short = 't', long, default_value_t = 100)]
    pub threads: u32,
    /// Number of keys (cities).
    #[arg(short = 'k', long, default_value_t = 8)]
    pub keys: u32,
    /// Mean latency of one origin call (e.g. 200ms).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub origin_latency: Duration,
    /// Each origin call's latency is uniform in latency ± jitter.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub origin_jitter: Duration,
    /// Chance that any origin call fails, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// TTL of cached values in the expiry and origin-failure scenarios.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Requests per second (all keys together) in the steady-load scenarios.
    #[arg(long, default_value_t = 400)]
    pub rate: u32,
    /// Length of the steady-load scenarios.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The patterns scenario: how long a database read takes.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub db_read: Duration,
    /// The patterns scenario: how long a database write takes.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub db_write: Duration,
    /// A caller gives up after this long (counted as a timeout).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Seed for the origin's latency and failure draws and herdguard's randomness.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also print one row per request.
    #[arg(long)]
    pub verbose: bool,
    /// Wait for Enter between scenarios (when stdin is a terminal).
    #[arg(long)]
    pub interactive: bool,
    /// A Redis server (e.g. redis://127.0.0.1:6379/): `none` and `classic` keep
    /// values and locks there, and the `fleet` strategy joins in. Default: the
    /// embedded in-process store.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// With a rediss:// --redis: the PEM file of the CA its certificate must
    /// chain to, instead of the bundled web PKI roots (a private CA).
    #[arg(long, value_name = "FILE", requires = "redis")]
    pub redis_ca: Option<std::path::PathBuf>,
    /// A Redis Cluster instead of --redis, by some of its nodes' URLs
    /// (comma-separated, e.g. redis://10.0.0.1:7000/,redis://10.0.0.2:7000/):
    /// `fleet` and `herdguard` keep their shared tier and leases there
    /// (hash-tagged keys, one shard per key), `none` and `classic` their values
    /// and locks over a cluster connection. Not with --redis, --fleet or
    /// --flush; no store-outage scenario (its relay fronts one server, a
    /// cluster client follows the nodes the cluster names) and no patterns
    /// scenario (the durable write-behind queue needs one server).
    #[arg(long, value_name = "URL,URL,...", value_delimiter = ',')]
    pub redis_cluster: Vec<String>,
    /// With --redis or --redis-cluster: run the requests in this many processes
    /// (copies of this program) that start together and share keys, and add up
    /// their counts.
    #[arg(long, default_value_t = 1)]
    pub processes: u32,
    /// With --redis: delete the demo's keys (hgdemo:*) before running.
    #[arg(long)]
    pub flush: bool,
    /// Run the fleet scenarios in N processes (default 4) against a private
    /// redis-server the demo starts on a free loopback port and stops at the end
    /// (needs redis-server on PATH). Not with --redis or --processes.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "4")]
    pub fleet: Option<u32>,
    /// Also write a self-contained HTML report (charts and tables) to this file.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<std::path::PathBuf>,
    /// Print every column of the tables (about 230 columns wide) instead of the
    /// compact ones that fit in 100.
    #[arg(long)]
    pub wide: bool,
    /// Serve the web demonstrator instead of running once: pick a scenario and
    /// strategies, press Run, watch the figures fill in live; start a live load
    /// and break it ("Cache stampede", "Network partition"). Until Ctrl-C.
    #[arg(long)]
    pub web: bool,
    /// With --web: the address to serve on (loopback by default: the page can
    /// start load on this machine).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8077")]
    pub listen: std::net::SocketAddr,
    /// Internal: run one scenario as a worker process of a --processes run.
    #[arg(long, hide = true, value_name = "JSON")]
    pub worker_plan: Option<String>,
}

/// Everything one scenario run needs; serializable so worker processes get the
/// very same plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioPlan {
    /// Which scenario.
    pub scenario: Scenario,
    /// Strategies side by side.
    pub strategies: Vec<Strategy>,
    /// Number of keys.
    pub keys: u32,
    /// Concurrent requests per key (cold).
    pub threads: u32,
    /// Requests per second (steady load).
    pub rate: u32,
    /// Length of the steady load.
    pub duration: Duration,
    /// TTL of cached values.
    pub ttl: Duration,
    /// The caller's deadline.
    pub deadline: Duration,
    /// How the origin behaves.
    pub origin: OriginConfig,
    /// Part of the steady load during which the origin fails, as fractions of it.
    pub failure_window: Option<(f64, f64)>,
    /// Part of the steady load during which Redis is unreachable (store-outage),
    /// as fractions of it.
    #[serde(default)]
    pub outage_window: Option<(f64, f64)>,
    /// The Redis server, if any.
    pub redis: Option<String>,
    /// The private CA of a `rediss://` server (`--redis-ca`), if any.
    #[serde(default)]
    pub redis_ca: Option<std::path::PathBuf>,
    /// The Redis Cluster's seed URLs (`--redis-cluster`), if any.
    #[serde(default)]
    pub redis_cluster: Vec<String>,
    /// Shared by the processes of one run, part of every key name, so runs never
    /// see each other's values.
    pub run_id: String,
    /// When the processes of a fleet run start, in Unix ms (set per scenario).
    pub start_at_unix_ms: Option<u64>,
    /// The patterns scenario's database read latency.
    #[serde(default)]
    pub db_read: Duration,
    /// The patterns scenario's database write latency.
    #[serde(default)]
    pub db_write: Duration,
}

impl ScenarioPlan {
    /// Whether the strategies share a Redis (`--redis`, `--fleet`) or a Redis
    /// Cluster (`--redis-cluster`).
    pub fn shared_store(&self) -> bool {
        self.redis.is_some() || !self.redis_cluster.is_empty()
    }

    /// Requests each strategy makes in this scenario (in one process).
    pub fn requests(&self) -> u64 {
        match self.scenario {
            Scenario::Cold => u64::from(self.keys) * u64::from(self.threads),
            Scenario::Expiry
            | Scenario::OriginFailure
            | Scenario::StoreOutage
            | Scenario::Patterns => steady_requests(self.rate, self.duration),
        }
    }
}

pub(crate) fn steady_requests(rate: u32, duration: Duration) -> u64 {
    (f64::from(rate) * duration.as_secs_f64()).round() as u64
}

/// A validated run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Scenarios in order.
    pub scenarios: Vec<ScenarioPlan>,
    /// The seed in use (drawn at random when not given, and reported).
    pub seed: u64,
}

/// Stands for the `--fleet` run's private Redis until it is started.
const FLEET_URL_PLACEHOLDER: &str = "redis://127.0.0.1:6379/";

/// When Redis is unreachable in the store-outage scenario, as fractions of the load.
const OUTAGE_WINDOW: (f64, f64) = (0.30, 0.65);

/// TTL of the cold scenario: long enough that nothing expires during it.
const COLD_TTL: Duration = Duration::from_secs(60);

impl DemoArgs {
    /// With `--fleet N`: these flags as the fleet run uses them — N processes and
    /// a Redis URL standing for the private server (started later; the plan's
    /// URLs are set then). `--fleet` with `--redis` or `--processes` is bad input.
    pub fn fleet_args(&self) -> Result<Option<DemoArgs>, DemoError> {
        let Some(processes) = self.fleet else {
            return Ok(None);
        };
        if self.redis.is_some() || !self.redis_cluster.is_empty() {
            return Err(bad(
                "--fleet starts a private redis-server; --redis / --redis-cluster use yours: pass one or the other",
            ));
        }
        if self.processes != 1 {
            return Err(bad(
                "--fleet N sets the number of processes: drop --processes (or use --redis URL --processes N)",
            ));
        }
        range("--fleet", processes, 1, 64)?;
        let mut args = self.clone();
        args.fleet = None;
        args.processes = processes;
        args.redis = Some(FLEET_URL_PLACEHOLDER.to_string());
        Ok(Some(args))
    }

    /// Checks every flag and resolves the plan; out-of-range input is a
    /// [`DemoError::BadInput`] naming the flag.
    pub fn plan(&self) -> Result<Plan, DemoError> {
        range("--threads", self.threads, 1, 10_000)?;
        range("--keys", self.keys, 1, 10_000)?;
        range("--rate", self.rate, 1, 20_000)?;
        if u64::from(self.threads) * u64::from(self.keys) > 200_000 {
            return Err(bad("--threads × --keys must be at most 200000"));
        }
        if self.origin_latency > Duration::from_secs(60) {
            return Err(bad("--origin-latency must be at most 60s"));
        }
        if self.origin_jitter > self.origin_latency {
            return Err(bad("--origin-jitter must not exceed --origin-latency"));
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(bad("--failure-rate must be between 0 and 1"));
        }
        if self.ttl < Duration::from_millis(10) || self.ttl > Duration::from_secs(3600) {
            return Err(bad("--ttl must be between 10ms and 1h"));
        }
        if self.duration < Duration::from_millis(100) || self.duration > Duration::from_secs(600) {
            return Err(bad("--duration must be between 100ms and 10m"));
        }
        if steady_requests(self.rate, self.duration) > 1_000_000 {
            return Err(bad("--rate × --duration must be at most 1000000 requests"));
        }
        if self.deadline < Duration::from_millis(1) || self.deadline > Duration::from_secs(600) {
            return Err(bad("--deadline must be between 1ms and 10m"));
        }
        range("--processes", self.processes, 1, 64)?;
        for (flag, d) in [("--db-read", self.db_read), ("--db-write", self.db_write)] {
            if d > Duration::from_secs(10) {
                return Err(bad(format!("{flag} must be at most 10s")));
            }
        }
        self.check_cluster()?;
        let shared = self.redis.is_some() || !self.redis_cluster.is_empty();
        if !shared {
            if self.processes > 1 {
                return Err(bad(
                    "--processes needs --redis or --redis-cluster (processes share keys through Redis)",
                ));
            }
            if self.flush {
                return Err(bad("--flush needs --redis"));
            }
            if self.strategy.contains(&Strategy::Fleet) {
                return Err(bad("the fleet strategy needs --redis or --redis-cluster"));
            }
        }
        let scenarios: Vec<Scenario> = if self.scenario.is_empty() {
            let mut all = vec![Scenario::Cold, Scenario::Expiry, Scenario::OriginFailure];
            // The outage relay cuts plain TCP; over TLS there is no store-outage.
            if self
                .redis
                .as_deref()
                .is_some_and(|url| url.starts_with("redis://"))
            {
                all.push(Scenario::StoreOutage);
            }
            all
        } else if self.processes > 1 && self.scenario.contains(&Scenario::Patterns) {
            return Err(bad(
                "the patterns scenario runs in one process (with --redis it starts its own crash workers)",
            ));
        } else if !self.redis_cluster.is_empty() && self.scenario.contains(&Scenario::StoreOutage) {
            return Err(bad(
                "the store-outage scenario needs --redis: its relay fronts one server, and a cluster client reaches the nodes the cluster names",
            ));
        } else if !self.redis_cluster.is_empty() && self.scenario.contains(&Scenario::Patterns) {
            return Err(bad(
                "the patterns scenario needs --redis or no Redis: its durable write-behind queue takes one server",
            ));
        } else if self.redis.is_none() && self.scenario.contains(&Scenario::StoreOutage) {
            return Err(bad(
                "the store-outage scenario needs --redis (it relays the strategies' Redis connections and cuts them)",
            ));
        } else {
            dedup(&self.scenario)
        };
        let origin = OriginConfig {
            latency: self.origin_latency,
            jitter: self.origin_jitter,
            failure_rate: self.failure_rate,
        };
        let run_id = format!("{:08x}", fastrand::u32(..));
        let mut plans = Vec::new();
        for scenario in scenarios {
            let strategies: Vec<Strategy> = scenario
                .strategies(shared)
                .into_iter()
                .filter(|s| self.strategy.is_empty() || self.strategy.contains(s))
                .collect();
            if strategies.is_empty() {
                continue; // none of the requested strategies applies here
            }
            plans.push(ScenarioPlan {
                scenario,
                strategies,
                keys: self.keys,
                threads: self.threads,
                rate: self.rate,
                duration: self.duration,
                ttl: if scenario == Scenario::Cold {
                    COLD_TTL
                } else {
                    self.ttl
                },
                deadline: self.deadline,
                origin: origin.clone(),
                failure_window: (scenario == Scenario::OriginFailure).then_some((0.25, 0.65)),
                outage_window: (scenario == Scenario::StoreOutage).then_some(OUTAGE_WINDOW),
                redis: self.redis.clone(),
                redis_ca: self.redis_ca.clone(),
                redis_cluster: self.redis_cluster.clone(),
                run_id: run_id.clone(),
                start_at_unix_ms: None,
                db_read: self.db_read,
                db_write: self.db_write,
            });
        }
        if plans.is_empty() {
            return Err(bad("none of the requested strategies applies to the requested scenarios \
                 (cold: none, classic, single-flight, fleet, herdguard; expiry: none, classic, single-flight, fleet, xfetch, swr, herdguard; \
                 origin-failure: none, single-flight, sie, breaker, herdguard; store-outage: none, classic, fleet, herdguard; \
                 patterns: cache-aside, write-through, write-behind, write-behind-naive)"));
        }
        Ok(Plan {
            scenarios: plans,
            seed: self.seed.unwrap_or_else(|| fastrand::u64(..)),
        })
    }
}

impl DemoArgs {
    /// `--redis-cluster`: redis:// seed URLs, and none of the flags it excludes.
    fn check_cluster(&self) -> Result<(), DemoError> {
        if self.redis_cluster.is_empty() {
            return Ok(());
        }
        if self.redis.is_some() {
            return Err(bad(
                "--redis is one server, --redis-cluster a cluster: pass one or the other",
            ));
        }
        if self.flush {
            return Err(bad(
                "--flush needs --redis (on a cluster every run's keys carry a fresh run id and expire)",
            ));
        }
        if let Some(seed) = self
            .redis_cluster
            .iter()
            .find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return Err(bad(format!(
                "--redis-cluster {seed:?}: need redis:// URLs, comma-separated"
            )));
        }
        Ok(())
    }
}

pub(crate) fn range<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), DemoError> {
    if value < min || value > max {
        return Err(bad(format!(
            "{flag} must be between {min} and {max}, got {value}"
        )));
    }
    Ok(())
}

fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(item) {
            out.push(*item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    fn names(args: &[&str]) -> Result<Vec<&'static str>, DemoError> {
        let cli = Cli::try_parse_from(std::iter::once("demo").chain(args.iter().copied()))
            .map_err(|e| bad(e.to_string()))?;
        let plan = cli.demo.plan()?;
        Ok(plan.scenarios.iter().map(|s| s.scenario.name()).collect())
    }

    #[test]
    fn store_outage_joins_the_default_set_only_with_redis() {
        let without = names(&[]).expect("plan");
        assert_eq!(without, ["cold", "expiry", "origin-failure"]);
        let with = names(&["--redis", "redis://127.0.0.1:1/"]).expect("plan");
        assert_eq!(with, ["cold", "expiry", "origin-failure", "store-outage"]);
    }

    #[test]
    fn store_outage_needs_redis_and_has_its_window() {
        let err = names(&["--scenario", "store-outage"]).expect_err("needs --redis");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--redis"), "{err}");
        let cli = Cli::try_parse_from([
            "demo",
            "--scenario",
            "store-outage",
            "--redis",
            "redis://127.0.0.1:1/",
        ])
        .expect("parses");
        let plan = cli.demo.plan().expect("plan");
        let scenario = &plan.scenarios[0];
        assert_eq!(scenario.outage_window, Some(OUTAGE_WINDOW));
        assert_eq!(scenario.failure_window, None);
        let names: Vec<_> = scenario.strategies.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["none", "classic", "fleet", "herdguard"]);
    }

    #[test]
    fn herdguard_is_in_every_read_scenario_and_last() {
        for scenario in [
            Scenario::Cold,
            Scenario::Expiry,
            Scenario::OriginFailure,
            Scenario::StoreOutage,
        ] {
            for redis in [false, true] {
                let all = scenario.strategies(redis);
                assert_eq!(all.last(), Some(&Strategy::Herdguard), "{scenario:?}");
            }
        }
        assert!(!Scenario::Patterns
            .strategies(true)
            .contains(&Strategy::Herdguard));
    }

    fn fleet_args(args: &[&str]) -> Result<Option<DemoArgs>, DemoError> {
        let cli = Cli::try_parse_from(std::iter::once("demo").chain(args.iter().copied()))
            .map_err(|e| bad(e.to_string()))?;
        cli.demo.fleet_args()
    }

    #[test]
    fn fleet_defaults_to_four_processes_and_excludes_redis_and_processes() {
        let args = fleet_args(&["--fleet"])
            .expect("valid")
            .expect("a fleet run");
        assert_eq!(args.processes, 4);
        assert!(args.redis.is_some());
        let plan = args.plan().expect("plan");
        let names: Vec<_> = plan.scenarios.iter().map(|s| s.scenario.name()).collect();
        assert_eq!(names, ["cold", "expiry", "origin-failure", "store-outage"]);
        let args = fleet_args(&["--fleet", "3", "--json"])
            .expect("valid")
            .expect("a fleet run");
        assert_eq!(args.processes, 3);
        assert!(fleet_args(&[]).expect("valid").is_none());
        for bad_args in [
            &["--fleet", "--redis", "redis://127.0.0.1:1/"][..],
            &["--fleet", "2", "--processes", "2"],
            &["--fleet", "0"],
        ] {
            let err = fleet_args(bad_args).expect_err("bad input");
            assert_eq!(err.exit_code(), 2, "{bad_args:?}");
        }
    }

    #[test]
    fn redis_cluster_excludes_redis_fleet_flush_and_the_one_server_scenarios() {
        let seeds = "redis://127.0.0.1:1/,redis://127.0.0.1:2/";
        let default = names(&["--redis-cluster", seeds]).expect("plan");
        assert_eq!(
            default,
            ["cold", "expiry", "origin-failure"],
            "no store-outage"
        );
        let cli = Cli::try_parse_from(["demo", "--redis-cluster", seeds, "--processes", "3"])
            .expect("parses");
        let plan = cli.demo.plan().expect("plan");
        assert_eq!(plan.scenarios[0].redis_cluster.len(), 2);
        assert!(plan.scenarios[0].shared_store());
        assert!(plan.scenarios[0].strategies.contains(&Strategy::Fleet));
        for bad_args in [
            &["--redis-cluster", seeds, "--redis", "redis://127.0.0.1:1/"][..],
            &["--redis-cluster", seeds, "--flush"],
            &["--redis-cluster", seeds, "--scenario", "store-outage"],
            &["--redis-cluster", seeds, "--scenario", "patterns"],
            &["--redis-cluster", "127.0.0.1:1"],
            &["--redis-cluster", "redis://127.0.0.1:1/,"],
        ] {
            let err = names(bad_args).expect_err("bad input");
            assert_eq!(err.exit_code(), 2, "{bad_args:?}");
        }
        let err = fleet_args(&["--fleet", "--redis-cluster", seeds]).expect_err("bad input");
        assert_eq!(err.exit_code(), 2);
    }
}
