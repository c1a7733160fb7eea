//! Resident buffers: device memory that outlives a job (`engine.upload`, `engine.replicate`).

use pyo3::prelude::*;

/// A buffer that stays on the device(s) between jobs; bind it by name like an array.
#[pyclass(frozen, module = "wgpu_batch")]
pub(crate) struct Buffer {
    pub(crate) inner: wgpu_batch::DeviceBuffer,
    /// The dtype and shape it was uploaded with (what `engine.read` returns by default).
    pub(crate) dtype: Py<PyAny>,
    pub(crate) shape: Py<PyAny>,
}

#[pymethods]
impl Buffer {
    /// Its size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.size()
    }

    /// The devices holding a copy.
    #[getter]
    fn devices(&self) -> Vec<usize> {
        self.inner.devices()
    }

    /// Whether kernels may only read it.
    #[getter]
    fn read_only(&self) -> bool {
        self.inner.is_read_only()
    }

    fn __repr__(&self) -> String {
        format!(
            "Buffer(size={}, devices={:?}, read_only={})",
            self.inner.size(),
            self.inner.devices(),
            self.inner.is_read_only()
        )
    }
}
