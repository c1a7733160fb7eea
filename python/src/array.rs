//! Arrays read through numpy's C-level array interface (`__array_struct__`: a capsule
//! holding a `PyArrayInterface`), which every numpy array and scalar has. Cheaper than
//! `__array_interface__`, whose dict and strings numpy builds on every access, and usable from
//! the stable ABI (abi3), unlike the buffer protocol before Python 3.11.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// numpy's `PyArrayInterface` (numpy/ndarraytypes.h), a documented, stable layout.
#[repr(C)]
struct PyArrayInterface {
    two: i32,
    nd: i32,
    typekind: u8,
    itemsize: i32,
    flags: i32,
    shape: *const isize,
    strides: *const isize,
    data: *mut u8,
    descr: *mut pyo3::ffi::PyObject,
}

const NOTSWAPPED: i32 = 0x200;

/// What the interface says about one array.
pub(crate) struct View {
    /// numpy's kind character: `f`, `i`, `u`, `b`, `c`, `V`, ...
    pub(crate) kind: u8,
    pub(crate) itemsize: usize,
    /// Bytes: elements times `itemsize`.
    pub(crate) len: usize,
    pub(crate) data: usize,
    /// C-contiguous.
    pub(crate) contiguous: bool,
    /// Stored in the other byte order than this machine's.
    pub(crate) swapped: bool,
    /// Keeps the memory alive: the capsule references the array that owns it.
    pub(crate) owner: Py<PyAny>,
}

/// Whether `value` offers the interface (numpy arrays and scalars do).
pub(crate) fn has(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    value.hasattr(pyo3::intern!(py, "__array_struct__"))
}

/// Reads `value`'s array interface.
pub(crate) fn view(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<View> {
    let capsule = value.getattr(pyo3::intern!(py, "__array_struct__"))?;
    let capsule = capsule.cast::<PyCapsule>()?;
    let ptr = capsule.pointer_checked(None)?.cast::<PyArrayInterface>();
    // SAFETY: numpy's capsule holds a `PyArrayInterface` that lives as long as the capsule,
    // which this function holds.
    let s = unsafe { ptr.as_ref() };
    if s.two != 2 || s.nd < 0 || s.itemsize < 0 {
        return Err(PyTypeError::new_err(
            "__array_struct__ is not numpy's array interface",
        ));
    }
    let dims: &[isize] = if s.nd == 0 {
        &[]
    } else {
        // SAFETY: `shape` holds `nd` entries (the interface's contract).
        unsafe { std::slice::from_raw_parts(s.shape, s.nd as usize) }
    };
    let elements: usize = dims.iter().map(|d| (*d).max(0) as usize).product();
    Ok(View {
        kind: s.typekind,
        itemsize: s.itemsize as usize,
        len: elements * s.itemsize as usize,
        data: s.data as usize,
        contiguous: c_contiguous(dims, s.strides, s.itemsize as isize),
        // Structured types carry no byte order of their own (numpy leaves the flag clear).
        swapped: s.flags & NOTSWAPPED == 0 && s.itemsize > 1 && b"fiuc".contains(&s.typekind),
        owner: capsule.clone().into_any().unbind(),
    })
}

/// Whether an array with `dims` and `strides` (null: C-contiguous, per the interface) is laid
/// out in C order without gaps. (The interface's own flag is not set for structured types.)
fn c_contiguous(dims: &[isize], strides: *const isize, itemsize: isize) -> bool {
    if strides.is_null() {
        return true;
    }
    // SAFETY: a non-null `strides` holds one entry per dimension (the interface's contract).
    let strides = unsafe { std::slice::from_raw_parts(strides, dims.len()) };
    let mut expect = itemsize;
    for (dim, stride) in dims.iter().zip(strides).rev() {
        if *dim > 1 && *stride != expect {
            return false;
        }
        expect *= *dim;
    }
    true
}
