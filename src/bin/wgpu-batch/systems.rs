//! The systems `bench` compares, behind one interface: plain wgpu shared by every thread
//! behind one lock, and the engine (unfused or fused) with a window of jobs outstanding per
//! thread. Each runs SAXPY jobs from T threads for a given time and counts the jobs done.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wgpu_batch::{Engine, Job, Kernel, kernels};

use crate::plain::Plain;
use crate::{Backend, INSTALL_HINT, Result, fail};

/// The SAXPY scale factor of every job.
const A: f32 = 2.0;

/// Jobs each thread keeps outstanding on the engine: enough that a batch is always forming
/// while another runs, as an application submitting work asynchronously would.
pub const WINDOW: usize = 32;

/// One section's inputs and the CPU's answer.
pub struct Work {
    x: Vec<f32>,
    y: Vec<f32>,
    /// The same inputs, shared by every engine job (`input_shared`), so the engine, like the
    /// plain runner, copies them once: into the upload.
    xs: Arc<[f32]>,
    ys: Arc<[f32]>,
    want: Vec<f32>,
}

impl Work {
    /// Inputs of `n` elements whose products are exact in f32, so results compare exactly.
    pub fn new(n: usize) -> Work {
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 13) as f32).collect();
        let want = x.iter().zip(&y).map(|(x, y)| A * x + y).collect();
        Work {
            xs: x.clone().into(),
            ys: y.clone().into(),
            x,
            y,
            want,
        }
    }

    /// Checks a result: its length always, its values when the backend executes kernels
    /// (`exact`; noop runs nothing and returns whatever the buffer held).
    fn check(&self, system: &str, got: &[f32], exact: bool) -> Result<()> {
        if got.len() != self.want.len() {
            return Err(fail(format!(
                "{system}: got {} elements, expected {}",
                got.len(),
                self.want.len()
            )));
        }
        match got.iter().zip(&self.want).position(|(g, w)| g != w) {
            Some(i) if exact => Err(fail(format!(
                "{system}: wrong result at element {i}: got {}, expected {} (2 * {} + {})",
                got[i], self.want[i], self.x[i], self.y[i]
            ))),
            _ => Ok(()),
        }
    }
}

/// A system under test.
pub trait System: Sync {
    /// Its name in tables, files and the chart's legend.
    fn name(&self) -> &str;
    /// Runs jobs from `threads` threads for about `dur`; returns the jobs completed.
    fn run_for(&self, work: &Work, threads: usize, dur: Duration) -> Result<u64>;
    /// Runs one job and compares it with the CPU's answer.
    fn verify(&self, work: &Work, exact: bool) -> Result<()>;
}

/// Runs `body` on `threads` scoped threads and sums what they return.
fn on_threads(threads: usize, body: impl Fn(usize) -> Result<u64> + Sync) -> Result<u64> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let body = &body;
                s.spawn(move || body(t))
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h
                .join()
                .map_err(|_| fail("a benchmark thread panicked"))??;
        }
        Ok(total)
    })
}

/// Plain wgpu, one job at a time, T threads sharing it through one mutex: what "make it
/// thread-safe" usually means first.
pub struct Locked {
    plain: Mutex<Plain>,
}

impl Locked {
    pub fn new(backend: Backend) -> Result<Locked> {
        Ok(Locked {
            plain: Mutex::new(
                Plain::new(backend.backends()).map_err(|e| fail(format!("{e}; {INSTALL_HINT}")))?,
            ),
        })
    }

    fn one(&self, work: &Work) -> Result<Vec<f32>> {
        // A poisoned lock means another thread panicked mid-job; the device state is still
        // coherent (each job is self-contained), so carry on.
        let mut plain = self.plain.lock().unwrap_or_else(|p| p.into_inner());
        plain.run(A, &work.x, &work.y).map_err(fail)
    }
}

impl System for Locked {
    fn name(&self) -> &str {
        "plain wgpu, global lock"
    }

    fn run_for(&self, work: &Work, threads: usize, dur: Duration) -> Result<u64> {
        let end = Instant::now() + dur;
        on_threads(threads, |_| {
            let mut done = 0;
            while Instant::now() < end {
                self.one(work)?;
                done += 1;
            }
            Ok(done)
        })
    }

    fn verify(&self, work: &Work, exact: bool) -> Result<()> {
        work.check(self.name(), &self.one(work)?, exact)
    }
}

/// The engine: each thread keeps [`WINDOW`] jobs outstanding and waits for the oldest.
pub struct Engined {
    engine: Engine,
    kernel: Kernel,
    name: &'static str,
}

impl Engined {
    /// An engine on `backend`, with or without kernel fusion.
    pub fn new(backend: Backend, fusion: bool) -> Result<Engined> {
        let engine = Engine::builder()
            .backends(backend.backends())
            .fusion(fusion)
            .build()?;
        let kernel = engine.kernel(kernels::saxpy())?;
        let name = if fusion {
            "engine, fused"
        } else {
            "engine, unfused"
        };
        Ok(Engined {
            engine,
            kernel,
            name,
        })
    }

    /// The adapter the engine's first device is on, for titles.
    pub fn adapter(&self) -> String {
        self.engine
            .devices()
            .first()
            .map_or_else(String::new, |d| d.adapter.clone())
    }

    fn job(&self, work: &Work) -> Job {
        Job::new(&self.kernel)
            .uniform(0, &A)
            .input_shared(1, work.xs.clone())
            .inout_shared(2, work.ys.clone())
            .workgroups_for(work.ys.len())
    }
}

impl System for Engined {
    fn name(&self) -> &str {
        self.name
    }

    fn run_for(&self, work: &Work, threads: usize, dur: Duration) -> Result<u64> {
        let end = Instant::now() + dur;
        on_threads(threads, |_| {
            let mut window = VecDeque::with_capacity(WINDOW);
            let mut done = 0;
            while Instant::now() < end {
                while window.len() < WINDOW {
                    window.push_back(self.engine.submit(self.job(work))?);
                }
                if let Some(oldest) = window.pop_front() {
                    oldest.wait()?;
                    done += 1;
                }
            }
            // The jobs still outstanding count too: the time to finish them is measured.
            for h in window {
                h.wait()?;
                done += 1;
            }
            Ok(done)
        })
    }

    fn verify(&self, work: &Work, exact: bool) -> Result<()> {
        let out = self.engine.submit(self.job(work))?.wait()?;
        work.check(self.name(), &out.read::<f32>(2)?, exact)
    }
}
