//! Jobs: what a caller submits ([`Job`]) and what a finished one gives back ([`JobOutput`]).
//! How the result travels back is in `device/reply.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::kernel::binding::BindingKind;
use crate::kernel::compile::Kernel;
use crate::memory::buffer::DeviceBuffer;
use crate::memory::host::Readback;

/// How urgent a job is. Higher priorities are taken into the next batch first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Bulk work: runs when nothing more urgent is waiting (or once it has aged).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Latency-sensitive work: ahead of everything that has not aged.
    High,
}

/// Work for one device: one dispatch of a kernel with its arguments, or several kernels in
/// order ([`then`](Job::then)) that pass data through GPU-only [`scratch`](Job::scratch)
/// buffers. Owns its data, so it is `Send + 'static`.
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
    /// At least one; argument and workgroup methods apply to the last.
    pub(crate) steps: Vec<Step>,
    pub(crate) device: Option<usize>,
    pub(crate) priority: Priority,
    /// Relative budget, turned into a deadline at submit.
    pub(crate) timeout: Option<Duration>,
    /// After this instant the job is not encoded any more; it resolves
    /// `Error::DeadlineExpired`.
    pub(crate) deadline: Option<Instant>,
}

/// One dispatch of a multi-step job.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) kernel: Kernel,
    pub(crate) args: Vec<Arg>,
    pub(crate) workgroups: [u32; 3],
}

impl Step {
    fn new(kernel: &Kernel) -> Step {
        Step {
            kernel: kernel.clone(),
            args: Vec::new(),
            workgroups: [0, 0, 0],
        }
    }
}

/// One argument bound at `@group(0) @binding(binding)`.
#[derive(Debug, Clone)]
pub(crate) struct Arg {
    pub(crate) binding: u32,
    pub(crate) data: ArgData,
}

/// Bytes an argument uploads: copied into the job (one allocation), or shared with the
/// caller without a copy.
#[derive(Clone)]
pub(crate) enum Bytes {
    /// A copy the job owns.
    Owned(Arc<[u8]>),
    /// The caller's data, shared (`input_shared`, `inout_shared`).
    Shared(Arc<dyn AsBytes>),
}

/// Anything that can lend its contents as bytes.
pub(crate) trait AsBytes: Send + Sync {
    fn as_bytes(&self) -> &[u8];
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
        match self {
            Bytes::Owned(b) => b,
            Bytes::Shared(s) => s.as_bytes(),
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes::Owned(v.into())
    }
}

impl Bytes {
    fn copy_of<T: bytemuck::Pod>(data: &[T]) -> Bytes {
        Bytes::Owned(Arc::from(bytemuck::cast_slice::<T, u8>(data)))
    }

    fn shared<T: bytemuck::Pod + Send + Sync>(data: Arc<[T]>) -> Bytes {
        Bytes::Shared(Arc::new(SharedSlice(data)))
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
    /// A zeroed buffer that lives only on the device for the length of the job; every step
    /// naming the same `id` binds the same buffer.
    Scratch { id: u32, size: u64 },
    /// A resident buffer, bound whole.
    Resident(DeviceBuffer),
}

impl ArgData {
    /// Bytes the argument occupies on the device.
    pub(crate) fn size(&self) -> u64 {
        match self {
            ArgData::Uniform(b) | ArgData::Input(b) | ArgData::InOut(b) => b.len() as u64,
            ArgData::Output(n) | ArgData::Scratch { size: n, .. } => *n,
            ArgData::Resident(b) => b.size(),
        }
    }

    /// The bytes an uploaded argument carries (uniform, input, inout).
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        match self {
            ArgData::Uniform(b) | ArgData::Input(b) | ArgData::InOut(b) => Some(b),
            _ => None,
        }
    }

    /// Bytes the argument adds to a batch's pooled buffers (resident buffers add none).
    pub(crate) fn batch_bytes(&self) -> u64 {
        match self {
            ArgData::Resident(_) => 0,
            other => other.size(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ArgData::Uniform(_) => "uniform",
            ArgData::Input(_) => "input",
            ArgData::InOut(_) => "inout",
            ArgData::Output(_) => "output",
            ArgData::Scratch { .. } => "scratch",
            ArgData::Resident(_) => "buffer",
        }
    }

    /// Whether the argument can bind to a binding declared as `kind`.
    fn fits(&self, kind: BindingKind) -> bool {
        match self {
            ArgData::Uniform(_) => kind == BindingKind::Uniform,
            ArgData::Input(_) => kind == BindingKind::StorageRead,
            ArgData::InOut(_) | ArgData::Output(_) => kind == BindingKind::StorageReadWrite,
            ArgData::Scratch { .. } => kind != BindingKind::Uniform,
            ArgData::Resident(_) => true,
        }
    }
}

impl Job {
    /// A job for `kernel` with no arguments and no workgroups yet.
    pub fn new(kernel: &Kernel) -> Job {
        Job {
            steps: vec![Step::new(kernel)],
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

    /// Binds `bytes`, laid out as the uniform's WGSL type, to a `var<uniform>` (a uniform that
    /// arrives as bytes: from another language, a file, the wire).
    pub fn uniform_bytes(self, binding: u32, bytes: &[u8]) -> Job {
        self.arg(binding, ArgData::Uniform(Bytes::copy_of(bytes)))
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

    /// Binds a zeroed buffer of `len` elements of `T` that exists only on the device, for the
    /// length of this job: later steps that name the same `id` see what earlier steps wrote,
    /// and it is never read back. Binds as `var<storage, read>` or `read_write`.
    pub fn scratch<T: bytemuck::Pod>(self, binding: u32, id: u32, len: usize) -> Job {
        let size = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        self.arg(binding, ArgData::Scratch { id, size })
    }

    /// Binds a resident [`DeviceBuffer`] whole, as uniform, read-only or read-write storage
    /// (writes stay in the buffer). The job runs on a device that holds a copy of every
    /// resident buffer it binds.
    pub fn buffer(self, binding: u32, buffer: &DeviceBuffer) -> Job {
        self.arg(binding, ArgData::Resident(buffer.clone()))
    }

    /// Adds a step: `kernel` runs after the previous steps, in the same submission, and sees
    /// their writes. Argument and workgroup methods after this apply to the new step.
    pub fn then(mut self, kernel: &Kernel) -> Job {
        self.steps.push(Step::new(kernel));
        self
    }

    /// Dispatches `x * y * z` workgroups.
    pub fn workgroups(mut self, x: u32, y: u32, z: u32) -> Job {
        self.last().workgroups = [x, y, z];
        self
    }

    /// Enough workgroups along x for `n` invocations: `ceil(n / workgroup_size.x)`.
    pub fn workgroups_for(mut self, n: usize) -> Job {
        let per = self.last().kernel.workgroup_size()[0].max(1) as u64;
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
    /// after that it resolves [`Error::DeadlineExpired`] without running (a caller waiting on
    /// it learns at the deadline). `Duration::MAX` (or any budget past the end of time) means
    /// no limit. Overrides the engine's
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

    /// The kernel of the job's first step.
    pub fn kernel(&self) -> &Kernel {
        &self.steps[0].kernel // never empty: `new` makes the first step
    }

    /// The kernel of the job's last step.
    pub(crate) fn last_kernel(&self) -> &Kernel {
        &self.steps[self.steps.len() - 1].kernel
    }

    fn last(&mut self) -> &mut Step {
        let last = self.steps.len() - 1; // never empty: `new` makes the first step
        &mut self.steps[last]
    }

    /// Adds an argument as it is (a job read off the wire, see `remote/wire.rs`).
    #[cfg(feature = "nats")]
    pub(crate) fn raw_arg(self, binding: u32, data: ArgData) -> Job {
        self.arg(binding, data)
    }

    fn arg(mut self, binding: u32, data: ArgData) -> Job {
        self.last().args.push(Arg { binding, data });
        self
    }

    /// Whether running the job again changes nothing but its own outputs: it writes no
    /// resident buffer. A job in flight when its device was lost may then run again.
    pub(crate) fn is_idempotent(&self) -> bool {
        self.steps.iter().all(|s| {
            s.args.iter().all(|a| {
                !matches!(a.data, ArgData::Resident(_))
                    || s.kernel
                        .binding(a.binding)
                        .is_none_or(|b| b.kind != BindingKind::StorageReadWrite)
            })
        })
    }

    /// Every argument of every step.
    pub(crate) fn args(&self) -> impl Iterator<Item = &Arg> {
        self.steps.iter().flat_map(|s| s.args.iter())
    }

    /// Checks every step against its kernel's reflected bindings and `limits`. No lock.
    pub(crate) fn validate(&self, limits: &wgpu::Limits) -> Result<()> {
        self.steps.iter().try_for_each(|s| s.validate(limits))
    }
}

impl Step {
    fn validate(&self, limits: &wgpu::Limits) -> Result<()> {
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
            self.validate_aliasing(i)?;
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
        if !arg.data.fits(info.kind) {
            let problem = format!(
                "{} given, but the kernel declares {:?}",
                arg.data.name(),
                info.kind
            );
            return Err(Error::binding(k.label(), arg.binding, problem));
        }
        if let ArgData::Resident(b) = &arg.data
            && b.is_read_only()
            && info.kind == BindingKind::StorageReadWrite
        {
            let problem = if b.is_replicated() {
                "a replicated buffer is read-only on the GPU (a write would change one \
                 device's copy only); upload it to one device to write it"
            } else {
                "the buffer was uploaded read-only (so it can come back after a device loss); \
                 upload it with `upload_to` to write it"
            };
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

    /// Refuses argument `i` when it binds the same buffer as an earlier argument of this step
    /// (one resident buffer, or one scratch id) and one of the two binds it read-write while
    /// the other does not: wgpu refuses such a dispatch ("conflicting usages"), which would
    /// fail the job late and make its whole batch retry one job at a time.
    fn validate_aliasing(&self, i: usize) -> Result<()> {
        let k = &self.kernel;
        let arg = &self.args[i];
        let kind = |a: &Arg| k.binding(a.binding).map(|b| b.kind);
        for earlier in &self.args[..i] {
            let same = match (&earlier.data, &arg.data) {
                (ArgData::Resident(a), ArgData::Resident(b)) => a.is_same(b),
                (ArgData::Scratch { id: a, .. }, ArgData::Scratch { id: b, .. }) => a == b,
                _ => false,
            };
            let (was, is) = (kind(earlier), kind(arg));
            let rw = Some(BindingKind::StorageReadWrite);
            if same && was != is && (was == rw || is == rw) {
                let problem = format!(
                    "binds the same buffer as binding {} ({:?} there, {:?} here); one \
                     dispatch cannot use a buffer both read-write and read-only: bind two \
                     buffers, or the same one read-write in both",
                    earlier.binding,
                    was.unwrap_or(BindingKind::StorageRead),
                    is.unwrap_or(BindingKind::StorageRead),
                );
                return Err(Error::binding(k.label(), arg.binding, problem));
            }
        }
        Ok(())
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

/// A job that [`Engine::try_submit`](crate::Engine::try_submit) could not queue, handed back with the reason.
#[derive(Debug)]
pub struct Rejected {
    /// Why: [`Error::QueueFull`], or what submit would have returned.
    pub error: Error,
    /// The job, unchanged.
    pub job: Job,
}

/// The results of a finished job: the contents of its `inout` and `output` bindings, and the
/// GPU time it took where the device can measure it.
///
/// The results are not copied until you read them: a `JobOutput` holds the mapped memory they
/// were read back into (the job's own buffer on adapters that share the host's memory, else
/// its batch's readback buffer, shared with the batch's other jobs) until it is dropped. Read
/// what you need and drop it, rather than keeping many of them around.
#[derive(Clone)]
pub struct JobOutput {
    pub(crate) device: usize,
    /// The kernel of the last step.
    pub(crate) kernel: Kernel,
    /// (step, binding, offset in `mapped`, size) of every binding read back.
    pub(crate) ranges: Vec<(usize, u32, u64, u64)>,
    /// `None` for a job that reads nothing back.
    pub(crate) mapped: Option<Arc<Readback>>,
    pub(crate) gpu_time: Option<Duration>,
}

impl std::fmt::Debug for JobOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bindings: Vec<(usize, u32, u64)> =
            self.ranges.iter().map(|&(s, b, _, n)| (s, b, n)).collect();
        f.debug_struct("JobOutput")
            .field("device", &self.device)
            .field("kernel", &self.kernel.label())
            .field("bindings (step, binding, bytes)", &bindings)
            .field("gpu_time", &self.gpu_time)
            .finish()
    }
}

impl JobOutput {
    /// The index of the device that ran the job.
    pub fn device(&self) -> usize {
        self.device
    }

    /// The kernel of the job's last step.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// GPU time from the start of the job's first dispatch to the end of its last, measured
    /// with timestamp queries; `None` where the adapter has none.
    pub fn gpu_time(&self) -> Option<Duration> {
        self.gpu_time
    }

    /// The raw bytes read back from `binding` of the last step that reads one back there.
    pub fn bytes(&self, binding: u32) -> Option<&[u8]> {
        let range = self.ranges.iter().rev().find(|r| r.1 == binding)?;
        self.slice(range)
    }

    /// The mapped bytes of one read-back range.
    fn slice(&self, &(_, _, at, size): &(usize, u32, u64, u64)) -> Option<&[u8]> {
        let mapped = self.mapped.as_deref().map_or(&[][..], Readback::bytes);
        // The plan fits every range inside the readback, so `get` always finds it.
        let start = usize::try_from(at).ok()?;
        mapped.get(start..start.checked_add(usize::try_from(size).ok()?)?)
    }

    /// The contents of `binding` (of the last step that reads one back there) as `T`s.
    pub fn read<T: bytemuck::Pod>(&self, binding: u32) -> Result<Vec<T>> {
        self.cast(binding, self.bytes(binding))
    }

    /// The contents of `binding` of step `step` (0 = the job's first kernel) as `T`s.
    pub fn read_step<T: bytemuck::Pod>(&self, step: usize, binding: u32) -> Result<Vec<T>> {
        self.cast(binding, self.bytes_step(step, binding))
    }

    /// The raw bytes read back from `binding` of step `step` (0 = the job's first kernel).
    pub fn bytes_step(&self, step: usize, binding: u32) -> Option<&[u8]> {
        let range = self.ranges.iter().find(|r| r.0 == step && r.1 == binding)?;
        self.slice(range)
    }

    fn cast<T: bytemuck::Pod>(&self, binding: u32, bytes: Option<&[u8]>) -> Result<Vec<T>> {
        let label = self.kernel.label();
        let bytes = bytes.ok_or_else(|| {
            Error::binding(label, binding, "not an inout or output binding of this job")
        })?;
        let size = std::mem::size_of::<T>();
        if size == 0 {
            let problem = "the element type has size zero: read a type with a size";
            return Err(Error::binding(label, binding, problem));
        }
        if bytes.len() % size != 0 {
            let problem = format!(
                "{} bytes are not a whole number of {size}-byte elements",
                bytes.len()
            );
            return Err(Error::binding(label, binding, problem));
        }
        // Mapped memory is aligned for any `T`: one copy. (`pod_collect_to_vec` zeroes its
        // vector before copying: twice the memory traffic.)
        match bytemuck::try_cast_slice::<u8, T>(bytes) {
            Ok(elements) => Ok(elements.to_vec()),
            Err(_) => Ok(bytemuck::pod_collect_to_vec(bytes)),
        }
    }
}
