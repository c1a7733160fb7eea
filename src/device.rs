//! One opened device: its wgpu `Device` + `Queue`, its lock, its request channel and its
//! executor thread, and how it handles loss and shutdown.
//!
//! # Locks, in the order they may be taken
//! 1. The engine's enumeration lock (`engine.rs`): adapter enumeration only. Never held while
//!    taking a device lock, never taken on the submit path.
//! 2. One [`DeviceSlot::state`] lock per device: its pipeline cache and buffer pool. Taken by its
//!    executor twice per batch (take buffers and pipelines; give buffers back) and by
//!    [`Engine::kernel`](crate::Engine::kernel) to insert a pipeline. Never held with another
//!    device's lock, nor across a channel operation, `queue.submit`, `device.poll` or pipeline
//!    creation.
//! 3. [`DeviceSlot::open`]: the channel's owning sender and the executor's join handle, taken
//!    only by shutdown. The executor's pending (priority) queue is its own, with no lock.
//!
//! Submitting takes no lock: it reads atomics ([`Shared`]) to choose a device and sends on that
//! device's bounded channel.
//!
//! # A job's life
//! queued (in the channel) -> pending (moved by the executor into its priority queue, see
//! `queue.rs`; at most `queue_capacity` of them) -> batched (taken by priority; a job past its
//! deadline or cancelled is answered here and never encoded) -> encoded (one command buffer
//! per batch) -> submitted (one `queue.submit`) -> read back (the batch's readback buffer is
//! mapped) -> replied (through the job's [`Responder`]; a job cancelled
//! after encoding gets `Error::Cancelled` instead of its output).
//!
//! Only the executor thread submits to and polls its device: wgpu serializes submits per device
//! anyway, lavapipe's submit blocks until the previous one finishes, and a timed poll racing a
//! submit can panic in wgpu 30.0.2. The executor keeps up to `max_in_flight` batches submitted,
//! so batch N+1 is formed and encoded while batch N runs.
//!
//! The idle path pays two thread hand-offs (caller to executor, executor to caller). An idle
//! executor polls its channel for [`IDLE_SPIN`] before parking, which removes the first wake-up
//! whenever a caller submits again soon after its last result: on lavapipe, the time from
//! submit to encoding drops from about 40 µs to 3 µs and one job at a time runs at 1.09-1.18x
//! the latency of plain one-at-a-time wgpu (`cargo bench --bench throughput -- latency`);
//! 200 µs of spinning measured no better than 50 µs, and no spin 1.22-1.33x. Letting the caller
//! run the batch itself (flat combining) would also remove the second hand-off, but would make
//! submit and poll move between threads; the spin keeps the one-owner rule.
//!
//! # Loss
//! A device-lost callback, an executor panic, or a fatal poll error records the reason in
//! [`Shared::lost`] (a `OnceLock`, not under the device lock, so submit reads it without
//! locking; wgpu runs the lost callback inside poll once the queue is idle, so after a failed
//! batch the executor waits in poll before deciding between `DeviceLost` and the wgpu error).
//! Submit then skips the device. The executor fails what it holds and drains its channel;
//! every dropped [`Responder`] replies `Error::DeviceLost`.
//!
//! # Shutdown
//! The engine refuses new jobs, drops every channel's owning sender and joins the executors.
//! Producers hold only weak senders, upgraded for one send, so a send already under way still
//! lands; the executor sees the channel disconnect once it is empty, finishes its batches in
//! flight and returns. Every queued job therefore runs; none is dropped unanswered.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::batch::{self, Buffers, EncodeStep, Pipeline, Plan, Target};
use crate::buffer::{BufferPool, Role};
use crate::error::{Error, Result};
use crate::job::{Arg, Job, JobOutput, Responder};
use crate::kernel::{BindingInfo, BindingKind, Kernel, KernelInner};
use crate::queue::{Pending, Priority, Queued};
use crate::stats::DeviceStats;

/// Description of one opened device, as [`Engine::devices`](crate::Engine::devices) reports it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The device's index: what [`Job::on_device`](crate::Job::on_device) and
    /// [`JobOutput::device`](crate::JobOutput::device) refer to.
    pub index: usize,
    /// The adapter's name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub adapter: String,
    /// The graphics API behind it.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, CPU, ...
    pub device_type: wgpu::DeviceType,
    /// The driver's name and version.
    pub driver: String,
    /// Largest storage buffer binding, in bytes.
    pub max_storage_binding: u64,
    /// Largest workgroup count per dimension.
    pub max_workgroups_per_dimension: u32,
}

/// Batch formation settings, shared by every executor of an engine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchConfig {
    pub(crate) max_jobs: usize,
    pub(crate) max_bytes: u64,
    pub(crate) max_delay: Duration,
    pub(crate) max_in_flight: usize,
    /// Share one bind group among same-shaped jobs of a kernel through dynamic offsets.
    pub(crate) shared_bind_groups: bool,
    /// How long a lower-priority job waits before it is served first (see `queue.rs`).
    pub(crate) priority_aging: Duration,
    /// Time each job on the GPU with timestamp queries, where the device supports them.
    pub(crate) gpu_timing: bool,
}

/// What producers and the executor share with no lock: loss state and statistics.
pub(crate) struct Shared {
    /// The device's index.
    pub(crate) index: usize,
    /// Set once, when the device is lost; read on the submit path.
    pub(crate) lost: OnceLock<String>,
    /// Lock-free counters.
    pub(crate) stats: DeviceStats,
    /// Jobs the executor has taken off the channel and not yet batched (written by it only).
    pub(crate) pending: AtomicUsize,
}

impl Shared {
    /// Why a job that was dropped unanswered did not run.
    pub(crate) fn drop_error(&self) -> Error {
        match self.lost.get() {
            Some(reason) => Error::DeviceLost {
                device: self.index,
                reason: reason.clone(),
            },
            None => Error::Shutdown,
        }
    }

    /// Records a loss; the first reason wins.
    fn mark_lost(&self, reason: String) {
        if self.lost.set(reason.clone()).is_ok() {
            log::error!("device {} lost: {reason}", self.index);
        }
    }
}

/// A queued job and its reply side.
pub(crate) struct Request {
    pub(crate) job: Job,
    pub(crate) responder: Responder,
    /// The job's deadline, from its own settings or the engine's default timeout.
    pub(crate) deadline: Option<Instant>,
}

/// A pipeline in the cache, with a weak link to its kernel so dead kernels can be evicted.
struct CachedPipeline {
    pipeline: Pipeline,
    kernel: Weak<KernelInner>,
}

/// Everything of a device that needs its lock.
struct DeviceState {
    pipelines: HashMap<u64, CachedPipeline>,
    pool: BufferPool,
}

/// One device and everything that serves it.
pub(crate) struct DeviceSlot {
    pub(crate) info: DeviceInfo,
    pub(crate) limits: wgpu::Limits,
    /// Whether pipelines may use dynamic offsets (see [`BatchConfig::shared_bind_groups`]).
    shared_bind_groups: bool,
    pub(crate) shared: Arc<Shared>,
    /// Producers' end of the request channel (bounded: a full queue blocks `submit`). Weak:
    /// a producer upgrades it for the length of one send; once [`DeviceSlot::open`] is
    /// emptied and those sends finish, the executor sees the channel disconnect.
    pub(crate) tx: flume::WeakSender<Request>,
    device: wgpu::Device,
    /// Pipeline cache and buffer pool (lock order: see the module docs).
    state: Arc<Mutex<DeviceState>>,
    /// The channel's owning sender and the executor thread, while the device is open. Taken
    /// only by [`DeviceSlot::stop`], which holds this lock while joining so a second stop
    /// waits for the first.
    open: Mutex<Option<(flume::Sender<Request>, JoinHandle<()>)>>,
}

impl DeviceSlot {
    /// Wraps an opened device and starts its executor thread.
    pub(crate) fn start(
        info: DeviceInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
        cfg: BatchConfig,
        capacity: usize,
    ) -> Result<DeviceSlot> {
        let shared = Arc::new(Shared {
            index: info.index,
            lost: OnceLock::new(),
            stats: DeviceStats::new(),
            pending: AtomicUsize::new(0),
        });
        install_handlers(&device, &shared);
        let (tx, rx) = flume::bounded(capacity.max(1));
        let state = Arc::new(Mutex::new(DeviceState {
            pipelines: HashMap::new(),
            pool: BufferPool::new(device.limits().max_buffer_size),
        }));
        let executor = Executor {
            shared: shared.clone(),
            device: device.clone(),
            state: state.clone(),
            rx,
            cfg,
            in_flight: VecDeque::new(),
            pending: Pending::new(cfg.priority_aging),
            capacity: capacity.max(1),
            stopping: false,
            queries: cfg
                .gpu_timing
                .then(|| timestamp_queries(&device, cfg.max_jobs))
                .flatten(),
            period_ns: queue.get_timestamp_period(),
            last_done: None,
            align: binding_alignment(&device.limits()),
            queue,
        };
        let weak = tx.downgrade();
        let join = std::thread::Builder::new()
            .name(format!("wgpu-batch-dev{}", info.index))
            .spawn(move || executor.run())
            .map_err(|e| Error::RequestDevice {
                adapter: info.adapter.clone(),
                message: e.to_string(),
            })?;
        let limits = device.limits();
        Ok(DeviceSlot {
            info,
            limits,
            shared_bind_groups: cfg.shared_bind_groups,
            shared,
            tx: weak,
            device,
            state,
            open: Mutex::new(Some((tx, join))),
        })
    }

    /// A buffer on this device holding `bytes`, for a [`DeviceBuffer`](crate::DeviceBuffer).
    /// Written through a mapping at creation, so no submit is involved.
    pub(crate) fn create_resident(&self, bytes: &[u8]) -> Result<wgpu::Buffer> {
        use wgpu::BufferUsages as U;
        let (buffer, caught) = scoped(&self.device, || {
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-batch resident"),
                size: bytes.len() as u64,
                usage: U::STORAGE | U::UNIFORM | U::COPY_SRC | U::COPY_DST,
                mapped_at_creation: true,
            });
            if let Ok(mut view) = buffer.slice(..).get_mapped_range_mut() {
                view.copy_from_slice(bytes);
            }
            buffer.unmap();
            buffer
        });
        match caught {
            Some(e) => Err(self
                .shared
                .lost
                .get()
                .map_or_else(|| e.into(), |_| self.shared.drop_error())),
            None => Ok(buffer),
        }
    }

    /// Jobs waiting in the request queue.
    pub(crate) fn queue_depth(&self) -> usize {
        let pending = self.shared.pending.load(Ordering::Relaxed);
        self.tx.upgrade().map_or(0, |tx| tx.len()) + pending
    }

    /// Whether submit may send here.
    pub(crate) fn usable(&self) -> bool {
        self.shared.lost.get().is_none()
    }

    /// Creates `kernel`'s pipeline on this device (on the calling thread) and caches it.
    pub(crate) fn prepare(&self, kernel: &Kernel) -> Result<Pipeline> {
        cached_pipeline(&self.state, &self.device, kernel, self.shared_bind_groups)
    }

    /// Closes the channel, lets the executor finish what is queued, and joins it. Idempotent.
    pub(crate) fn stop(&self) {
        let mut open = self.open.lock();
        let Some((tx, handle)) = open.take() else {
            return;
        };
        drop(tx);
        if handle.join().is_err() {
            log::error!(
                "device {} executor thread panicked outside its guard",
                self.info.index
            );
        }
    }

    /// Destroys the wgpu device and leaves the detection to wgpu's lost callback, which runs
    /// at the executor's next poll: the path a real driver loss takes.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn destroy_quietly(&self) {
        self.device.destroy();
    }

    /// Destroys the wgpu device and reports the loss at once, as a driver reset would. (wgpu
    /// itself runs the lost callback only at the next poll.)
    #[cfg(feature = "test-hooks")]
    pub(crate) fn destroy(&self) {
        self.device.destroy();
        self.shared
            .mark_lost("destroyed by Engine::lose_device".into());
    }
}

/// Routes wgpu's uncaptured errors to the log (its default handler panics) and device loss to
/// [`Shared::lost`].
fn install_handlers(device: &wgpu::Device, shared: &Arc<Shared>) {
    let index = shared.index;
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        log::error!("device {index}: uncaptured wgpu error: {e}");
    }));
    let weak = Arc::downgrade(shared);
    device.set_device_lost_callback(move |reason, message| {
        if let Some(shared) = weak.upgrade() {
            shared.mark_lost(format!("{reason:?}: {message}"));
        }
    });
}

/// Runs `f` inside validation, out-of-memory and internal error scopes on this thread and
/// returns the first error they caught.
pub(crate) fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> (T, Option<wgpu::Error>) {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let errors = [validation.pop(), oom.pop(), internal.pop()].map(pollster::block_on);
    (value, errors.into_iter().flatten().next())
}

/// `kernel`'s pipeline from the device's cache, created on the calling thread (outside the
/// lock) when missing. Inserting evicts the pipelines of kernels that no longer exist.
fn cached_pipeline(
    state: &Mutex<DeviceState>,
    device: &wgpu::Device,
    kernel: &Kernel,
    shared_bind_groups: bool,
) -> Result<Pipeline> {
    if let Some(p) = state.lock().pipelines.get(&kernel.id()) {
        return Ok(p.pipeline.clone());
    }
    let pipeline = create_pipeline(device, kernel, shared_bind_groups)?;
    let mut state = state.lock();
    state.pipelines.retain(|_, c| c.kernel.strong_count() > 0);
    let cached = CachedPipeline {
        pipeline: pipeline.clone(),
        kernel: Arc::downgrade(kernel.inner()),
    };
    state.pipelines.insert(kernel.id(), cached);
    Ok(pipeline)
}

fn create_pipeline(
    device: &wgpu::Device,
    kernel: &Kernel,
    shared_bind_groups: bool,
) -> Result<Pipeline> {
    let inner = kernel.inner();
    let dynamic = shared_bind_groups && fits_dynamic_offsets(&inner.bindings, &device.limits());
    let (pipeline, err) = scoped(device, || {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&inner.label),
            source: wgpu::ShaderSource::Wgsl(inner.source.clone()),
        });
        let explicit = dynamic.then(|| dynamic_layout(device, &inner.bindings));
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&inner.label),
            layout: explicit.as_ref().map(|(_, layout)| layout),
            module: &module,
            entry_point: Some(&inner.entry_point),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = match explicit {
            Some((group, _)) => Some(group),
            None => (!inner.bindings.is_empty()).then(|| pipeline.get_bind_group_layout(0)),
        };
        Pipeline {
            pipeline,
            layout,
            dynamic,
            kernel: inner.id,
        }
    });
    match err {
        Some(e) => Err(Error::Shader {
            kernel: inner.label.clone(),
            message: e.to_string(),
        }),
        None => Ok(pipeline),
    }
}

/// Whether every binding of a kernel can take a dynamic offset on this device.
fn fits_dynamic_offsets(bindings: &[BindingInfo], limits: &wgpu::Limits) -> bool {
    let uniforms = bindings
        .iter()
        .filter(|b| b.kind == BindingKind::Uniform)
        .count() as u32;
    let storage = bindings.len() as u32 - uniforms;
    !bindings.is_empty()
        && uniforms <= limits.max_dynamic_uniform_buffers_per_pipeline_layout
        && storage <= limits.max_dynamic_storage_buffers_per_pipeline_layout
}

/// A bind group layout with a dynamic offset on every binding, and its pipeline layout.
fn dynamic_layout(
    device: &wgpu::Device,
    bindings: &[BindingInfo],
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|b| wgpu::BindGroupLayoutEntry {
            binding: b.binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b.kind {
                    BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                    BindingKind::StorageRead => {
                        wgpu::BufferBindingType::Storage { read_only: true }
                    }
                    BindingKind::StorageReadWrite => {
                        wgpu::BufferBindingType::Storage { read_only: false }
                    }
                },
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &entries,
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&group)],
        immediate_size: 0,
    });
    (group, layout)
}

/// How long an idle executor polls its channel before parking.
const IDLE_SPIN: Duration = Duration::from_micros(50);

/// A submitted batch waiting for its results.
struct InFlight {
    index: wgpu::SubmissionIndex,
    /// Per job: its responder, its last kernel, and each step's placements.
    jobs: Vec<(Responder, Kernel, Vec<Vec<batch::Placement>>)>,
    buffers: Buffers,
    /// Fires when the readback is mapped (or the work is done, for a batch with no readback).
    done: flume::Receiver<std::result::Result<(), String>>,
    /// Where the jobs' timestamps sit in the readback, if the batch was timed.
    timestamps: Option<u64>,
    /// When its encoding began: the start of its device time, for the cost per job. (Not when
    /// `submit` returned: the GL backend runs the whole batch inside `submit`.)
    submitted: Instant,
}

/// The offset alignment that satisfies both uniform and storage bindings.
fn binding_alignment(limits: &wgpu::Limits) -> u64 {
    limits
        .min_storage_buffer_offset_alignment
        .max(limits.min_uniform_buffer_offset_alignment) as u64
}

/// A query set for timing `max_jobs` jobs a batch, if the device can write timestamps inside
/// compute passes.
fn timestamp_queries(device: &wgpu::Device, max_jobs: usize) -> Option<wgpu::QuerySet> {
    let needed = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
    device.features().contains(needed).then(|| {
        device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("wgpu-batch timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * max_jobs.min(MAX_TIMED_JOBS) as u32,
        })
    })
}

/// A job with the pipelines of its steps, ready to encode.
type Ready = (Request, Vec<Pipeline>);

/// Most jobs a timed batch may hold: two timestamp queries each, within wgpu's 4096.
const MAX_TIMED_JOBS: usize = 2048;

/// The one thread that encodes, submits and polls for one device.
struct Executor {
    shared: Arc<Shared>,
    device: wgpu::Device,
    queue: wgpu::Queue,
    state: Arc<Mutex<DeviceState>>,
    rx: flume::Receiver<Request>,
    cfg: BatchConfig,
    in_flight: VecDeque<InFlight>,
    /// Jobs taken off the channel, waiting for a batch, by priority.
    pending: Pending<Request>,
    /// Most jobs held in `pending` (the engine's queue capacity), so memory stays bounded.
    capacity: usize,
    /// The channel disconnected (shutdown): drain, then return.
    stopping: bool,
    /// Two timestamp queries per job of a batch, where the device supports them in passes.
    queries: Option<wgpu::QuerySet>,
    /// Nanoseconds per timestamp tick.
    period_ns: f32,
    /// When the previous batch completed: where the next one's device time starts at the latest.
    last_done: Option<Instant>,
    /// Offset alignment of every binding in a batch: the stricter of uniform and storage.
    align: u64,
}

impl Queued for Request {
    fn priority(&self) -> Priority {
        self.job.priority
    }
    fn submitted(&self) -> Instant {
        self.responder.submitted()
    }
}

/// Why a job taken from the queue must not run: it was cancelled, or its deadline passed.
fn refusal(r: &Request, now: Instant) -> Option<Error> {
    if r.responder.cancelled() {
        Some(Error::Cancelled)
    } else if r.deadline.is_some_and(|d| now > d) {
        Some(Error::Timeout)
    } else {
        None
    }
}

/// What the executor should do next.
enum Next {
    Batch(Vec<Request>),
    Complete,
    Exit,
}

impl Executor {
    /// The thread's body: serve until stopped, and turn a panic into a device loss.
    fn run(mut self) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.serve())) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            self.shared.mark_lost(format!("executor panicked: {msg}"));
        }
        self.fail_everything();
    }

    fn serve(&mut self) {
        loop {
            if self.shared.lost.get().is_some() {
                return;
            }
            match self.next() {
                Next::Batch(requests) => {
                    self.submit(requests);
                    if self.in_flight.len() >= self.cfg.max_in_flight {
                        self.complete_oldest();
                    }
                }
                Next::Complete => self.complete_oldest(),
                Next::Exit => return,
            }
        }
    }

    /// Blocks for work only when nothing is in flight; otherwise prefers finishing a batch.
    fn next(&mut self) -> Next {
        self.intake();
        if self.pending.is_empty() {
            if !self.in_flight.is_empty() {
                return Next::Complete;
            }
            match self.recv_blocking() {
                Some(r) => self.pending.push(r),
                None => return Next::Exit,
            }
            self.intake();
        }
        let batch = self.gather();
        self.shared
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
        Next::Batch(batch)
    }

    /// Moves what is queued on the channel into `pending`, without blocking.
    fn intake(&mut self) {
        while self.pending.len() < self.capacity {
            match self.rx.try_recv() {
                Ok(r) => self.pending.push(r),
                Err(flume::TryRecvError::Disconnected) => {
                    self.stopping = true;
                    return;
                }
                Err(flume::TryRecvError::Empty) => return,
            }
        }
    }

    /// Waits for the next job. Spins briefly first: a caller that waits on its job's result
    /// often submits the next one right after, and catching it without parking saves a
    /// thread wake-up (tens of microseconds) on the idle path.
    fn recv_blocking(&mut self) -> Option<Request> {
        if self.stopping {
            return None;
        }
        let spin_until = Instant::now() + IDLE_SPIN;
        while Instant::now() < spin_until {
            match self.rx.try_recv() {
                Ok(r) => return Some(r),
                Err(flume::TryRecvError::Disconnected) => break,
                Err(flume::TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
        let r = self.rx.recv().ok();
        self.stopping = r.is_none();
        r
    }

    /// Forms the next batch from `pending`, by priority, up to the batch limits.
    ///
    /// Jobs past their deadline resolve `Error::Timeout` and cancelled jobs `Error::Cancelled`
    /// here, never encoded. With `max_delay`, a batch that is not full stays open for more jobs
    /// until `max_delay` after its oldest job was submitted, or its earliest deadline, whichever
    /// comes first.
    fn gather(&mut self) -> Vec<Request> {
        let mut batch: Vec<Request> = Vec::new();
        let mut bytes = 0;
        loop {
            while batch.len() < self.cfg.max_jobs {
                let now = Instant::now();
                let Some(r) = self.pending.pop(now) else {
                    break;
                };
                if let Some(reason) = refusal(&r, now) {
                    r.responder.send(Err(reason));
                    continue;
                }
                if !batch.is_empty() && bytes + r.job.bytes() > self.cfg.max_bytes {
                    self.pending.push_front(r);
                    return batch;
                }
                bytes += r.job.bytes();
                batch.push(r);
            }
            if batch.is_empty()
                || batch.len() >= self.cfg.max_jobs
                || self.cfg.max_delay.is_zero()
                || self.stopping
            {
                return batch;
            }
            let oldest = batch
                .iter()
                .map(|r| r.responder.submitted())
                .min()
                .unwrap_or_else(Instant::now);
            let due = batch
                .iter()
                .filter_map(|r| r.deadline)
                .fold(oldest + self.cfg.max_delay, Instant::min);
            match self.rx.recv_deadline(due) {
                Ok(r) => {
                    self.pending.push(r);
                    self.intake();
                }
                Err(flume::RecvTimeoutError::Timeout) => return batch,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    self.stopping = true;
                    return batch;
                }
            }
        }
    }

    /// Encodes and submits `requests` as one batch. Jobs whose pipeline cannot be built fail
    /// alone; a batch that wgpu rejects is retried one job at a time so only the culprit fails.
    fn submit(&mut self, requests: Vec<Request>) {
        let mut ready = Vec::with_capacity(requests.len());
        for r in requests {
            r.responder.note_encoding();
            match r
                .job
                .steps
                .iter()
                .map(|s| self.pipeline(&s.kernel))
                .collect::<Result<Vec<_>>>()
            {
                Ok(p) => ready.push((r, p)),
                Err(e) => r.responder.send(Err(e)),
            }
        }
        if ready.is_empty() {
            return;
        }
        if ready.len() == 1 {
            return self.submit_or_fail(ready);
        }
        if let Err((e, ready)) = self.try_submit(ready) {
            let index = self.shared.index;
            log::warn!(
                "device {index}: batch of {} rejected ({e}); retrying one by one",
                ready.len()
            );
            for one in ready {
                self.submit_or_fail(vec![one]);
            }
        }
    }

    /// Submits `ready` as one batch; if wgpu rejects it, every job in it fails with the reason.
    fn submit_or_fail(&mut self, ready: Vec<Ready>) {
        if let Err((e, ready)) = self.try_submit(ready) {
            let err = self.failure(&e);
            for (r, _) in ready {
                r.responder.send(Err(err.clone()));
            }
        }
    }

    /// The error to give a job that failed with `e`: device loss trumps what wgpu said.
    fn failure(&self, e: &Error) -> Error {
        // A lost device reports it through its callback, which wgpu runs inside poll once the
        // device's queue is idle: wait for that (this is the error path only).
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        match self.shared.lost.get() {
            Some(reason) => Error::DeviceLost {
                device: self.shared.index,
                reason: reason.clone(),
            },
            None => e.clone(),
        }
    }

    /// Plans, encodes and submits one batch; on a wgpu error gives the jobs back.
    fn try_submit(&mut self, ready: Vec<Ready>) -> std::result::Result<(), (Error, Vec<Ready>)> {
        let started = Instant::now();
        let args: Vec<Vec<&[Arg]>> = ready
            .iter()
            .map(|(r, _)| r.job.steps.iter().map(|s| s.args.as_slice()).collect())
            .collect();
        let queries = self
            .queries
            .as_ref()
            .filter(|_| ready.len() <= MAX_TIMED_JOBS);
        let plan = Plan::new(&args, self.align, queries.is_some());
        let buffers = self.take_buffers(&plan);
        let jobs: Vec<Vec<EncodeStep<'_>>> = ready
            .iter()
            .zip(&plan.jobs)
            .map(|((r, pipelines), placements)| {
                let steps = r.job.steps.iter().zip(pipelines).zip(placements);
                steps
                    .map(|((s, pipeline), placements)| EncodeStep {
                        args: &s.args,
                        placements,
                        pipeline,
                        workgroups: s.workgroups,
                    })
                    .collect()
            })
            .collect();
        let target = Target {
            device: &self.device,
            queue: &self.queue,
            index: self.shared.index,
            queries,
        };
        let (submitted, caught) = scoped(&self.device, || {
            let cmd = batch::encode(&target, &plan, &jobs, &buffers)?;
            Ok::<_, Error>(self.queue.submit([cmd]))
        });
        drop(jobs);
        let index = match (submitted, caught) {
            (Ok(index), None) => index,
            (Err(e), _) => return Err((e, ready)),
            (Ok(_), Some(e)) => return Err((e.into(), ready)),
        };
        self.shared.stats.record_batch(ready.len());
        let done = self.watch_completion(&buffers);
        let jobs = ready
            .into_iter()
            .zip(plan.jobs)
            .map(|((r, _), p)| {
                let last = r
                    .job
                    .steps
                    .last()
                    .map(|s| s.kernel.clone())
                    .unwrap_or_else(|| r.job.kernel().clone());
                (r.responder, last, p)
            })
            .collect();
        self.in_flight.push_back(InFlight {
            index,
            jobs,
            buffers,
            done,
            timestamps: plan.timestamps,
            submitted: started,
        });
        Ok(())
    }

    /// The cached pipeline for `kernel`, created on this thread if this device has none yet.
    fn pipeline(&self, kernel: &Kernel) -> Result<Pipeline> {
        cached_pipeline(
            &self.state,
            &self.device,
            kernel,
            self.cfg.shared_bind_groups,
        )
    }

    /// The batch's buffers from the pool, under one hold of the device lock.
    fn take_buffers(&self, plan: &Plan) -> Buffers {
        let mut state = self.state.lock();
        let mut take =
            |role, size: u64| (size > 0).then(|| state.pool.take(&self.device, role, size));
        Buffers {
            read: take(Role::Read, plan.read_size),
            rw: take(Role::ReadWrite, plan.rw_size),
            readback: take(Role::Readback, plan.readback_size),
            resolve: plan
                .timestamps
                .and_then(|_| take(Role::Resolve, 16 * plan.jobs.len() as u64)),
            scratch: plan
                .scratch
                .iter()
                .filter_map(|&size| take(Role::Scratch, size))
                .collect(),
        }
    }

    /// A channel that fires when the batch just submitted has its results on the host.
    fn watch_completion(
        &self,
        buffers: &Buffers,
    ) -> flume::Receiver<std::result::Result<(), String>> {
        let (tx, rx) = flume::bounded(1);
        match &buffers.readback {
            Some(readback) => readback.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r.map_err(|e| e.to_string()));
            }),
            None => self.queue.on_submitted_work_done(move || {
                let _ = tx.send(Ok(()));
            }),
        }
        rx
    }

    /// Waits for the oldest batch in flight and replies to its jobs.
    fn complete_oldest(&mut self) {
        let Some(batch) = self.in_flight.pop_front() else {
            return;
        };
        match self.wait_for(&batch) {
            Ok(()) => {
                let now = Instant::now();
                let start = self
                    .last_done
                    .map_or(batch.submitted, |t| t.max(batch.submitted));
                self.shared.stats.record_busy(now - start, batch.jobs.len());
                self.last_done = Some(now);
                self.reply(batch)
            }
            Err(reason) => {
                let err = self.failure(&Error::Wgpu(reason));
                for (responder, _, _) in batch.jobs {
                    responder.send(Err(err.clone()));
                }
            }
        }
    }

    /// Polls the device until the batch's completion callback has run.
    fn wait_for(&self, batch: &InFlight) -> std::result::Result<(), String> {
        for _ in 0..2 {
            if let Ok(result) = batch.done.try_recv() {
                return result;
            }
            let wait = wgpu::PollType::Wait {
                submission_index: Some(batch.index.clone()),
                timeout: None,
            };
            if let Err(e) = self.device.poll(wait) {
                return Err(format!("poll failed: {e}"));
            }
        }
        batch
            .done
            .try_recv()
            .unwrap_or_else(|_| Err("the batch's completion callback never ran".into()))
    }

    /// Copies each job's results out of the mapped readback, replies, and pools the buffers.
    fn reply(&mut self, batch: InFlight) {
        let InFlight {
            jobs,
            buffers,
            timestamps,
            ..
        } = batch;
        let mapped = buffers.readback.as_ref().map(|rb| rb.get_mapped_range(..));
        for (j, (responder, kernel, placements)) in jobs.into_iter().enumerate() {
            let bytes = match &mapped {
                None => Ok(&[][..]),
                Some(Ok(view)) => Ok(&view[..]),
                Some(Err(e)) => Err(self.failure(&Error::Wgpu(e.to_string()))),
            };
            let device = self.shared.index;
            let reply = match bytes {
                _ if responder.cancelled() => Err(Error::Cancelled),
                Ok(b) => {
                    let gpu_time =
                        timestamps.and_then(|at| batch::gpu_time(b, at, j, self.period_ns));
                    if let Some(t) = gpu_time {
                        self.shared.stats.record_gpu_time(t);
                    }
                    Ok(JobOutput {
                        device,
                        kernel,
                        buffers: batch::outputs(b, &placements),
                        gpu_time,
                    })
                }
                Err(e) => Err(e),
            };
            responder.send(reply);
        }
        drop(mapped);
        if let Some(readback) = &buffers.readback {
            readback.unmap();
        }
        self.give_buffers(buffers);
    }

    fn give_buffers(&self, buffers: Buffers) {
        let mut state = self.state.lock();
        let pooled = [
            (Role::Read, buffers.read),
            (Role::ReadWrite, buffers.rw),
            (Role::Readback, buffers.readback),
            (Role::Resolve, buffers.resolve),
        ];
        let scratch = buffers
            .scratch
            .into_iter()
            .map(|b| (Role::Scratch, Some(b)));
        for (role, buffer) in pooled.into_iter().chain(scratch) {
            if let Some(b) = buffer {
                state.pool.give(role, b);
            }
        }
    }

    /// After the executor stops for good: every job it holds or that is still queued replies
    /// through its responder's drop (`DeviceLost` if the device was lost, else `Shutdown`).
    fn fail_everything(&mut self) {
        if self.shared.lost.get().is_none() {
            // A clean stop: batches in flight still finish normally.
            while !self.in_flight.is_empty() {
                self.complete_oldest();
            }
        }
        self.in_flight.clear();
        self.pending.clear();
        while let Ok(request) = self.rx.try_recv() {
            drop(request);
        }
    }
}
