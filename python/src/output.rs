//! A job's outputs as numpy arrays that own their memory: copied out of the job's read-back
//! memory, with the GIL released for a large one. Used by `result()`, `await` and `run`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use wgpu_batch::JobOutput;

use crate::args::{Returned, numpy};

/// `numpy.empty`.
static EMPTY: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// The returned bindings as numpy arrays that own their memory, by name.
pub(crate) fn outputs<'py>(
    py: Python<'py>,
    out: &JobOutput,
    returned: &[Returned],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let empty = EMPTY.get_or_try_init(py, || numpy(py)?.getattr("empty").map(Bound::unbind))?;
    for r in returned {
        let bytes = (out.bytes_step(r.step, r.binding))
            .filter(|b| b.len() == r.nbytes)
            .ok_or_else(|| {
                PyRuntimeError::new_err(format!("binding `{}` was not read back whole", r.name))
            })?;
        let array = empty.bind(py).call1((r.shape.bind(py), r.dtype.bind(py)))?;
        copy_into(py, &array, bytes)?;
        dict.set_item(&r.name, array)?;
    }
    Ok(dict)
}

/// Bytes from which a copy, in or out, runs with the GIL released. Below it the copy takes a
/// microsecond or two, less than handing the GIL to another thread and back.
pub(crate) const RELEASE_FROM: usize = 32 << 10;

/// Copies `bytes` into a fresh C-contiguous `array` of exactly that many bytes.
pub(crate) fn copy_into(py: Python<'_>, array: &Bound<'_, PyAny>, bytes: &[u8]) -> PyResult<()> {
    let view = crate::array::view(py, array)?;
    if !view.contiguous || view.len != bytes.len() {
        return Err(PyRuntimeError::new_err(format!(
            "read back {} bytes for an array of {} (contiguous: {})",
            bytes.len(),
            view.len,
            view.contiguous
        )));
    }
    /// The array's memory, written by one thread while this one waits.
    struct Dst(usize);
    let (dst, src) = (Dst(view.data), bytes);
    let copy = move || {
        let dst = dst;
        // SAFETY: `array` is a contiguous array of `src.len()` bytes, referenced by the
        // calling thread until this returns; `src` is the job's read-back memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.0 as *mut u8, src.len()) }
    };
    if bytes.len() >= RELEASE_FROM {
        py.detach(copy);
    } else {
        copy();
    }
    Ok(())
}
