//! Jobs: what a caller submits ([`Job`]), what it gets back ([`JobHandle`], [`JobOutput`]), and
//! the [`Responder`] that guarantees every job resolves exactly once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::device::Shared;
use crate::error::{Error, Result};
use crate::kernel::{BindingKind, Kernel};
use crate::queue::Priority;

/// One dispatch of a kernel with its arguments. Owns its data, so it is `Send + 'static`.
///
/// ```no_run
/// # use wgpu_batch::{Engine, Job, kernels};
/// # let engine = Engine::new()?;
/// let k = engine.kernel(kernels::saxpy())?;
/// let (x, y) = (vec![1.0f32; 1000], vec![2.0f32; 1000]);
/// let out = engine.run(Job::new(&k).uniform(0, &2.0f32).input(1, &x).inout(2, &y).workgroups_for(1000))?;
/// assert_eq!(out.read::<f32>(2)?[0], 4.0);
/// # Ok::<(), wgpu_batch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Job {
    pub(crate) kernel: Kernel,
    pub(crate) args: Vec<Arg>,
    pub(crate) workgroups: [u32; 3],
    pub(crate) device: Option<usize>,
    pub(crate) priority: Priority,
    /// Relative budget, turned into `deadline` at submit.
    pub(crate) timeout: Option<Duration>,
    /// After this instant the job is not encoded any more; it resolves `Error::Timeout`.
    pub(crate) deadline: Option<Instant>,
}

/// One argument bound at `@group(0) @binding(binding)`.
#[derive(Debug, Clone)]
pub(crate) struct Arg {
    pub(crate) binding: u32,
    pub(crate) data: ArgData,
}

/// Bytes an argument uploads: copied into the job, or shared with the caller without a copy.
#[derive(Clone)]
pub(crate) struct Bytes(Arc<dyn AsBytes>);

/// Anything that can lend its contents as bytes.
trait AsBytes: Send + Sync {
    fn as_bytes(&self) -> &[u8];
}

impl AsBytes for Vec<u8> {
    fn as_bytes(&self) -> &[u8] {
        self
    }
}

/// Data shared through an `Arc`, viewed as bytes.
struct SharedSlice<T>(Arc<[T]>);

impl<T: bytemuck::Pod + Send + Sync> AsBytes for SharedSlice<T> {
    fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(Arc::new(v))
    }
}

impl Bytes {
    fn copy_of<T: bytemuck::Pod>(data: &[T]) -> Bytes {
        Bytes::from(bytemuck::cast_slice(data).to_vec())
    }

    fn shared<T: bytemuck::Pod + Send + Sync>(data: Arc<[T]>) -> Bytes {
        Bytes(Arc::new(SharedSlice(data)))
    }
}

/// What an argument carries and where it goes.
#[derive(Debug, Clone)]
pub(crate) enum ArgData {
    /// Uploaded to a `var<uniform>`.
    Uniform(Bytes),
    /// Uploaded to a `var<storage, read>`.
    Input(Bytes),
    /// Uploaded to a `var<storage, read_write>` and read back.
    InOut(Bytes),
    /// A zeroed `var<storage, read_write>` of this many bytes, read back.
    Output(u64),
}

impl ArgData {
    /// Bytes the argument occupies on the device.
    pub(crate) fn size(&self) -> u64 {
        match self {
            ArgData::Uniform(b) | ArgData::Input(b) | ArgData::InOut(b) => b.len() as u64,
            ArgData::Output(n) => *n,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ArgData::Uniform(_) => "uniform",
            ArgData::Input(_) => "input",
            ArgData::InOut(_) => "inout",
            ArgData::Output(_) => "output",
        }
    }

    /// The WGSL declaration this argument needs.
    fn wants(&self) -> BindingKind {
        match self {
            ArgData::Uniform(_) => BindingKind::Uniform,
            ArgData::Input(_) => BindingKind::StorageRead,
            ArgData::InOut(_) | ArgData::Output(_) => BindingKind::StorageReadWrite,
        }
    }
}

impl Job {
    /// A job for `kernel` with no arguments and no workgroups yet.
    pub fn new(kernel: &Kernel) -> Job {
        Job {
            kernel: kernel.clone(),
            args: Vec::new(),
            workgroups: [0, 0, 0],
            device: None,
            priority: Priority::Normal,
            timeout: None,
            deadline: None,
        }
    }

    /// Binds `value` to a `var<uniform>`.
    pub fn uniform<T: bytemuck::Pod>(self, binding: u32, value: &T) -> Job {
        self.arg(
            binding,
            ArgData::Uniform(Bytes::copy_of(std::slice::from_ref(value))),
        )
    }

    /// Uploads `data` to a `var<storage, read>`. Copies `data` into the job; see
    /// [`input_shared`](Job::input_shared) to avoid the copy.
    pub fn input<T: bytemuck::Pod>(self, binding: u32, data: &[T]) -> Job {
        self.arg(binding, ArgData::Input(Bytes::copy_of(data)))
    }

    /// Like [`input`](Job::input), but shares `data` instead of copying it: many jobs can
    /// upload the same `Arc` and the only copy is the upload itself.
    pub fn input_shared<T: bytemuck::Pod + Send + Sync>(
        self,
        binding: u32,
        data: impl Into<Arc<[T]>>,
    ) -> Job {
        self.arg(binding, ArgData::Input(Bytes::shared(data.into())))
    }

    /// Uploads `data` to a `var<storage, read_write>` and reads it back after the dispatch.
    /// Copies `data` into the job; see [`inout_shared`](Job::inout_shared).
    pub fn inout<T: bytemuck::Pod>(self, binding: u32, data: &[T]) -> Job {
        self.arg(binding, ArgData::InOut(Bytes::copy_of(data)))
    }

    /// Like [`inout`](Job::inout), but shares `data` instead of copying it. The device works on
    /// its own copy; `data` itself is never written.
    pub fn inout_shared<T: bytemuck::Pod + Send + Sync>(
        self,
        binding: u32,
        data: impl Into<Arc<[T]>>,
    ) -> Job {
        self.arg(binding, ArgData::InOut(Bytes::shared(data.into())))
    }

    /// Binds a zeroed `var<storage, read_write>` of `len` elements of `T` and reads it back.
    pub fn output<T: bytemuck::Pod>(self, binding: u32, len: usize) -> Job {
        let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        self.arg(binding, ArgData::Output(bytes))
    }

    /// Dispatches `x * y * z` workgroups.
    pub fn workgroups(mut self, x: u32, y: u32, z: u32) -> Job {
        self.workgroups = [x, y, z];
        self
    }

    /// Enough workgroups along x for `n` invocations: `ceil(n / workgroup_size.x)`.
    pub fn workgroups_for(self, n: usize) -> Job {
        let per = self.kernel.workgroup_size()[0].max(1) as u64;
        let groups = (n as u64).div_ceil(per).min(u32::MAX as u64) as u32;
        self.workgroups(groups, 1, 1)
    }

    /// Runs the job on device `index` of [`Engine::devices`](crate::Engine::devices) only.
    pub fn on_device(mut self, index: usize) -> Job {
        self.device = Some(index);
        self
    }

    /// Sets the job's priority (default [`Priority::Normal`]); see [`Priority`] for the rule.
    pub fn priority(mut self, priority: Priority) -> Job {
        self.priority = priority;
        self
    }

    /// Gives the job at most `budget` from its submission until it is encoded into a batch;
    /// after that it resolves [`Error::Timeout`] without running. Overrides the engine's
    /// [`default_timeout`](crate::EngineBuilder::default_timeout).
    pub fn timeout(mut self, budget: Duration) -> Job {
        self.timeout = Some(budget);
        self
    }

    /// Like [`timeout`](Job::timeout), with an absolute instant. The earlier of the two wins.
    pub fn deadline(mut self, at: Instant) -> Job {
        self.deadline = Some(at);
        self
    }

    /// The kernel this job runs.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    fn arg(mut self, binding: u32, data: ArgData) -> Job {
        self.args.push(Arg { binding, data });
        self
    }

    /// Bytes this job uploads plus bytes it binds read-write: its share of a batch's memory.
    pub(crate) fn bytes(&self) -> u64 {
        self.args.iter().map(|a| a.data.size()).sum()
    }

    /// Checks the arguments against the kernel's reflected bindings and `limits`. No lock.
    pub(crate) fn validate(&self, limits: &wgpu::Limits) -> Result<()> {
        let k = &self.kernel;
        for (i, arg) in self.args.iter().enumerate() {
            if self.args[..i].iter().any(|a| a.binding == arg.binding) {
                return Err(Error::binding(
                    k.label(),
                    arg.binding,
                    "given more than once",
                ));
            }
            self.validate_arg(arg, limits)?;
        }
        if let Some(missing) = k
            .bindings()
            .iter()
            .find(|b| !self.args.iter().any(|a| a.binding == b.binding))
        {
            let problem = format!("missing: the kernel declares it as {:?}", missing.kind);
            return Err(Error::binding(k.label(), missing.binding, problem));
        }
        self.validate_workgroups(limits)
    }

    fn validate_arg(&self, arg: &Arg, limits: &wgpu::Limits) -> Result<()> {
        let k = &self.kernel;
        let Some(info) = k.binding(arg.binding) else {
            return Err(Error::binding(
                k.label(),
                arg.binding,
                "unknown: the entry point does not use this binding",
            ));
        };
        if arg.data.wants() != info.kind {
            let problem = format!(
                "{} given, but the kernel declares {:?}",
                arg.data.name(),
                info.kind
            );
            return Err(Error::binding(k.label(), arg.binding, problem));
        }
        let size = arg.data.size();
        let (what, limit) = match info.kind {
            BindingKind::Uniform => (
                "uniform binding size",
                limits.max_uniform_buffer_binding_size,
            ),
            _ => (
                "storage binding size",
                limits.max_storage_buffer_binding_size,
            ),
        };
        if size > limit.min(limits.max_buffer_size) {
            return Err(Error::Limit {
                what,
                requested: size,
                limit: limit.min(limits.max_buffer_size),
            });
        }
        info.check_size(size)
            .map_err(|p| Error::binding(k.label(), arg.binding, p))
    }

    fn validate_workgroups(&self, limits: &wgpu::Limits) -> Result<()> {
        let [x, y, z] = self.workgroups;
        if x == 0 || y == 0 || z == 0 {
            return Err(Error::Workgroups {
                kernel: self.kernel.label().to_owned(),
                x,
                y,
                z,
            });
        }
        let limit = limits.max_compute_workgroups_per_dimension;
        match self.workgroups.into_iter().max() {
            Some(m) if m > limit => Err(Error::Limit {
                what: "workgroups per dimension",
                requested: m as u64,
                limit: limit as u64,
            }),
            _ => Ok(()),
        }
    }
}

/// The results of a finished job: the contents of its `inout` and `output` bindings.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub(crate) device: usize,
    pub(crate) kernel: Kernel,
    pub(crate) buffers: Vec<(u32, Vec<u8>)>,
}

impl JobOutput {
    /// The index of the device that ran the job.
    pub fn device(&self) -> usize {
        self.device
    }

    /// The kernel the job ran.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The raw bytes read back from `binding`, if the job read it back.
    pub fn bytes(&self, binding: u32) -> Option<&[u8]> {
        self.buffers
            .iter()
            .find(|(b, _)| *b == binding)
            .map(|(_, v)| v.as_slice())
    }

    /// The contents of `binding` as elements of `T`.
    pub fn read<T: bytemuck::Pod>(&self, binding: u32) -> Result<Vec<T>> {
        let bytes = self.bytes(binding).ok_or_else(|| Error::Binding {
            kernel: self.kernel.label().to_owned(),
            binding,
            problem: "not an inout or output binding of this job".into(),
        })?;
        if bytes.len() % std::mem::size_of::<T>().max(1) != 0 {
            let problem = format!(
                "{} bytes are not a whole number of {}-byte elements",
                bytes.len(),
                std::mem::size_of::<T>()
            );
            return Err(Error::Binding {
                kernel: self.kernel.label().to_owned(),
                binding,
                problem,
            });
        }
        Ok(bytemuck::pod_collect_to_vec(bytes))
    }
}

type Reply = Result<JobOutput>;

/// The device side of a job's reply channel. Sends exactly once: [`Responder::send`], or on
/// drop (a job dropped by a shutdown, a lost device or a panic) an error saying why.
pub(crate) struct Responder {
    tx: Option<flume::Sender<Reply>>,
    shared: Arc<Shared>,
    submitted: Instant,
    /// Set by [`JobHandle::cancel`].
    cancelled: Arc<AtomicBool>,
}

impl Responder {
    /// Delivers the result and counts it. A caller that stopped waiting is normal.
    pub(crate) fn send(mut self, reply: Reply) {
        self.deliver(reply);
    }

    /// Records how long the job waited in the queue; called when its batch is encoded.
    pub(crate) fn note_encoding(&self) {
        self.shared
            .stats
            .record_queue_wait(self.submitted.elapsed());
    }

    /// When the job was submitted.
    pub(crate) fn submitted(&self) -> Instant {
        self.submitted
    }

    /// Whether the caller cancelled the job.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Drops the responder without replying or counting: the job never entered a queue.
    pub(crate) fn disarm(mut self) {
        self.tx = None;
    }

    fn deliver(&mut self, reply: Reply) {
        if let Some(tx) = self.tx.take() {
            self.shared
                .stats
                .record_done(reply.is_ok(), self.submitted.elapsed());
            let _ = tx.send(reply);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let err = self.shared.drop_error();
            self.deliver(Err(err));
        }
    }
}

/// A submitted job. Block on it with [`wait`](JobHandle::wait), poll it with
/// [`try_get`](JobHandle::try_get), or `.await` it on any executor.
///
/// The result is delivered once: after one call returned it, later calls give
/// [`Error::ResultTaken`].
#[derive(Debug)]
pub struct JobHandle {
    rx: flume::Receiver<Reply>,
    fut: Option<flume::r#async::RecvFut<'static, Reply>>,
    device: usize,
    cancelled: Arc<AtomicBool>,
}

impl JobHandle {
    /// A handle and its responder, for a job queued on device `device`.
    pub(crate) fn pair(device: usize, shared: Arc<Shared>) -> (JobHandle, Responder) {
        let (tx, rx) = flume::bounded(1);
        let cancelled = Arc::new(AtomicBool::new(false));
        let responder = Responder {
            tx: Some(tx),
            shared,
            submitted: Instant::now(),
            cancelled: cancelled.clone(),
        };
        (
            JobHandle {
                rx,
                fut: None,
                device,
                cancelled,
            },
            responder,
        )
    }

    /// Cancels the job. One not yet encoded into a batch is removed and never runs; one already
    /// encoded finishes on the device and its result is dropped. Either way the handle
    /// resolves [`Error::Cancelled`], unless the result was delivered before the call.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// The index of the device the job was queued on.
    pub fn device(&self) -> usize {
        self.device
    }

    /// Blocks until the job resolves.
    pub fn wait(self) -> Result<JobOutput> {
        self.rx.recv().unwrap_or(Err(Error::ResultTaken))
    }

    /// Blocks for at most `timeout`. On [`Error::Timeout`] the job keeps running and the handle
    /// stays usable.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<JobOutput> {
        match self.rx.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(flume::RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(flume::RecvTimeoutError::Disconnected) => Err(Error::ResultTaken),
        }
    }

    /// The result if the job has resolved, without blocking.
    pub fn try_get(&self) -> Option<Result<JobOutput>> {
        match self.rx.try_recv() {
            Ok(reply) => Some(reply),
            Err(flume::TryRecvError::Empty) => None,
            Err(flume::TryRecvError::Disconnected) => Some(Err(Error::ResultTaken)),
        }
    }
}

impl Future for JobHandle {
    type Output = Result<JobOutput>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let fut = this
            .fut
            .get_or_insert_with(|| this.rx.clone().into_recv_async());
        Pin::new(fut)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::ResultTaken)))
    }
}
