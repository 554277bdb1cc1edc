//! `herdguard.Cache`: a `herdguard::Cache<String, Value>` — the Rust engine,
//! with `herdguard-redis` as its shared store when `redis=` is given.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use herdguard::{Cached, Error};
use herdguard_redis::{RedisConfig, RedisRemote, RedisSetupError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{to_py_err, SharedStoreError};
use crate::loader;
use crate::runtime::runtime;
use crate::settings::{number, optional_seconds, positive_int, seconds, text};
use crate::value::{Codec, Value};

type Engine = herdguard::Cache<String, Value>;

/// A read-through cache that calls a key's loader once for all concurrent
/// callers: threads and asyncio tasks of this process and, with `redis=URL`,
/// every process on that Redis — Python or Rust — that uses the same prefix.
///
/// Durations are seconds (floats). Values go through `codec`: "bytes" (the
/// default: `bytes` in and out), "json" or "pickle"; what crosses Redis is
/// the encoded bytes, so processes share entries when they use one codec.
#[pyclass(module = "herdguard", name = "Cache", subclass, frozen)]
pub(crate) struct PyCache {
    engine: Engine,
    codec: Codec,
}

#[pymethods]
impl PyCache {
    #[new]
    #[pyo3(signature = (
        *,
        ttl = None,
        max_entries = None,
        ttl_jitter = None,
        early_refresh = None,
        stale_while_revalidate = None,
        stale_if_error = None,
        negative_ttl = None,
        wait_timeout = None,
        load_timeout = None,
        redis = None,
        prefix = None,
        codec = None,
        lease_ttl = None,
        redis_ca = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        ttl: Option<&Bound<'_, PyAny>>,
        max_entries: Option<&Bound<'_, PyAny>>,
        ttl_jitter: Option<&Bound<'_, PyAny>>,
        early_refresh: Option<&Bound<'_, PyAny>>,
        stale_while_revalidate: Option<&Bound<'_, PyAny>>,
        stale_if_error: Option<&Bound<'_, PyAny>>,
        negative_ttl: Option<&Bound<'_, PyAny>>,
        wait_timeout: Option<&Bound<'_, PyAny>>,
        load_timeout: Option<&Bound<'_, PyAny>>,
        redis: Option<&Bound<'_, PyAny>>,
        prefix: Option<&Bound<'_, PyAny>>,
        codec: Option<&Bound<'_, PyAny>>,
        lease_ttl: Option<&Bound<'_, PyAny>>,
        redis_ca: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut builder = Engine::builder();
        if let Some(v) = given(ttl) {
            builder = builder.ttl(seconds("ttl", &v, false)?);
        }
        if let Some(v) = given(max_entries) {
            builder = builder.max_entries(positive_int("max_entries", &v)?);
        }
        if let Some(v) = given(ttl_jitter) {
            let jitter = number("ttl_jitter", &v)?;
            if !(0.0..1.0).contains(&jitter) {
                return Err(PyValueError::new_err(format!(
                    "ttl_jitter must be a fraction in [0, 1), got {jitter}"
                )));
            }
            builder = builder.ttl_jitter(jitter);
        }
        if let Some(v) = given(early_refresh) {
            let beta = number("early_refresh", &v)?;
            if !(beta.is_finite() && beta > 0.0) {
                return Err(PyValueError::new_err(format!(
                    "early_refresh must be a finite X-Fetch beta > 0 (1 is the usual), got {beta}"
                )));
            }
            builder = builder.early_refresh(beta);
        }
        if let Some(v) = given(stale_while_revalidate) {
            builder = builder.stale_while_revalidate(seconds("stale_while_revalidate", &v, true)?);
        }
        if let Some(v) = given(stale_if_error) {
            builder = builder.stale_if_error(seconds("stale_if_error", &v, true)?);
        }
        if let Some(d) = optional_seconds("negative_ttl", negative_ttl)? {
            builder = builder.negative_ttl(d);
        }
        if let Some(d) = optional_seconds("wait_timeout", wait_timeout)? {
            builder = builder.wait_timeout(d);
        }
        if let Some(d) = optional_seconds("load_timeout", load_timeout)? {
            builder = builder.load_timeout(d);
        }
        let codec = match given(codec) {
            Some(v) => Codec::parse(&text("codec", &v)?)?,
            None => Codec::Bytes,
        };
        let prefix = match given(prefix) {
            Some(v) => {
                let p = text("prefix", &v)?;
                if p.is_empty() {
                    return Err(PyValueError::new_err("prefix must not be empty"));
                }
                Some(p)
            }
            None => None,
        };
        let lease_ttl = optional_seconds("lease_ttl", lease_ttl)?;
        let redis_ca = match given(redis_ca) {
            Some(v) => Some(text("redis_ca", &v)?),
            None => None,
        };
        if let Some(v) = given(redis) {
            let url = text("redis", &v)?;
            let mut config = RedisConfig::new(url);
            if let Some(p) = prefix {
                config = config.prefix(p);
            }
            if let Some(d) = lease_ttl {
                config = config.lease_ttl(d);
            }
            if let Some(ca) = redis_ca {
                config = config.ca_file(ca);
            }
            let rt = runtime()?;
            let connected =
                py.detach(|| rt.block_on(RedisRemote::<String, Value>::connect(config)));
            let remote = connected.map_err(|e| match e {
                RedisSetupError::Unreachable { .. } => SharedStoreError::new_err(e.to_string()),
                other => PyValueError::new_err(format!("redis: {other}")),
            })?;
            builder = builder.shared_store(remote);
        } else if prefix.is_some() || lease_ttl.is_some() || redis_ca.is_some() {
            return Err(PyValueError::new_err(
                "prefix, lease_ttl and redis_ca apply to the Redis tier: give redis=URL too",
            ));
        }
        // Every field was checked above; what the engine still refuses names
        // its field in the message.
        let engine = builder
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyCache { engine, codec })
    }

    /// The value of `key`: from the cache when fresh, else `loader()` — called
    /// once for all concurrent callers (threads here, other processes through
    /// Redis) on a thread of the engine, while the callers wait without the
    /// GIL. An exception from `loader` is raised in every caller that waited.
    fn get_or_load(&self, py: Python<'_>, key: String, loader: Py<PyAny>) -> PyResult<Py<PyAny>> {
        let rt = runtime()?;
        let codec = self.codec;
        let call = self
            .engine
            .get_or_load(key, move || loader::call_sync(loader, codec));
        let mut call = std::pin::pin!(call);
        // A hit is answered on the first poll, with the GIL held (releasing and
        // taking it back costs more than the hit); anything else waits for the
        // engine on this thread, without the GIL.
        let first = {
            let _in_runtime = rt.enter();
            call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        };
        let answer = match first {
            Poll::Ready(answer) => answer,
            Poll::Pending => {
                let waiting: Pin<&mut _> = call.as_mut();
                py.detach(|| rt.block_on(waiting))
            }
        };
        self.answer(py, answer)
    }

    /// `await cache.aget_or_load(key, loader)`: [`get_or_load`] for asyncio,
    /// where `loader` is a coroutine function (`async def`). The load runs on
    /// the event loop of the caller that started it.
    fn aget_or_load<'py>(
        slf: Bound<'py, Self>,
        key: String,
        loader: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        runtime()?;
        let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
        let this: Py<PyCache> = slf.unbind();
        let (engine, codec) = (this.get().engine.clone(), this.get().codec);
        let load_locals = locals.clone();
        pyo3_async_runtimes::tokio::future_into_py_with_locals(py, locals, async move {
            let answer = engine
                .get_or_load(key, move || loader::call_async(loader, codec, load_locals))
                .await;
            Python::attach(|py| this.get().answer(py, answer))
        })
    }

    /// The fresh value of `key` in this process, or `None`; never loads.
    fn get(&self, py: Python<'_>, key: String) -> PyResult<Option<Py<PyAny>>> {
        match self.engine.get(&key) {
            Some(cached) => self.codec.decode(py, &cached).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key` as freshly loaded, here and in Redis; a load
    /// in flight anywhere is fenced off and every other process's copy evicted.
    fn insert(&self, py: Python<'_>, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = self.codec.encode(value)?;
        let rt = runtime()?;
        let engine = &self.engine;
        py.detach(|| rt.block_on(engine.insert(key, value)))
            .map_err(|e| to_py_err(py, e))
    }

    /// Removes `key` here and in Redis, and every other process's copy (Rust
    /// processes included); a load in flight is fenced off.
    fn invalidate(&self, py: Python<'_>, key: String) -> PyResult<()> {
        let rt = runtime()?;
        let engine = &self.engine;
        py.detach(|| rt.block_on(engine.invalidate(&key)))
            .map_err(|e| to_py_err(py, e))
    }

    /// The engine's counters since the cache was built, as a dict (hits,
    /// loads, coalesced, l2_hits, load_errors, negative_hits, ...).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.engine.metrics();
        let dict = PyDict::new(py);
        for (name, count) in [
            ("hits", m.hits),
            ("loads", m.loads),
            ("coalesced", m.coalesced),
            ("l2_hits", m.l2_hits),
            ("unconfirmed", m.unconfirmed),
            ("stale_while_revalidate", m.stale_while_revalidate),
            ("stale_on_error", m.stale_on_error),
            ("stale_on_timeout", m.stale_on_timeout),
            ("early_refreshes", m.early_refreshes),
            ("background_refreshes", m.background_refreshes),
            ("load_errors", m.load_errors),
            ("load_timeouts", m.load_timeouts),
            ("timeouts", m.timeouts),
            ("negative_hits", m.negative_hits),
            ("circuit_rejections", m.circuit_rejections),
            ("remote_errors", m.remote_errors),
            ("remote_evictions", m.remote_evictions),
            ("superseded", m.superseded),
        ] {
            dict.set_item(name, count)?;
        }
        dict.set_item("in_flight", m.in_flight)?;
        dict.set_item("entries", m.entries)?;
        dict.set_item("load_seconds_sum", m.load_duration.sum.as_secs_f64())?;
        dict.set_item("wait_seconds_sum", m.wait_time.sum.as_secs_f64())?;
        Ok(dict)
    }

    /// The codec's name.
    #[getter]
    fn codec(&self) -> &'static str {
        self.codec.name()
    }

    /// Whether the Redis tier is in use now (false while degraded, and
    /// without `redis=`).
    #[getter]
    fn shared_store_healthy(&self) -> bool {
        self.engine.shared_store_healthy()
    }
}

impl PyCache {
    /// A call's answer as Python sees it: the decoded value, or the exception.
    fn answer(&self, py: Python<'_>, answer: Result<Cached<Value>, Error>) -> PyResult<Py<PyAny>> {
        match answer {
            Ok(cached) => self.codec.decode(py, &cached),
            Err(e) => Err(to_py_err(py, e)),
        }
    }
}

/// An argument that was passed and is not `None`.
fn given<'py>(value: Option<&Bound<'py, PyAny>>) -> Option<Bound<'py, PyAny>> {
    value.filter(|v| !v.is_none()).cloned()
}
