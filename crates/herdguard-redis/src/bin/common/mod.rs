//! What the crate's test binaries (`chaos`, `worker`, `writer`) share.

use std::future::Future;
use std::process::ExitCode;

/// Runs `run(args)` on a Tokio runtime: success exits 0; a runtime that cannot
/// start, or an error, is one line on stderr and exit code 2, never a panic.
pub fn run_main<A, F>(args: A, run: impl FnOnce(A) -> F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
