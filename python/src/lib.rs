//! Python bindings of wgpu-batch: the native module `wgpu_batch._native`, which the
//! `wgpu_batch` package (`python/wgpu_batch/`) re-exports with its exceptions, `out`,
//! `scratch`, the built-in kernels and the asyncio glue.
//!
//! The GIL is released wherever the engine works or waits: building the engine, compiling,
//! copying a job's arrays into it (read in place from the arrays' memory), submitting (which
//! waits when the queues are full), waiting for a result, uploading and reading buffers.

mod args;
mod buffer;
mod engine;
mod errors;
mod handle;
mod kernel;
mod stats;

use pyo3::prelude::*;

/// The WGSL source of a built-in kernel (`saxpy`, `add`, `scale`, `sum`, `linear`).
#[pyfunction]
fn builtin_source(name: &str) -> PyResult<String> {
    use wgpu_batch::kernels;
    let src = match name {
        "saxpy" => kernels::saxpy(),
        "add" => kernels::add(),
        "scale" => kernels::scale(),
        "sum" => kernels::sum(),
        "linear" => kernels::linear(),
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "no built-in kernel {other:?}: saxpy, add, scale, sum or linear"
            )));
        }
    };
    Ok(src.source().to_owned())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::Job>()?;
    m.add_class::<kernel::Kernel>()?;
    m.add_class::<kernel::Binding>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<buffer::Buffer>()?;
    m.add_class::<args::Out>()?;
    m.add_class::<args::Scratch>()?;
    m.add_function(wrap_pyfunction!(builtin_source, m)?)?;
    Ok(())
}
