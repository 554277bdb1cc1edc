//! `herdguard serve` as a stand-alone example binary (the same code the CLI runs):
//! `cargo run --release --example serve -- --listen 127.0.0.1:8080 --origin http://127.0.0.1:9000`

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: herdguard_proxy::ServeArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match herdguard_proxy::run(cli.serve).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
