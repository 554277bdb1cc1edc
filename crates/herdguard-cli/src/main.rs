//! `herdguard`: the command line of the herdguard stampede-proof cache.
//!
//! Subcommands:
//! - `demo`: show a cache stampede and herdguard stopping it, with numbers.
//! - `serve`: an HTTP caching sidecar with fleet-wide request coalescing.
//! - `purge`: purge URLs through a sidecar's admin listener (fleet-wide with Redis).
//!
//! Exit codes: 0 ok, 1 the run failed, 2 bad input.
//!
//! Logging (`logging`): `--log-format text|json`, `--log-level` / `RUST_LOG`.

mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// herdguard: a stampede-proof read-through cache.
#[derive(Parser)]
#[command(name = "herdguard", version, about)]
struct Cli {
    #[command(flatten)]
    logs: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Show a cache stampede, and herdguard stopping it, with numbers.
    Demo(herdguard_demo::DemoArgs),
    /// Run an HTTP caching reverse proxy (RFC 9111 shared cache) in front of an origin.
    Serve(ServeCommand),
    /// Purge URLs (and all their variants) through a sidecar's admin listener,
    /// on every sidecar sharing its Redis.
    Purge(herdguard_proxy::PurgeArgs),
}

/// `herdguard serve`: its settings, or the reference of them.
#[derive(clap::Args)]
struct ServeCommand {
    #[command(flatten)]
    settings: herdguard_proxy::ServeArgs,
    /// Print the reference of every setting (flag, environment variable, file
    /// key, default, reload class) as Markdown — docs/configuration.md — and exit.
    #[arg(long)]
    print_config_reference: bool,
}

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with code 2.
    let cli = Cli::parse();
    // The demo's output is its report: quiet unless asked.
    let default_filter = match cli.command {
        Command::Demo(_) => "off",
        Command::Serve(_) => "info",
        // Its output is one line per URL; errors are its own line.
        Command::Purge(_) => "warn",
    };
    let log = match logging::init(&cli.logs, default_filter) {
        Ok(log) => log,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Demo(args) => {
            herdguard_demo::run(args).map_err(|e| (e.exit_code(), e.to_string()))
        }
        Command::Serve(ServeCommand {
            print_config_reference: true,
            ..
        }) => {
            print!("{}", herdguard_proxy::config_reference());
            Ok(())
        }
        Command::Serve(ServeCommand { settings, .. }) => serve(settings, log),
        Command::Purge(args) => {
            herdguard_proxy::purge_blocking(args).map_err(|e| (e.exit_code(), e.to_string()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

/// `herdguard serve`, a thread per core, until SIGTERM or ctrl-c; SIGHUP
/// reloads its configuration file (the log filter included).
fn serve(
    args: herdguard_proxy::ServeArgs,
    log: herdguard_proxy::LogControl,
) -> Result<(), (i32, String)> {
    herdguard_proxy::run_blocking(args, Some(log)).map_err(|e| (e.exit_code(), e.to_string()))
}
