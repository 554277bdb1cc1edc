//! `Cache(...)`'s keyword arguments, checked one by one: a bad value raises
//! `ValueError` naming the argument, before anything is built.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A number of seconds from `value`, `> 0` (or `>= 0` when `zero_ok`).
pub(crate) fn seconds(field: &str, value: &Bound<'_, PyAny>, zero_ok: bool) -> PyResult<Duration> {
    let secs = number(field, value)?;
    let in_range = secs.is_finite() && (secs > 0.0 || (zero_ok && secs == 0.0));
    if !in_range {
        let bound = if zero_ok { ">= 0" } else { "> 0" };
        return Err(PyValueError::new_err(format!(
            "{field} must be a finite number of seconds {bound}, got {secs}"
        )));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| PyValueError::new_err(format!("{field}: {e}")))
}

/// Like [`seconds`], with `None` for "not set".
pub(crate) fn optional_seconds(
    field: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => seconds(field, v, false).map(Some),
    }
}

/// A float from `value` (ints too), or a `ValueError` naming `field`.
pub(crate) fn number(field: &str, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyValueError::new_err(format!(
            "{field} must be a number, got a bool"
        )));
    }
    value.extract::<f64>().map_err(|_| {
        PyValueError::new_err(format!("{field} must be a number, got {}", repr(value)))
    })
}

/// A positive integer from `value`, or a `ValueError` naming `field`.
pub(crate) fn positive_int(field: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let n = if value.is_instance_of::<pyo3::types::PyBool>() {
        None
    } else {
        value.extract::<i64>().ok()
    };
    match n {
        Some(n) if n > 0 => Ok(n.unsigned_abs()),
        _ => Err(PyValueError::new_err(format!(
            "{field} must be an integer > 0, got {}",
            repr(value)
        ))),
    }
}

/// A string from `value`, or a `ValueError` naming `field`.
pub(crate) fn text(field: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    value.extract::<String>().map_err(|_| {
        PyValueError::new_err(format!("{field} must be a string, got {}", repr(value)))
    })
}

fn repr(value: &Bound<'_, PyAny>) -> String {
    value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "an object".to_string())
}
