//! The asyncio hand-off. One thread drives every awaited job's future (never touching
//! Python); another delivers what finished: it takes the GIL once for all the jobs that
//! finished meanwhile, turns each outcome into arrays or an exception, and hands each event
//! loop its batch with one `call_soon_threadsafe`, so the loop's thread settles the futures.
//! Taking the GIL per job, against a loop thread that holds it while it runs tasks, made
//! `await` several times slower than a thread per request.

use std::sync::{Arc, Condvar, LazyLock, Mutex};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;
use wgpu_batch::{JobHandle, JobOutput, Result};

use crate::args::Returned;
use crate::errors::to_py;
use crate::output::outputs;

/// The thread that drives awaited jobs' futures.
static DRIVER: LazyLock<futures_executor::ThreadPool> = LazyLock::new(|| {
    futures_executor::ThreadPool::builder()
        .pool_size(1)
        .name_prefix("wgpu-batch-py-await")
        .create()
        // Fails only when the OS has no thread to give; PyO3 turns the panic into a Python
        // exception at the `await`.
        .expect("a thread for awaited jobs")
});

/// A finished job on its way to its event loop.
struct Done {
    outcome: Result<JobOutput>,
    returned: Arc<Vec<Returned>>,
    event_loop: Py<PyAny>,
    fut: Py<PyAny>,
}

/// Finished jobs not yet delivered (protects the list; nothing else is held while taking
/// it), and the condition the deliverer waits on.
static FINISHED: LazyLock<(Mutex<Vec<Done>>, Condvar)> = LazyLock::new(|| {
    std::thread::Builder::new()
        .name("wgpu-batch-py-deliver".into())
        .spawn(deliver)
        // As above: only without a thread to spare, and a Python exception then.
        .expect("a thread for asyncio deliveries");
    (Mutex::new(Vec::new()), Condvar::new())
});

/// `wgpu_batch._aio._settle_all`.
static SETTLE_ALL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Drives `job` and delivers its outcome to `fut` on `event_loop`.
pub(crate) fn await_on(
    job: JobHandle,
    returned: Arc<Vec<Returned>>,
    event_loop: Py<PyAny>,
    fut: Py<PyAny>,
) {
    let _ = &*FINISHED; // the deliverer runs before the first job can finish
    DRIVER.spawn_ok(async move {
        let mut job = job;
        let outcome = (&mut job).await;
        let (list, ready) = &*FINISHED;
        let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
        list.push(Done {
            outcome,
            returned,
            event_loop,
            fut,
        });
        if list.len() == 1 {
            ready.notify_one();
        }
    });
}

/// The deliverer's loop: everything finished so far, under one GIL acquisition.
fn deliver() {
    loop {
        let batch = {
            let (list, ready) = &*FINISHED;
            let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
            while list.is_empty() {
                list = ready.wait(list).unwrap_or_else(|e| e.into_inner());
            }
            std::mem::take(&mut *list)
        };
        // At interpreter exit there is no Python to hand the results to.
        let _ = Python::try_attach(|py| deliver_batch(py, batch));
    }
}

fn deliver_batch(py: Python<'_>, batch: Vec<Done>) -> PyResult<()> {
    let settle_all = SETTLE_ALL.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("wgpu_batch._aio")?
                .getattr("_settle_all")?
                .unbind(),
        )
    })?;
    // Per event loop (usually one), its futures and their outcomes.
    let mut loops: Vec<(Py<PyAny>, Bound<'_, PyList>)> = Vec::new();
    for done in batch {
        let settled = match done
            .outcome
            .map_err(|e| to_py(py, e))
            .and_then(|out| outputs(py, &out, &done.returned))
        {
            Ok(dict) => (done.fut, true, dict.into_any()),
            Err(e) => (done.fut, false, e.into_value(py).into_bound(py).into_any()),
        };
        let at = loops.iter().position(|(l, _)| l.is(&done.event_loop));
        let list = match at {
            Some(i) => &loops[i].1,
            None => {
                loops.push((done.event_loop, PyList::empty(py)));
                &loops[loops.len() - 1].1
            }
        };
        list.append(settled)?;
    }
    for (event_loop, list) in loops {
        // A closed loop (its tasks gone) has nobody to tell.
        let _ = event_loop
            .bind(py)
            .call_method1("call_soon_threadsafe", (settle_all.bind(py), list));
    }
    Ok(())
}
