//! `herdguard serve` as a stand-alone example binary (the same code the CLI runs):
//! `cargo run --release --example serve -- --listen 127.0.0.1:8080 --origin http://127.0.0.1:9000`
//!
//! `--threads N` sets the serving threads (default one per core); see
//! `scripts/bench-serve.sh` (`HG_THREADS`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: herdguard_proxy::ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match herdguard_proxy::run_blocking(cli.serve, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
