//! Python bindings of wgpu-batch: the native module `wgpu_batch._native`, which the
//! `wgpu_batch` package (`python/wgpu_batch/`) re-exports with its exceptions, `out`,
//! `scratch`, the built-in kernels and the asyncio glue.
//!
//! The GIL is released wherever the engine works or waits: building the engine, compiling,
//! waiting for a result (the waiting thread may run the device's batches meanwhile), a
//! submit that waits for room, copying a large job's arrays in or its results out (32 KiB or
//! more; a smaller copy is cheaper than handing the GIL over), uploading and reading buffers.

mod aio;
mod args;
mod array;
mod buffer;
mod engine;
mod errors;
mod handle;
mod kernel;
mod output;
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

/// For the benchmark: the same SAXPY jobs as Python's `engine.submit(k, n=len(x), a=a, x=x,
/// y=y).result()`, `jobs` of them one after another from Rust (the copies in and out
/// included; each result read into a vector), with the GIL released; the seconds they took.
#[pyfunction]
fn _rust_saxpy_loop(
    py: Python<'_>,
    engine: &engine::Engine,
    kernel: &kernel::Kernel,
    a: f32,
    x: Vec<f32>,
    y: Vec<f32>,
    jobs: usize,
) -> PyResult<f64> {
    let inner = engine.inner();
    let result = py.detach(|| {
        let start = std::time::Instant::now();
        for _ in 0..jobs {
            let job = wgpu_batch::kernels::saxpy_job(&kernel.inner, a, &x, &y);
            std::hint::black_box(inner.submit(job)?.wait()?.read::<f32>(2)?);
        }
        Ok::<_, wgpu_batch::Error>(start.elapsed().as_secs_f64())
    });
    result.map_err(|e| errors::to_py(py, e))
}

// Declares that it needs the GIL: it has not been tested on free-threaded Python.
#[pymodule(gil_used = true)]
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
    m.add_function(wrap_pyfunction!(_rust_saxpy_loop, m)?)?;
    Ok(())
}
