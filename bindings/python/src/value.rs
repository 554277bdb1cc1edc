//! What the engine stores for Python: the encoded bytes (what crosses Redis,
//! shared with Rust processes) and, for the `bytes` codec, the Python `bytes`
//! object made once from them, so a hit hands out that object without a copy.
//! And the codecs between Python objects and those bytes.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One cached value.
pub(crate) struct Value {
    bytes: Vec<u8>,
    /// The `bytes` object of `bytes` (codec `bytes` only), made on first use.
    object: PyOnceLock<Py<PyAny>>,
}

impl Value {
    fn new(bytes: Vec<u8>) -> Self {
        Value {
            bytes,
            object: PyOnceLock::new(),
        }
    }
}

/// Stored as a byte string: postcard writes it as its length and its bytes —
/// the same bytes as a Rust `String` or `Vec<u8>` value, so a Rust process
/// with either type shares the entries (a `String` reader needs UTF-8).
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(Value::new(bytes.into_vec()))
    }
}

/// How Python values become the stored bytes and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    /// `bytes` in, the same `bytes` out (the default; any language reads it).
    Bytes,
    /// `json.dumps` as UTF-8 in, `json.loads` out (readable by any language).
    Json,
    /// `pickle.dumps` (protocol 5) in, `pickle.loads` out (Python only).
    Pickle,
}

impl Codec {
    /// The codec named `name`, or a `ValueError` naming the field.
    pub(crate) fn parse(name: &str) -> PyResult<Codec> {
        match name {
            "bytes" => Ok(Codec::Bytes),
            "json" => Ok(Codec::Json),
            "pickle" => Ok(Codec::Pickle),
            other => Err(PyValueError::new_err(format!(
                "codec must be \"bytes\", \"json\" or \"pickle\", got {other:?}"
            ))),
        }
    }

    /// The codec's name, as `Cache(codec=...)` takes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Bytes => "bytes",
            Codec::Json => "json",
            Codec::Pickle => "pickle",
        }
    }

    /// Encodes `object` (with the GIL held).
    pub(crate) fn encode(self, object: &Bound<'_, PyAny>) -> PyResult<Value> {
        let py = object.py();
        match self {
            Codec::Bytes => {
                let bytes = object.cast::<PyBytes>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "herdguard: codec \"bytes\" stores bytes, got {}",
                        type_name(object)
                    ))
                })?;
                let value = Value::new(bytes.as_bytes().to_vec());
                // The object itself is what a hit hands out: bytes are immutable.
                let _ = value.object.set(py, object.clone().unbind());
                Ok(value)
            }
            Codec::Json => {
                let text = py
                    .import("json")?
                    .call_method1("dumps", (object,))?
                    .extract::<String>()?;
                Ok(Value::new(text.into_bytes()))
            }
            Codec::Pickle => {
                let pickled = py.import("pickle")?.call_method1("dumps", (object, 5))?;
                let bytes = pickled.cast::<PyBytes>()?;
                Ok(Value::new(bytes.as_bytes().to_vec()))
            }
        }
    }

    /// Decodes `value`: for `bytes`, the one shared `bytes` object; for
    /// `json` and `pickle`, a new object per call, so a caller that mutates
    /// what it got never changes what the next caller gets.
    pub(crate) fn decode(self, py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
        match self {
            Codec::Bytes => Ok(value
                .object
                .get_or_init(py, || PyBytes::new(py, &value.bytes).into_any().unbind())
                .clone_ref(py)),
            Codec::Json => Ok(py
                .import("json")?
                .call_method1("loads", (PyBytes::new(py, &value.bytes),))?
                .unbind()),
            Codec::Pickle => Ok(py
                .import("pickle")?
                .call_method1("loads", (PyBytes::new(py, &value.bytes),))?
                .unbind()),
        }
    }
}

fn type_name(object: &Bound<'_, PyAny>) -> String {
    object
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".to_string())
}
