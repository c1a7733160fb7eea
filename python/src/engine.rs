//! `Engine`: the builder's settings as keyword arguments, kernels, resident buffers, and
//! jobs bound by name (`submit`, `try_submit`, `run`; `job(...).then(...)` for several steps).

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use wgpu_batch::{Balance, Error, JobHandle, Priority};

use crate::args::{self, Step, numpy, seconds};
use crate::buffer::Buffer;
use crate::errors::to_py;
use crate::handle::Handle;
use crate::kernel::Kernel;
use crate::output::{RELEASE_FROM, copy_into, outputs};
use crate::stats;

/// The engine: one per process is the usual use; a context manager that shuts it down.
///
/// `Engine(*, backends=None, adapter_name=None, ...)`: every setting of the Rust
/// `EngineBuilder` is a keyword, times in seconds. `backends` is a name or a list of names
/// (`"vulkan"`, `"metal"`, `"dx12"`, `"gl"`, `"noop"`: host cost only, `"primary"`, `"all"`);
/// by default `WGPU_BACKEND`, else every backend but noop. Opening it enumerates the adapters
/// with the GIL released; without one it raises `NoAdapterError`, which says what to install.
#[pyclass(frozen, module = "wgpu_batch")]
pub(crate) struct Engine {
    inner: wgpu_batch::Engine,
}

/// A job not yet submitted, step by step: `engine.job(kernel, ...).then(kernel, ...)`.
#[pyclass(frozen, module = "wgpu_batch")]
pub(crate) struct Job {
    steps: Vec<Pending>,
}

struct Pending {
    kernel: Py<Kernel>,
    bindings: Py<PyDict>,
    workgroups: Option<(u32, u32, u32)>,
    n: Option<usize>,
}

impl Pending {
    fn clone_ref(&self, py: Python<'_>) -> Pending {
        Pending {
            kernel: self.kernel.clone_ref(py),
            bindings: self.bindings.clone_ref(py),
            workgroups: self.workgroups,
            n: self.n,
        }
    }
}

#[pymethods]
impl Job {
    /// This job with one more step, which runs after the others on the same device; a
    /// `wgpu_batch.scratch` bound in several steps is the same device memory.
    #[pyo3(signature = (kernel, *, workgroups=None, n=None, **bindings))]
    fn then(
        &self,
        py: Python<'_>,
        kernel: Py<Kernel>,
        workgroups: Option<(u32, u32, u32)>,
        n: Option<usize>,
        bindings: Option<Bound<'_, PyDict>>,
    ) -> Job {
        let mut steps: Vec<Pending> = self.steps.iter().map(|s| s.clone_ref(py)).collect();
        steps.push(pending(py, kernel, workgroups, n, bindings));
        Job { steps }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let labels: Vec<String> = (self.steps.iter())
            .map(|s| s.kernel.get().inner.label().to_owned())
            .collect();
        let _ = py;
        format!("Job({})", labels.join(" -> "))
    }
}

fn pending(
    py: Python<'_>,
    kernel: Py<Kernel>,
    workgroups: Option<(u32, u32, u32)>,
    n: Option<usize>,
    bindings: Option<Bound<'_, PyDict>>,
) -> Pending {
    let bindings = bindings.map_or_else(|| PyDict::new(py).unbind(), Bound::unbind);
    Pending {
        kernel,
        bindings,
        workgroups,
        n,
    }
}

/// Options every submit takes.
struct Options {
    priority: Option<Priority>,
    timeout: Option<Duration>,
    device: Option<usize>,
}

fn options(
    priority: Option<&str>,
    timeout: Option<f64>,
    device: Option<usize>,
) -> PyResult<Options> {
    let priority = match priority {
        None => None,
        Some("low") => Some(Priority::Low),
        Some("normal") => Some(Priority::Normal),
        Some("high") => Some(Priority::High),
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "priority must be \"low\", \"normal\" or \"high\", not {other:?}"
            )));
        }
    };
    Ok(Options {
        priority,
        timeout: timeout.map(seconds).transpose()?,
        device,
    })
}

/// A job parsed (GIL held), not yet built.
struct Prepared {
    steps: Vec<Step>,
    returned: Vec<args::Returned>,
    options: Options,
}

impl Prepared {
    /// Whether building and submitting it should release the GIL (see [`RELEASE_FROM`]; the
    /// engine, too, writes a job into mapped memory on the submitting thread from 32 KiB).
    fn large(&self) -> bool {
        let bytes: usize = (self.steps.iter())
            .flat_map(|s| s.args.iter())
            .map(|(_, d)| d.host_bytes())
            .sum();
        bytes >= RELEASE_FROM
    }

    /// The job: its data copied from the arrays (which the steps keep alive).
    fn job(&self) -> PyResult<wgpu_batch::Job> {
        let mut job = args::build(&self.steps)
            .ok_or_else(|| PyValueError::new_err("a job needs at least one step"))?;
        let o = &self.options;
        if let Some(p) = o.priority {
            job = job.priority(p);
        }
        if let Some(t) = o.timeout {
            job = job.timeout(t);
        }
        if let Some(d) = o.device {
            job = job.on_device(d);
        }
        Ok(job)
    }

    /// Submits it; `wait` for room when the queues are full (else `QueueFull`). A small job
    /// is built and offered with the GIL held; the GIL is released to wait, or for a large job.
    fn submit(
        &self,
        py: Python<'_>,
        engine: &wgpu_batch::Engine,
        wait: bool,
    ) -> PyResult<JobHandle> {
        if self.large() {
            let sent = py.detach(|| {
                let job = self.job()?;
                Ok::<_, PyErr>(if wait {
                    engine.submit(job)
                } else {
                    engine.try_submit(job).map_err(|r| r.error)
                })
            })?;
            return sent.map_err(|e| to_py(py, e));
        }
        match engine.try_submit(self.job()?) {
            Ok(h) => Ok(h),
            Err(r) if wait && r.error == Error::QueueFull => {
                py.detach(|| engine.submit(r.job)).map_err(|e| to_py(py, e))
            }
            Err(r) => Err(to_py(py, r.error)),
        }
    }
}

/// Parses the steps against their kernels (GIL held).
fn prepare(py: Python<'_>, steps: &[Pending], options: Options) -> PyResult<Prepared> {
    let mut parser = args::Parser::default();
    let mut parsed = Vec::with_capacity(steps.len());
    for s in steps {
        let (kernel, bindings) = (s.kernel.get(), s.bindings.bind(py));
        parsed.push(parser.step(py, kernel, bindings, s.workgroups, s.n)?);
    }
    Ok(Prepared {
        steps: parsed,
        returned: parser.returned,
        options,
    })
}

/// The steps of `what` (a `Kernel` with its bindings, or a `Job`).
fn steps_of(
    py: Python<'_>,
    what: &Bound<'_, PyAny>,
    workgroups: Option<(u32, u32, u32)>,
    n: Option<usize>,
    bindings: Option<Bound<'_, PyDict>>,
) -> PyResult<Vec<Pending>> {
    if let Ok(k) = what.cast::<Kernel>() {
        return Ok(vec![pending(
            py,
            k.clone().unbind(),
            workgroups,
            n,
            bindings,
        )]);
    }
    if let Ok(j) = what.cast::<Job>() {
        if workgroups.is_some() || n.is_some() || bindings.is_some_and(|b| !b.is_empty()) {
            return Err(PyTypeError::new_err(
                "a Job carries its own bindings and workgroups: pass them to engine.job() and .then()",
            ));
        }
        return Ok(j.get().steps.iter().map(|s| s.clone_ref(py)).collect());
    }
    Err(PyTypeError::new_err(format!(
        "expected a Kernel or a Job, got {}",
        what.get_type().name()?
    )))
}

impl Engine {
    pub(crate) fn inner(&self) -> &wgpu_batch::Engine {
        &self.inner
    }
}

#[pymethods]
impl Engine {
    /// Opens the engine (adapter enumeration happens here, with the GIL released). Every
    /// setting of the Rust `EngineBuilder` is a keyword; times are in seconds.
    #[new]
    #[pyo3(signature = (*, backends=None, adapter_name=None, devices_per_adapter=None,
        max_batch_jobs=None, max_batch_bytes=None, max_batch_delay=None,
        max_batches_in_flight=None, shared_bind_groups=None, priority_aging=None,
        default_timeout=None, gpu_timeout=None, map_storage=None, fusion=None,
        pool_budget=None, gpu_timing=None, balance=None, queue_capacity=None,
        pipeline_cache_dir=None, reopen_lost_devices=None, max_replays=None,
        keep_read_only_copies=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        backends: Option<Bound<'_, PyAny>>,
        adapter_name: Option<String>,
        devices_per_adapter: Option<usize>,
        max_batch_jobs: Option<usize>,
        max_batch_bytes: Option<u64>,
        max_batch_delay: Option<f64>,
        max_batches_in_flight: Option<usize>,
        shared_bind_groups: Option<bool>,
        priority_aging: Option<f64>,
        default_timeout: Option<f64>,
        gpu_timeout: Option<f64>,
        map_storage: Option<bool>,
        fusion: Option<bool>,
        pool_budget: Option<u64>,
        gpu_timing: Option<bool>,
        balance: Option<&str>,
        queue_capacity: Option<usize>,
        pipeline_cache_dir: Option<std::path::PathBuf>,
        reopen_lost_devices: Option<bool>,
        max_replays: Option<u32>,
        keep_read_only_copies: Option<bool>,
    ) -> PyResult<Engine> {
        let mut b = wgpu_batch::Engine::builder();
        if let Some(backends) = backends {
            b = b.backends(backends_of(&backends)?);
        }
        macro_rules! set {
            ($($name:ident),*) => { $(if let Some(v) = $name { b = b.$name(v); })* };
        }
        set!(
            adapter_name,
            devices_per_adapter,
            max_batch_jobs,
            max_batch_bytes,
            max_batches_in_flight,
            shared_bind_groups,
            map_storage,
            fusion,
            pool_budget,
            gpu_timing,
            queue_capacity,
            pipeline_cache_dir,
            reopen_lost_devices,
            max_replays,
            keep_read_only_copies
        );
        macro_rules! set_seconds {
            ($($name:ident),*) => { $(if let Some(v) = $name { b = b.$name(seconds(v)?); })* };
        }
        set_seconds!(
            max_batch_delay,
            priority_aging,
            default_timeout,
            gpu_timeout
        );
        if let Some(balance) = balance {
            b = b.balance(match balance {
                "weighted" => Balance::Weighted,
                "least_outstanding" => Balance::LeastOutstanding,
                "round_robin" => Balance::RoundRobin,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "balance must be \"weighted\", \"least_outstanding\" or \"round_robin\", not {other:?}"
                    )));
                }
            });
        }
        let inner = py.detach(|| b.build()).map_err(|e| to_py(py, e))?;
        Ok(Engine { inner })
    }

    /// Each device: its index, adapter, backend, type, driver, limits and state, as a dict.
    fn devices<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .devices()
            .iter()
            .map(|d| stats::device_info(py, d))
            .collect()
    }

    /// Counters and latencies per device, as a dict (lock-free; cheap).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats::engine_stats(py, &self.inner.stats())
    }

    /// Compiles WGSL: `entry` picks the entry point when there are several; `constants`
    /// sets `override` values by name. Raises `ShaderError` (with `.line`, `.column`).
    #[pyo3(signature = (wgsl, entry=None, constants=None, label="kernel"))]
    fn kernel(
        &self,
        py: Python<'_>,
        wgsl: String,
        entry: Option<String>,
        constants: Option<std::collections::HashMap<String, f64>>,
        label: &str,
    ) -> PyResult<Kernel> {
        let mut src = wgpu_batch::KernelSource::wgsl(label.to_owned(), wgsl);
        if let Some(entry) = entry {
            src = src.entry_point(entry);
        }
        for (name, value) in constants.unwrap_or_default() {
            src = src.constant(name, value);
        }
        let inner = py
            .detach(|| self.inner.kernel(src))
            .map_err(|e| to_py(py, e))?;
        Ok(Kernel { inner })
    }

    /// A job of several steps: `engine.job(k1, n=..., a=...).then(k2, n=..., ...)`.
    #[pyo3(signature = (kernel, *, workgroups=None, n=None, **bindings))]
    fn job(
        &self,
        py: Python<'_>,
        kernel: Py<Kernel>,
        workgroups: Option<(u32, u32, u32)>,
        n: Option<usize>,
        bindings: Option<Bound<'_, PyDict>>,
    ) -> Job {
        Job {
            steps: vec![pending(py, kernel, workgroups, n, bindings)],
        }
    }

    /// Submits a job and returns its `Handle` at once (waits for room when the queues are
    /// full). `what` is a `Kernel`, with its bindings by WGSL name as keywords and
    /// `workgroups=(x, y, z)` or `n=<invocations>`, or a `Job`.
    #[pyo3(signature = (what, *, workgroups=None, n=None, priority=None, timeout=None, device=None, **bindings))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        what: &Bound<'_, PyAny>,
        workgroups: Option<(u32, u32, u32)>,
        n: Option<usize>,
        priority: Option<&str>,
        timeout: Option<f64>,
        device: Option<usize>,
        bindings: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Handle> {
        let steps = steps_of(py, what, workgroups, n, bindings)?;
        let job = prepare(py, &steps, options(priority, timeout, device)?)?;
        let handle = job.submit(py, &self.inner, true)?;
        Ok(Handle::new(handle, job.returned))
    }

    /// As `submit`, but raises `QueueFull` instead of waiting for room.
    #[pyo3(signature = (what, *, workgroups=None, n=None, priority=None, timeout=None, device=None, **bindings))]
    #[allow(clippy::too_many_arguments)]
    fn try_submit(
        &self,
        py: Python<'_>,
        what: &Bound<'_, PyAny>,
        workgroups: Option<(u32, u32, u32)>,
        n: Option<usize>,
        priority: Option<&str>,
        timeout: Option<f64>,
        device: Option<usize>,
        bindings: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Handle> {
        let steps = steps_of(py, what, workgroups, n, bindings)?;
        let job = prepare(py, &steps, options(priority, timeout, device)?)?;
        let handle = job.submit(py, &self.inner, false)?;
        Ok(Handle::new(handle, job.returned))
    }

    /// Runs a job and returns its outputs (as `submit(...).result()`; on an idle device the
    /// calling thread runs it without queueing).
    #[pyo3(signature = (what, *, workgroups=None, n=None, priority=None, timeout=None, device=None, **bindings))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        what: &Bound<'py, PyAny>,
        workgroups: Option<(u32, u32, u32)>,
        n: Option<usize>,
        priority: Option<&str>,
        timeout: Option<f64>,
        device: Option<usize>,
        bindings: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let steps = steps_of(py, what, workgroups, n, bindings)?;
        let job = prepare(py, &steps, options(priority, timeout, device)?)?;
        let out = py.detach(|| Ok::<_, PyErr>(self.inner.run(job.job()?)))?;
        outputs(py, &out.map_err(|e| to_py(py, e))?, &job.returned)
    }

    /// Copies an array to a resident buffer on one device: `device`, or else the engine's
    /// choice (device 0 for a `read_only` one). Kernels may only read a `read_only` buffer,
    /// and it comes back after a device loss; a writable one is lost with its device.
    #[pyo3(signature = (array, *, device=None, read_only=false))]
    fn upload(
        &self,
        py: Python<'_>,
        array: &Bound<'_, PyAny>,
        device: Option<usize>,
        read_only: bool,
    ) -> PyResult<Buffer> {
        let host = host_bytes(py, array)?;
        let raw = host.raw;
        let made = py.detach(|| {
            let bytes = raw.bytes();
            match (device, read_only) {
                (Some(d), true) => self.inner.upload_read_only_to(d, bytes),
                (Some(d), false) => self.inner.upload_to(d, bytes),
                (None, false) => self.inner.upload(bytes),
                (None, true) => self.inner.upload_read_only_to(0, bytes),
            }
        });
        let inner = made.map_err(|e| to_py(py, e))?;
        Ok(Buffer {
            inner,
            dtype: host.dtype,
            shape: host.shape,
        })
    }

    /// Copies an array to a read-only resident buffer on every device.
    fn replicate(&self, py: Python<'_>, array: &Bound<'_, PyAny>) -> PyResult<Buffer> {
        let host = host_bytes(py, array)?;
        let raw = host.raw;
        let inner = py
            .detach(|| self.inner.replicate(raw.bytes()))
            .map_err(|e| to_py(py, e))?;
        Ok(Buffer {
            inner,
            dtype: host.dtype,
            shape: host.shape,
        })
    }

    /// A resident buffer's contents, as the array it was uploaded from (or as `dtype`).
    #[pyo3(signature = (buffer, dtype=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        buffer: &Buffer,
        dtype: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bytes = py
            .detach(|| self.inner.read::<u8>(&buffer.inner))
            .map_err(|e| to_py(py, e))?;
        let np = numpy(py)?;
        let array = match dtype {
            Some(dtype) => {
                let item: usize = np
                    .call_method1("dtype", (&dtype,))?
                    .getattr("itemsize")?
                    .extract()?;
                np.call_method1("empty", (bytes.len() / item.max(1), dtype))?
            }
            None => np.call_method1("empty", (buffer.shape.bind(py), buffer.dtype.bind(py)))?,
        };
        copy_into(py, &array, &bytes)?;
        Ok(array)
    }

    /// Stops the engine: queued jobs resolve `Shutdown`; later submits raise it.
    fn shutdown(&self, py: Python<'_>) {
        py.detach(|| self.inner.shutdown());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _a: Py<PyAny>, _b: Py<PyAny>, _c: Py<PyAny>) -> bool {
        self.shutdown(py);
        false
    }

    fn __repr__(&self) -> String {
        let names: Vec<String> = self
            .inner
            .devices()
            .iter()
            .map(|d| d.adapter.clone())
            .collect();
        format!("Engine(devices={names:?})")
    }
}

/// The bytes, dtype and shape of an array to upload (C-contiguous, any dtype).
fn host_bytes(py: Python<'_>, array: &Bound<'_, PyAny>) -> PyResult<args::Host> {
    let np = numpy(py)?;
    let arr = np.call_method1("ascontiguousarray", (array,))?;
    let (ptr, _): (usize, bool) = arr
        .getattr("__array_interface__")?
        .get_item("data")?
        .cast::<PyTuple>()?
        .extract()?;
    let len: usize = arr.getattr("nbytes")?.extract()?;
    if len == 0 {
        return Err(to_py(
            py,
            Error::Binding {
                kernel: String::new(),
                binding: u32::MAX,
                problem: "an empty array cannot be a buffer".into(),
            },
        ));
    }
    Ok(args::Host {
        raw: args::Raw::new(ptr, len),
        dtype: arr.getattr("dtype")?.unbind(),
        shape: arr.getattr("shape")?.unbind(),
        owner: arr.unbind(),
    })
}

/// `backends="vulkan"` or a list of names: vulkan, metal, dx12, gl, noop, primary, all.
fn backends_of(value: &Bound<'_, PyAny>) -> PyResult<wgpu_batch::wgpu::Backends> {
    use wgpu_batch::wgpu::Backends;
    let names: Vec<String> = match value.extract::<String>() {
        Ok(one) => one.split(',').map(|s| s.trim().to_lowercase()).collect(),
        Err(_) => value.extract()?,
    };
    let mut all = Backends::empty();
    for name in names {
        all |= match name.to_lowercase().as_str() {
            "vulkan" => Backends::VULKAN,
            "metal" => Backends::METAL,
            "dx12" => Backends::DX12,
            "gl" => Backends::GL,
            "noop" => Backends::NOOP,
            "primary" => Backends::PRIMARY,
            "all" => Backends::all(),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown backend {other:?}: vulkan, metal, dx12, gl, noop, primary or all"
                )));
            }
        };
    }
    Ok(all)
}
