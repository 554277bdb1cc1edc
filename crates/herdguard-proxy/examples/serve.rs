//! `herdguard serve` as a stand-alone example binary (the same code the CLI runs):
//! `cargo run --release --example serve -- --listen 127.0.0.1:8080 --origin http://127.0.0.1:9000`
//!
//! `--threads 1` runs on a single-threaded runtime (no work stealing, no cross-thread
//! wake-ups): on a small box shared with other work that serves more hits per second
//! than a worker per core (see `scripts/bench-serve.sh`, `HG_THREADS`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: herdguard_proxy::ServeArgs,
    /// Runtime threads: 1 = single-threaded runtime; default one worker per core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(herdguard_proxy::run(cli.serve)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
