//! `Handle`: a submitted job. `result()` blocks with the GIL released; `await handle` resolves
//! an asyncio future on its loop's thread (see `aio.rs`), so the loop never blocks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use wgpu_batch::{Canceller, Error, JobHandle, JobOutput};

use crate::args::{Returned, seconds};
use crate::errors::to_py;
use crate::output::outputs;

/// How long one wait lasts before Python gets to run its signal handlers (Ctrl-C).
const SLICE: Duration = Duration::from_millis(50);

/// A submitted job: `result(timeout=None)`, `cancel()`, or `await` it.
#[pyclass(frozen, module = "wgpu_batch")]
pub(crate) struct Handle {
    /// The job's handle until a wait or an await takes it (a wait puts it back on timeout).
    /// The lock guards only the slot: taken with the GIL held (or not), never across a wait,
    /// and nothing else is locked while it is held.
    job: Mutex<Option<JobHandle>>,
    /// The job went to an awaiting task (its slot stays empty).
    awaited: std::sync::atomic::AtomicBool,
    canceller: Canceller,
    device: usize,
    returned: Arc<Vec<Returned>>,
}

impl Handle {
    pub(crate) fn new(job: JobHandle, returned: Vec<Returned>) -> Handle {
        Handle {
            canceller: job.canceller(),
            device: job.device(),
            job: Mutex::new(Some(job)),
            awaited: std::sync::atomic::AtomicBool::new(false),
            returned: Arc::new(returned),
        }
    }

    fn take(&self) -> PyResult<JobHandle> {
        let mut slot = self.job.lock().unwrap_or_else(|e| e.into_inner());
        slot.take().ok_or_else(|| {
            PyRuntimeError::new_err(if self.awaited.load(std::sync::atomic::Ordering::Relaxed) {
                "this handle was awaited: its result goes to the awaiting task"
            } else {
                "another thread is waiting on this handle"
            })
        })
    }

    fn put_back(&self, job: JobHandle) {
        *self.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
    }
}

#[pymethods]
impl Handle {
    /// The job's outputs (inouts and outputs) as numpy arrays keyed by binding name. Blocks,
    /// with the GIL released, at most `timeout` seconds (None: until the job resolves);
    /// raises `Timeout` then (the job keeps running; call again), or the job's error.
    #[pyo3(signature = (timeout=None))]
    fn result<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        let until = match timeout {
            Some(t) => Instant::now().checked_add(seconds(t)?),
            None => None,
        };
        let job = self.take()?;
        let outcome = wait(py, &job, until);
        // Back in its slot whatever happened: a later call gets `ResultTaken` from it, or
        // (after a timeout or Ctrl-C) waits again.
        self.put_back(job);
        outcome.and_then(|out| outputs(py, &out, &self.returned))
    }

    /// Cancels the job: one not yet running never runs and resolves `Cancelled`.
    fn cancel(&self) {
        self.canceller.cancel();
    }

    /// The device the job was queued on.
    #[getter]
    fn device(&self) -> usize {
        self.device
    }

    /// `await handle`: the outputs, as `result()` returns them. Cancelling the awaiting task
    /// cancels the job.
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let aio = py.import("wgpu_batch._aio")?;
        let fut = aio.call_method1("future_for", (slf,))?;
        fut.call_method0("__await__")
    }

    /// Starts driving the job to `fut` on `loop` (called by `wgpu_batch._aio.future_for`).
    fn _notify(&self, event_loop: Py<PyAny>, fut: Py<PyAny>) -> PyResult<()> {
        let job = self.take()?;
        self.awaited
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::aio::await_on(job, self.returned.clone(), event_loop, fut);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("Handle(device={})", self.device)
    }
}

/// Waits for `job` until `until` (None: no bound) with the GIL released, in slices so that
/// Ctrl-C interrupts it; a job done already is taken without giving up the GIL.
fn wait(py: Python<'_>, job: &JobHandle, until: Option<Instant>) -> PyResult<JobOutput> {
    if let Some(outcome) = job.try_get() {
        return outcome.map_err(|e| to_py(py, e));
    }
    loop {
        let now = Instant::now();
        let slice = until.map_or(SLICE, |u| u.saturating_duration_since(now).min(SLICE));
        match py.detach(|| job.wait_timeout(slice)) {
            Err(Error::Timeout) if until.is_none_or(|u| Instant::now() < u) => {
                py.check_signals()?; // Ctrl-C
            }
            outcome => return outcome.map_err(|e| to_py(py, e)),
        }
    }
}
