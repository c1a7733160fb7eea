//! The engine's [`Error`] as Python exceptions: each kind has its class in
//! `wgpu_batch/_errors.py` (under `wgpu_batch.Error`, and under the built-in `ValueError` or
//! `TimeoutError` where a Python user would catch that), with the error's fields as attributes.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use wgpu_batch::Error;

/// `wgpu_batch._errors`, imported once.
static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception for `e`: its class's name, its message, and its fields as attributes.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    // Should the error module itself fail to import, that is the error to see.
    make(py, &e).unwrap_or_else(|failed| failed)
}

fn make(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let attrs = PyDict::new(py);
    let name = match e {
        Error::NoAdapter(_) => "NoAdapterError",
        Error::RequestDevice { adapter, .. } => {
            attrs.set_item("adapter", adapter)?;
            "RequestDeviceError"
        }
        Error::Shader { kernel, message } => {
            attrs.set_item("kernel", kernel)?;
            let (line, column) = location(message).unzip();
            attrs.set_item("line", line)?;
            attrs.set_item("column", column)?;
            "ShaderError"
        }
        Error::Binding {
            kernel, binding, ..
        } => {
            attrs.set_item("kernel", kernel)?;
            attrs.set_item("binding", (*binding != u32::MAX).then_some(*binding))?;
            "BindingError"
        }
        Error::Limit {
            what,
            requested,
            limit,
        } => {
            attrs.set_item("what", what)?;
            attrs.set_item("requested", requested)?;
            attrs.set_item("limit", limit)?;
            "LimitError"
        }
        Error::Workgroups { kernel, .. } => {
            attrs.set_item("kernel", kernel)?;
            "WorkgroupsError"
        }
        Error::QueueFull => "QueueFull",
        Error::Timeout => "Timeout",
        Error::DeadlineExpired => "DeadlineExpired",
        Error::Cancelled => "Cancelled",
        Error::ResultTaken => "ResultTaken",
        Error::DeviceLost { device, .. } => {
            attrs.set_item("device", device)?;
            "DeviceLost"
        }
        Error::BufferLost { device, .. } => {
            attrs.set_item("device", device)?;
            "BufferLost"
        }
        Error::Poisoned { device, .. } => {
            attrs.set_item("device", device)?;
            "Poisoned"
        }
        Error::Quarantined { kernel, device, .. } => {
            attrs.set_item("kernel", kernel)?;
            attrs.set_item("device", device)?;
            "Quarantined"
        }
        Error::Shutdown => "Shutdown",
        Error::Remote { code, .. } => {
            attrs.set_item("code", code)?;
            "RemoteError"
        }
        _ => "WgpuError",
    };
    exception(py, name, &e.to_string(), &attrs)
}

/// An instance of `wgpu_batch._errors.<class>` with `message` and `attrs` as attributes.
fn exception(
    py: Python<'_>,
    class: &str,
    message: &str,
    attrs: &Bound<'_, PyDict>,
) -> PyResult<PyErr> {
    let module =
        ERRORS.get_or_try_init(py, || py.import("wgpu_batch._errors").map(Bound::unbind))?;
    let exc = module.bind(py).getattr(class)?.call1((message,))?;
    for (k, v) in attrs.iter() {
        exc.setattr(k.cast::<pyo3::types::PyString>()?, v)?;
    }
    Ok(PyErr::from_value(exc))
}

/// Line and column of the first `wgsl:LINE:COLUMN` (naga's report) in a shader error.
fn location(message: &str) -> Option<(u32, u32)> {
    let at = message.find("wgsl:")? + "wgsl:".len();
    let mut parts = message[at..].splitn(3, ':');
    let line = parts.next()?.trim().parse().ok()?;
    let digits: String = (parts.next()?.chars())
        .take_while(char::is_ascii_digit)
        .collect();
    Some((line, digits.parse().ok()?))
}

/// A binding problem found before the job reaches the engine (wrong dtype, too short, not
/// contiguous): `BindingError`, a `ValueError`, naming the binding.
pub(crate) fn binding(
    py: Python<'_>,
    kernel: &str,
    name: &str,
    number: u32,
    problem: &str,
) -> PyErr {
    let message = format!("kernel `{kernel}`, binding `{name}` (@binding({number})): {problem}");
    let made = (|| {
        let attrs = PyDict::new(py);
        attrs.set_item("kernel", kernel)?;
        attrs.set_item("binding", number)?;
        attrs.set_item("name", name)?;
        exception(py, "BindingError", &message, &attrs)
    })();
    made.unwrap_or_else(|failed| failed)
}
