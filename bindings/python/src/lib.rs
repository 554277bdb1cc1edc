//! herdguard for Python: the Rust engine (`herdguard::Cache`, and the Redis
//! fleet protocol of `herdguard-redis`) as the extension module
//! `herdguard._native`, wrapped by the Python package in `python/herdguard`.
//!
//! # Layout
//!
//! - `cache`: the `Cache` class — arguments, the hit path, waiting without the
//!   GIL, asyncio.
//! - `loader`: Python loaders as engine loaders (a blocking thread with the
//!   GIL for a callable, the caller's event loop for a coroutine function).
//! - `value`: what is stored (the bytes that cross Redis) and the codecs.
//! - `errors`: the exceptions, and an engine error as one.
//! - `settings`: the checks of `Cache(...)`'s arguments.
//! - `runtime`: the module's one Tokio runtime, started on first use.

#![warn(missing_docs)]

mod cache;
mod errors;
mod loader;
mod runtime;
mod settings;
mod value;

use pyo3::prelude::*;

/// The extension module: `herdguard._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cache::PyCache>()?;
    errors::register(m)?;
    Ok(())
}
