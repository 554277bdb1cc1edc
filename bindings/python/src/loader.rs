//! Python loaders as engine loaders. The engine calls a loader once for all
//! concurrent callers of a key; these run it: a plain callable on a blocking
//! thread with the GIL taken there, a coroutine function on the event loop of
//! the caller that started the load.

use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;

use crate::errors::LoaderError;
use crate::value::{Codec, Value};

/// Calls `loader()` on a blocking thread (Tokio's pool, so runtime threads
/// never wait on the GIL) and encodes its result there.
pub(crate) async fn call_sync(loader: Py<PyAny>, codec: Codec) -> Result<Value, LoaderError> {
    let joined = tokio::task::spawn_blocking(move || {
        Python::attach(|py| {
            let result = loader.call0(py)?;
            codec.encode(result.bind(py))
        })
    })
    .await;
    match joined {
        Ok(result) => result.map_err(LoaderError::Raised),
        Err(e) => Err(LoaderError::Lost(e.to_string())),
    }
}

/// Calls `loader()` and awaits the coroutine it returns on the event loop of
/// `locals`, then encodes the result.
pub(crate) async fn call_async(
    loader: Py<PyAny>,
    codec: Codec,
    locals: TaskLocals,
) -> Result<Value, LoaderError> {
    let awaited = Python::attach(|py| {
        let awaitable = loader.call0(py)?;
        pyo3_async_runtimes::into_future_with_locals(&locals, awaitable.into_bound(py))
    })
    .map_err(LoaderError::Raised)?;
    let result = awaited.await.map_err(LoaderError::Raised)?;
    Python::attach(|py| codec.encode(result.bind(py))).map_err(LoaderError::Raised)
}
