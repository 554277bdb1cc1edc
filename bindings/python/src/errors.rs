//! The module's exceptions, and how an engine error becomes one: a loader's
//! own exception is raised again as itself, in every caller that waited on it.

use herdguard::{Error, FleetLoadFailed};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTimeoutError};
use pyo3::prelude::*;

create_exception!(
    herdguard,
    HerdguardError,
    PyException,
    "Base of the errors herdguard raises itself (a loader's own exception is raised as itself)."
);
create_exception!(
    herdguard,
    WaitTimeout,
    PyTimeoutError,
    "The caller's wait_timeout passed before the value arrived; the load goes on for the others."
);
create_exception!(
    herdguard,
    LoadTimeout,
    PyTimeoutError,
    "The load ran past load_timeout: every waiter gets this, and the next call loads again."
);
create_exception!(
    herdguard,
    CircuitOpen,
    HerdguardError,
    "The circuit breaker is open: the loader is not called until it half-opens."
);
create_exception!(
    herdguard,
    SharedStoreError,
    HerdguardError,
    "Redis failed for an operation that needs it (insert, invalidate, connecting)."
);
create_exception!(
    herdguard,
    FleetLoadError,
    HerdguardError,
    "The load of this key failed in another process of the fleet (its message is that process's)."
);

/// Why a loader gave no value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoaderError {
    /// The loader raised (or returned what the codec cannot store).
    #[error("{0}")]
    Raised(PyErr),
    /// The thread running the loader ended without an answer.
    #[error("the loader's thread ended without an answer: {0}")]
    Lost(String),
}

/// The Python exception for an engine error (with the GIL held).
pub(crate) fn to_py_err(py: Python<'_>, error: Error) -> PyErr {
    match &error {
        Error::Origin(shared) | Error::RecentlyFailed(shared) => {
            if let Some(LoaderError::Raised(raised)) = shared.downcast_ref::<LoaderError>() {
                return raised.clone_ref(py);
            }
            if let Some(failed) = shared.downcast_ref::<FleetLoadFailed>() {
                return FleetLoadError::new_err(failed.0.clone());
            }
            HerdguardError::new_err(error.to_string())
        }
        Error::Timeout(_) => WaitTimeout::new_err(error.to_string()),
        Error::LoadTimeout(_) => LoadTimeout::new_err(error.to_string()),
        Error::CircuitOpen => CircuitOpen::new_err(error.to_string()),
        Error::Remote(_) => SharedStoreError::new_err(error.to_string()),
        _ => HerdguardError::new_err(error.to_string()),
    }
}

/// Registers the exceptions on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HerdguardError", py.get_type::<HerdguardError>())?;
    m.add("WaitTimeout", py.get_type::<WaitTimeout>())?;
    m.add("LoadTimeout", py.get_type::<LoadTimeout>())?;
    m.add("CircuitOpen", py.get_type::<CircuitOpen>())?;
    m.add("SharedStoreError", py.get_type::<SharedStoreError>())?;
    m.add("FleetLoadError", py.get_type::<FleetLoadError>())?;
    Ok(())
}
