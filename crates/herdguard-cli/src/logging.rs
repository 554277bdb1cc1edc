//! The log subscriber: `--log-format text|json`, `--log-level` or `RUST_LOG`.
//!
//! Logs go to stderr (stdout stays the command's output: the demo's report).
//! Every event has a stable target (`herdguard::fleet`, `herdguard::breaker`,
//! `herdguard::load`, `herdguard::access`, `herdguard::serve`) and message;
//! docs/observability.md lists them.

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: `time LEVEL target: message field=value …`.
    #[default]
    Text,
    /// For machines: one JSON object per line (`timestamp`, `level`,
    /// `target`, `fields.message` and the event's fields).
    Json,
}

/// The logging flags, global to every subcommand.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, value_enum, env = "HERDGUARD_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Which events are logged: a level (error, warn, info, debug, trace, off)
    /// or `RUST_LOG`-style directives (e.g. `warn,herdguard::access=info`).
    /// Default: `RUST_LOG`, else `info` for serve and `off` for the demo.
    #[arg(long, global = true, env = "HERDGUARD_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// Installs the subscriber; `default` is the filter when neither
/// `--log-level` nor `RUST_LOG` is given. An unreadable filter is bad input.
/// Returns the control through which `herdguard serve` changes the filter
/// (the configuration file's `log_level`, at start and on reload).
pub fn init(args: &LogArgs, default: &str) -> Result<herdguard_proxy::LogControl, String> {
    let (text, source) = match (&args.log_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => (level.clone(), Some("--log-level")),
        (None, Ok(env)) if !env.trim().is_empty() => (env, Some("RUST_LOG")),
        _ => (default.to_string(), None),
    };
    let filter = parse(&text).map_err(|e| format!("{} {e}", source.unwrap_or("default")))?;
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let installed = match args.log_format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(filter)
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json())
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(herdguard_proxy::LogControl {
        set: Box::new(move |text| {
            let filter = parse(text)?;
            handle
                .reload(filter)
                .map_err(|e| format!("cannot change the log filter: {e}"))
        }),
        pinned_by: source,
        default: default.to_string(),
    })
}

/// A filter from `--log-level` syntax.
fn parse(text: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(text)
        .map_err(|e| format!("{text:?}: {e}"))
}
