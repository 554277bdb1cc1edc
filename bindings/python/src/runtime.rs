//! The one Tokio runtime of the module: loads, leases and the change feed run
//! on it, created on first use (so importing the module starts no threads).

use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The module's multi-thread runtime, started on first call. It is also the
/// runtime `pyo3-async-runtimes` runs `aget_or_load` futures on, so an async
/// caller and a thread of the same process share one engine.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herdguard")
        .build()
        .map_err(|e| {
            PyRuntimeError::new_err(format!("herdguard: cannot start its runtime: {e}"))
        })?;
    // Two threads may race to build one; the loser's is dropped unused.
    let rt = RUNTIME.get_or_init(|| built);
    // Already set only if this module set it before: the same runtime.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(rt);
    Ok(rt)
}
