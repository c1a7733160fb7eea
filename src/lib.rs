//! # wgpu-batch
//!
//! A vendor-neutral GPU compute runtime on [wgpu]: many threads submit WGSL compute jobs, and
//! every device batches them independently — many dispatches in one command buffer, one
//! `queue.submit` — behind its own lock and channel. A caller blocked on a job runs its
//! device's batches itself when nobody else is; each device's executor thread is the backstop.
//!
//! ```no_run
//! use wgpu_batch::{Engine, kernels};
//!
//! let engine = Engine::new()?;                           // every usable adapter
//! let saxpy = engine.kernel(kernels::saxpy())?;          // validated with naga, pipelines built
//! let x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
//! let y = vec![1.0f32; 1000];
//! let out = engine.run(kernels::saxpy_job(&saxpy, 2.0, &x, &y))?;  // submit + wait
//! assert_eq!(out.read::<f32>(2)?[10], 21.0);
//! # Ok::<(), wgpu_batch::Error>(())
//! ```
//!
//! ## Design
//! - [`Engine`] enumerates adapters and opens devices under the one process-wide lock;
//!   nothing on the submit path takes it.
//! - Each device has its own queue of requests (a bounded channel), one batch loop that forms
//!   batches, its own pipeline cache and buffer pool. One thread at a time submits to and
//!   polls a device: whoever holds its submitter lock, which is a caller blocked in
//!   [`JobHandle::wait`] (it runs the queued jobs, its own and others', as one batch, with no
//!   thread hand-off), a caller of [`Engine::run`] on an idle device, or the device's executor
//!   thread, which runs what no caller has driven for 200 µs and what `.await`ing callers
//!   wait for. The lock order, who runs a batch, a job's life, loss and shutdown are written
//!   down in the `device` module.
//! - A batch is planned as plain data, then encoded into one command buffer (see the `batch`
//!   module for its memory layout and why jobs cannot see each other's data).
//! - **Kernel fusion** (on by default, [`EngineBuilder::fusion`]): the small jobs of one
//!   kernel in a batch run as *one* dispatch of the kernel rewritten with naga at
//!   [`Engine::kernel`]: each job finds its own data, workgroup ids and lengths in a job table,
//!   and every access stays inside its own elements, bounded as the device bounds it unfused.
//!   A kernel the rewrite cannot prove safe runs unfused and says why
//!   ([`Kernel::unfused_reason`]); [`DeviceStatsSnapshot::jobs_per_dispatch`] shows the effect.
//! - The batch loop serves the queue by [`Priority`] as virtual deadlines (priority ages one
//!   level per [`EngineBuilder::priority_aging`], so none starves), never encodes a job that
//!   was cancelled or whose deadline passed, and holds a partial batch open for at most
//!   `max_batch_delay`, never past a job's deadline.
//! - Every submitted job resolves exactly once, with its output or a typed [`Error`]: one
//!   ticket per job whose state only moves forward (the `reply` module). A waiting caller gets
//!   its deadline error at the deadline; a watchdog fails a device whose work stops making
//!   progress ([`EngineBuilder::gpu_timeout`]); shutdown, device loss and panics of the batch
//!   loop answer every job.
//! - A lost device is reopened ([`EngineBuilder::reopen_lost_devices`], on by default):
//!   a new device on the same adapter takes its place (an adopted one is handed over by the
//!   application, [`Engine::replace_device`]), the jobs queued on the lost one move to another
//!   device or to it, jobs that were running run again when that is safe, read-only resident
//!   buffers come back, and a budget stops a device that keeps failing ([`DeviceInfo::state`]).
//! - Device choice ([`Balance`]) is by fewest outstanding jobs, or weighted by each device's
//!   measured cost per job, using atomics only.
//! - Data can stay on the GPU ([`DeviceBuffer`]), and one [`Job`] can run several kernels in
//!   one submission, passing intermediates through GPU-only scratch buffers.
//!
//! ## Features
//! - `metrics`: every device's statistics published through the `metrics` facade
//!   (`EngineBuilder::metrics_interval`), so any exporter serves them.
//! - `tracing`: a span per job (submit to reply) and per batch (formed to completed).
//! - `cli`: the `wgpu-batch` command-line tool (`info`, `check`, `bench`).
//!
//! Without features the engine builds with wgpu, naga and a few small crates only.
//!
//! [wgpu]: https://wgpu.rs
// One exception, `kernel/warm.rs`: wgpu marks `create_pipeline_cache` unsafe (its data must be what
// wgpu wrote); everything else is safe code.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod adapters;
mod balance;
mod batch;
mod builder;
mod config;
mod device;
mod engine;
mod error;
mod fleet;
mod job;
mod kernel;
pub mod kernels;
mod memory;
mod observe;
#[cfg(feature = "nats")]
pub mod remote;
mod station;
pub mod testing;

pub use adapters::{DeviceInfo, DeviceState};
pub use balance::Balance;
pub use builder::{DEFAULT_PRIORITY_AGING, EngineBuilder};
pub use device::reply::{Canceller, JobHandle};
pub use engine::Engine;
pub use error::{Error, Result};
pub use job::{Job, JobOutput, Priority, Rejected};
pub use kernel::binding::{BindingInfo, BindingKind};
pub use kernel::compile::{Kernel, KernelSource};
pub use kernel::fusion::{FusedBinding, Shape};
pub use memory::buffer::DeviceBuffer;
pub use observe::stats::{DeviceStatsSnapshot, EngineStats};
pub use wgpu;
