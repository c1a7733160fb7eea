//! The [`Engine`]: adapter enumeration (the one global lock), device choice and submission.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::balance::{Balance, Candidate};
use crate::buffer::DeviceBuffer;
use crate::device::{BatchConfig, DeviceInfo, DeviceSlot, Request};
use crate::error::{Error, Result};
use crate::job::{Job, JobHandle, JobOutput};
use crate::kernel::{Kernel, KernelSource};
use crate::stats::EngineStats;

/// How to get a software adapter, for every "no adapter" message.
const INSTALL_HINT: &str = "on Debian/Ubuntu without a GPU, `apt-get install mesa-vulkan-drivers` \
     provides the lavapipe software Vulkan adapter";

/// Configures and builds an [`Engine`]. Every setting has a default; see each method.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    backends: Option<wgpu::Backends>,
    adapter_name: Option<String>,
    devices_per_adapter: usize,
    batch: BatchConfig,
    queue_capacity: usize,
    default_timeout: Option<Duration>,
    balance: Balance,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            backends: None,
            adapter_name: None,
            devices_per_adapter: 1,
            batch: BatchConfig {
                max_jobs: 64,
                max_bytes: 64 << 20,
                max_delay: Duration::ZERO,
                max_in_flight: 2,
                shared_bind_groups: true,
                priority_aging: Duration::from_millis(100),
                gpu_timing: false,
            },
            queue_capacity: 4096,
            default_timeout: None,
            balance: Balance::default(),
        }
    }
}

impl EngineBuilder {
    /// Which graphics APIs to use. Default: `WGPU_BACKEND` if set, else every backend except
    /// noop. The noop backend (no execution, for measuring host overhead) is used only when
    /// named here or in `WGPU_BACKEND=noop`.
    pub fn backends(mut self, backends: wgpu::Backends) -> Self {
        self.backends = Some(backends);
        self
    }

    /// Keeps only adapters whose name contains `name`, case-insensitively. Default:
    /// `WGPU_ADAPTER_NAME` if set, else every adapter.
    pub fn adapter_name(mut self, name: impl Into<String>) -> Self {
        self.adapter_name = Some(name.into());
        self
    }

    /// Opens this many devices (each with its own queue and executor) per adapter. Default 1.
    pub fn devices_per_adapter(mut self, n: usize) -> Self {
        self.devices_per_adapter = n.max(1);
        self
    }

    /// Most jobs in one batch (one command buffer, one submit). Default 64.
    pub fn max_batch_jobs(mut self, n: usize) -> Self {
        self.batch.max_jobs = n.max(1);
        self
    }

    /// Most argument bytes in one batch; a larger job runs alone. Default 64 MiB.
    pub fn max_batch_bytes(mut self, bytes: u64) -> Self {
        self.batch.max_bytes = bytes.max(1);
        self
    }

    /// How long a batch stays open for more jobs once its first job is taken. Default zero:
    /// a batch holds what is queued at that moment, so an idle device adds no delay.
    pub fn max_batch_delay(mut self, delay: Duration) -> Self {
        self.batch.max_delay = delay;
        self
    }

    /// Batches submitted and not yet read back, per device. Default 2: batch N+1 is encoded
    /// while batch N runs. More in flight holds more memory.
    pub fn max_batches_in_flight(mut self, n: usize) -> Self {
        self.batch.max_in_flight = n.max(1);
        self
    }

    /// Whether jobs of one kernel whose bindings have the same sizes share one bind group per
    /// batch, through dynamic offsets (saves a bind group creation per job). Kernels with more
    /// bindings than the device allows dynamic offsets for always get one per job. Turn it off
    /// for drivers where dynamic offsets are slow. Default true.
    pub fn shared_bind_groups(mut self, on: bool) -> Self {
        self.batch.shared_bind_groups = on;
        self
    }

    /// How long a lower-priority job waits before it is served ahead of higher-priority ones,
    /// so none starves. Default 100 ms.
    pub fn priority_aging(mut self, aging: Duration) -> Self {
        self.batch.priority_aging = aging;
        self
    }

    /// The budget of a job that sets no [`Job::timeout`] or [`Job::deadline`]: past it, a job
    /// not yet encoded resolves [`Error::Timeout`]. Default: none.
    pub fn default_timeout(mut self, budget: Duration) -> Self {
        self.default_timeout = Some(budget);
        self
    }

    /// Whether each job's GPU time is measured with timestamp queries (where the adapter
    /// supports them inside compute passes) and reported in [`JobOutput::gpu_time`] and the
    /// stats. Default false: on lavapipe it cost 40-60% of small-job throughput
    /// (`GPU_TIMING=1 cargo run --release --example many_threads`).
    pub fn gpu_timing(mut self, on: bool) -> Self {
        self.batch.gpu_timing = on;
        self
    }

    /// How jobs are spread over devices. Default [`Balance::LeastOutstanding`]; see [`Balance`].
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Jobs each device's request queue holds; `submit` blocks and `try_submit` fails with
    /// [`Error::QueueFull`] when it is full. Default 4096.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Enumerates adapters, opens the devices and starts one executor per device.
    pub fn build(self) -> Result<Engine> {
        let (backends, explicit) = match self.backends.or_else(wgpu::Backends::from_env) {
            Some(b) => (b, true),
            None => (wgpu::Backends::all() - wgpu::Backends::NOOP, false),
        };
        let filter = self
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        desc.flags = wgpu::InstanceFlags::empty().with_env();
        desc.backend_options = wgpu::BackendOptions::from_env_or_default();
        if explicit && backends.contains(wgpu::Backends::NOOP) {
            desc.backend_options.noop = wgpu::NoopBackendOptions::enabled();
        }
        let instance = wgpu::Instance::new(desc);
        let adapters = pick_adapters(&instance, backends, filter.as_deref())?;
        let slots = self.open_devices(&adapters)?;
        let infos = adapters.iter().map(|a| a.get_info()).collect();
        let copy = Kernel::compile(KernelSource::wgsl("wgpu-batch read", COPY_WGSL))?;
        let engine = Engine {
            inner: Arc::new(EngineInner {
                enumeration: Mutex::new(Enumeration {
                    _instance: instance,
                    adapters: infos,
                }),
                slots,
                rotate: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                default_timeout: self.default_timeout,
                balance: self.balance,
                copy: copy.clone(),
            }),
        };
        for slot in &engine.inner.slots {
            slot.prepare(&copy)?;
        }
        Ok(engine)
    }

    fn open_devices(&self, adapters: &[wgpu::Adapter]) -> Result<Vec<Arc<DeviceSlot>>> {
        let mut slots = Vec::new();
        let mut last_err = None;
        for adapter in adapters {
            for _ in 0..self.devices_per_adapter {
                match open_device(adapter, slots.len(), self.batch, self.queue_capacity) {
                    Ok(slot) => slots.push(Arc::new(slot)),
                    Err(e) => {
                        log::warn!("skipping a device: {e}");
                        last_err = Some(e);
                    }
                }
            }
        }
        match (slots.is_empty(), last_err) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(Error::NoAdapter(INSTALL_HINT.into())),
            _ => Ok(slots),
        }
    }
}

/// Lists adapters for `backends` and keeps those that match `filter` and can run compute.
fn pick_adapters(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    filter: Option<&str>,
) -> Result<Vec<wgpu::Adapter>> {
    let all = pollster::block_on(instance.enumerate_adapters(backends));
    let names: Vec<String> = all.iter().map(|a| describe(&a.get_info())).collect();
    let needle = filter.map(str::to_lowercase);
    let picked: Vec<wgpu::Adapter> = all
        .into_iter()
        .filter(|a| {
            needle
                .as_ref()
                .is_none_or(|n| a.get_info().name.to_lowercase().contains(n))
        })
        .filter(|a| {
            let ok = a
                .get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS);
            if !ok {
                log::warn!("skipping {}: no compute shaders", describe(&a.get_info()));
            }
            ok
        })
        .collect();
    if picked.is_empty() {
        let found = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join("; ")
        };
        let wanted = filter
            .map(|f| format!(" matching name `{f}`"))
            .unwrap_or_default();
        return Err(Error::NoAdapter(format!(
            "no compute-capable adapter{wanted} for backends {backends:?} (adapters found: {found}); {INSTALL_HINT}"
        )));
    }
    Ok(picked)
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

fn open_device(
    adapter: &wgpu::Adapter,
    index: usize,
    cfg: BatchConfig,
    capacity: usize,
) -> Result<DeviceSlot> {
    let info = adapter.get_info();
    let desc = wgpu::DeviceDescriptor {
        label: Some("wgpu-batch"),
        required_features: if cfg.gpu_timing {
            features_for(adapter)
        } else {
            wgpu::Features::empty()
        },
        required_limits: limits_for(adapter),
        ..Default::default()
    };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;
    let limits = device.limits();
    let info = DeviceInfo {
        index,
        adapter: info.name.clone(),
        backend: info.backend,
        device_type: info.device_type,
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_owned(),
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
    };
    log::info!(
        "device {index}: {} ({:?}, {:?})",
        info.adapter,
        info.backend,
        info.device_type
    );
    DeviceSlot::start(info, device, queue, cfg, capacity)
}

/// Everything the adapter offers, so large jobs fit; except bind groups, which wgpu-core can
/// only track up to 8 of (the noop adapter reports more, and pipeline creation would panic).
/// Timestamp queries inside passes, where the adapter has them, for per-job GPU time.
fn features_for(adapter: &wgpu::Adapter) -> wgpu::Features {
    let timing = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
    adapter.features() & timing
}

fn limits_for(adapter: &wgpu::Adapter) -> wgpu::Limits {
    let mut limits = adapter.limits();
    limits.max_bind_groups = limits.max_bind_groups.min(8);
    limits
}

/// What the global enumeration lock protects.
struct Enumeration {
    /// Kept alive for the devices' sake; enumeration goes through it.
    _instance: wgpu::Instance,
    adapters: Vec<wgpu::AdapterInfo>,
}

pub(crate) struct EngineInner {
    /// The one global lock: the wgpu instance and the adapter list. Taken by `build` and
    /// [`Engine::adapters`]; never on the submit path, never while holding a device lock.
    enumeration: Mutex<Enumeration>,
    /// Every opened device; fixed after build.
    slots: Vec<Arc<DeviceSlot>>,
    /// Rotates the starting point of device choice so ties spread out.
    rotate: AtomicUsize,
    /// Set once by shutdown; submit checks it first.
    shutting_down: AtomicBool,
    /// Budget of jobs that set none.
    default_timeout: Option<Duration>,
    /// How device choice weighs devices.
    balance: Balance,
    /// Copies a resident buffer into a job output, for [`DeviceBuffer::read`].
    copy: Kernel,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl EngineInner {
    fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for slot in &self.slots {
            slot.stop();
        }
    }
}

/// A job that [`Engine::try_submit`] could not queue, handed back with the reason.
#[derive(Debug)]
pub struct Rejected {
    /// Why: [`Error::QueueFull`], or what submit would have returned.
    pub error: Error,
    /// The job, unchanged.
    pub job: Job,
}

/// The runtime: every opened device, each with its own queue and executor. Cheap to clone;
/// the last clone dropped shuts it down (drains queued jobs, joins the threads).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("devices", &self.devices())
            .finish()
    }
}

impl Engine {
    /// An engine on every usable adapter with the default settings of [`EngineBuilder`].
    pub fn new() -> Result<Engine> {
        Engine::builder().build()
    }

    /// A builder to choose backends, adapters, device count and batching.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Every opened device, in index order.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.inner.slots.iter().map(|s| s.info.clone()).collect()
    }

    /// Every adapter the engine chose at build time. Takes the enumeration lock.
    pub fn adapters(&self) -> Vec<wgpu::AdapterInfo> {
        self.inner.enumeration.lock().adapters.clone()
    }

    /// Validates `source` (naga, on this thread) and builds its pipeline on every device, so
    /// shader errors surface here rather than on a job.
    pub fn kernel(&self, source: KernelSource) -> Result<Kernel> {
        let kernel = Kernel::compile(source)?;
        for slot in self.inner.slots.iter().filter(|s| s.usable()) {
            slot.prepare(&kernel)?;
        }
        Ok(kernel)
    }

    /// Validates `job` and queues it on the least-loaded eligible device, blocking while that
    /// device's queue is full.
    pub fn submit(&self, job: Job) -> Result<JobHandle> {
        let slot = self.choose(&job)?;
        job.validate(&slot.limits)?;
        let Some(tx) = slot.tx.upgrade() else {
            return Err(Error::Shutdown);
        };
        let (handle, request) = self.request(&slot, job);
        match tx.send(request) {
            Ok(()) => {
                slot.shared.stats.record_submit();
                Ok(handle)
            }
            Err(flume::SendError(request)) => Err(refuse(&slot, request).0),
        }
    }

    /// Like [`submit`](Engine::submit) but never blocks: when every eligible queue is full the
    /// job comes back in [`Rejected`] with [`Error::QueueFull`].
    #[allow(clippy::result_large_err)] // the job comes back by value, as flume's TrySendError does
    pub fn try_submit(&self, job: Job) -> std::result::Result<JobHandle, Rejected> {
        let slot = match self
            .choose(&job)
            .and_then(|s| job.validate(&s.limits).map(|_| s))
        {
            Ok(slot) => slot,
            Err(error) => return Err(Rejected { error, job }),
        };
        let Some(tx) = slot.tx.upgrade() else {
            return Err(Rejected {
                error: Error::Shutdown,
                job,
            });
        };
        let (handle, request) = self.request(&slot, job);
        match tx.try_send(request) {
            Ok(()) => {
                slot.shared.stats.record_submit();
                Ok(handle)
            }
            Err(flume::TrySendError::Full(request)) => {
                let (_, job) = refuse(&slot, request);
                Err(Rejected {
                    error: Error::QueueFull,
                    job,
                })
            }
            Err(flume::TrySendError::Disconnected(request)) => {
                let (error, job) = refuse(&slot, request);
                Err(Rejected { error, job })
            }
        }
    }

    /// Wraps `job` for `slot`'s channel, with its handle and its deadline from now.
    fn request(&self, slot: &DeviceSlot, job: Job) -> (JobHandle, Request) {
        let (handle, responder) = JobHandle::pair(slot.info.index, slot.shared.clone());
        let now = responder.submitted();
        let deadline = match (job.deadline, job.timeout.map(|b| now + b)) {
            (None, None) => self.inner.default_timeout.map(|b| now + b),
            (at, within) => at.into_iter().chain(within).min(),
        };
        (
            handle,
            Request {
                job,
                responder,
                deadline,
            },
        )
    }

    /// Submits `job` and waits for it.
    pub fn run(&self, job: Job) -> Result<JobOutput> {
        self.submit(job)?.wait()
    }

    /// Per-device counters and latency percentiles; lock-free.
    pub fn stats(&self) -> EngineStats {
        let devices = self
            .inner
            .slots
            .iter()
            .map(|s| s.shared.stats.snapshot(s.info.index, s.queue_depth()))
            .collect();
        EngineStats { devices }
    }

    /// Stops accepting jobs, runs every job already queued, and joins every executor thread.
    /// Later submits fail with [`Error::Shutdown`]. Dropping the last clone does the same.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Destroys device `index` as a driver reset would, to test failover. Its queued and
    /// running jobs resolve with [`Error::DeviceLost`]; later jobs go to other devices.
    #[cfg(feature = "test-hooks")]
    pub fn lose_device(&self, index: usize) {
        if let Some(slot) = self.inner.slots.get(index) {
            slot.destroy();
        }
    }

    /// Destroys device `index` without telling the engine: the loss is noticed only when wgpu
    /// reports it (at the executor's next poll), as with a real driver reset.
    #[cfg(feature = "test-hooks")]
    pub fn destroy_device(&self, index: usize) {
        if let Some(slot) = self.inner.slots.get(index) {
            slot.destroy_quietly();
        }
    }

    /// The device for `job`: its pinned device, or the best usable one (by the engine's
    /// [`Balance`]) among those that hold every resident buffer it binds. Atomics only.
    fn choose(&self, job: &Job) -> Result<Arc<DeviceSlot>> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        let eligible = self.eligible(job)?;
        if let Some(i) = job.device {
            let slot = inner.slots.get(i).ok_or(Error::Limit {
                what: "device index",
                requested: i as u64,
                limit: inner.slots.len().saturating_sub(1) as u64,
            })?;
            if !eligible[i] {
                let problem =
                    format!("pinned to device {i}, but a buffer it binds has no copy there");
                return Err(Error::binding(
                    job.kernel().label(),
                    resident_binding(job).unwrap_or(0),
                    problem,
                ));
            }
            return if slot.usable() {
                Ok(slot.clone())
            } else {
                Err(slot.shared.drop_error())
            };
        }
        let candidates: Vec<Candidate> = inner
            .slots
            .iter()
            .filter(|s| eligible[s.info.index] && s.usable())
            .map(|s| Candidate {
                index: s.info.index,
                outstanding: s.shared.stats.outstanding(),
                cost_ns: s.shared.stats.cost_ns(),
            })
            .collect();
        let turn = inner.rotate.fetch_add(1, Ordering::Relaxed);
        match inner.balance.pick(&candidates, turn) {
            Some(i) => Ok(inner.slots[i].clone()),
            None => {
                let holder = inner
                    .slots
                    .iter()
                    .find(|s| eligible[s.info.index])
                    .unwrap_or(&inner.slots[0]);
                Err(holder.shared.drop_error())
            }
        }
    }

    /// Per device, whether it holds every resident buffer `job` binds; an error when no device
    /// does or a buffer comes from another engine.
    fn eligible(&self, job: &Job) -> Result<Vec<bool>> {
        let mut eligible = vec![true; self.inner.slots.len()];
        for arg in job.args() {
            let crate::job::ArgData::Resident(buffer) = &arg.data else {
                continue;
            };
            let label = job.kernel().label();
            if !buffer.is_from(&self.inner) {
                return Err(Error::binding(
                    label,
                    arg.binding,
                    "the buffer belongs to another engine",
                ));
            }
            for (i, e) in eligible.iter_mut().enumerate() {
                *e &= buffer.copy_on(i).is_some();
            }
            if !eligible.contains(&true) {
                let problem = format!(
                    "the buffer is on devices {:?}, which hold none of the job's other buffers",
                    buffer.devices()
                );
                return Err(Error::binding(label, arg.binding, problem));
            }
        }
        Ok(eligible)
    }

    /// Copies `data` to device `device`, where it stays until the last clone of the returned
    /// buffer is dropped (and no job uses it).
    pub fn upload_to<T: bytemuck::Pod>(&self, device: usize, data: &[T]) -> Result<DeviceBuffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let slot = self.inner.slots.get(device).ok_or(Error::Limit {
            what: "device index",
            requested: device as u64,
            limit: self.inner.slots.len().saturating_sub(1) as u64,
        })?;
        self.place(std::slice::from_ref(slot), bytes)
    }

    /// Copies `data` to the least-loaded usable device.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<DeviceBuffer> {
        let slot = self.choose(&Job::new(&self.inner.copy))?;
        self.place(&[slot], bytemuck::cast_slice(data))
    }

    /// Copies `data` to every usable device, so jobs that bind it can still go to any of them.
    pub fn replicate<T: bytemuck::Pod>(&self, data: &[T]) -> Result<DeviceBuffer> {
        let usable: Vec<Arc<DeviceSlot>> = self
            .inner
            .slots
            .iter()
            .filter(|s| s.usable())
            .cloned()
            .collect();
        if usable.is_empty() {
            return Err(self.inner.slots[0].shared.drop_error());
        }
        self.place(&usable, bytemuck::cast_slice(data))
    }

    /// One resident copy of `bytes` on each of `slots`.
    fn place(&self, slots: &[Arc<DeviceSlot>], bytes: &[u8]) -> Result<DeviceBuffer> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        let size = bytes.len() as u64;
        if size == 0 || !size.is_multiple_of(4) {
            let problem =
                format!("a resident buffer needs a non-zero multiple of 4 bytes, got {size}");
            return Err(Error::binding("upload", 0, problem));
        }
        let mut copies = vec![None; self.inner.slots.len()];
        for slot in slots {
            if !slot.usable() {
                return Err(slot.shared.drop_error());
            }
            if size > slot.limits.max_buffer_size {
                return Err(Error::Limit {
                    what: "buffer size",
                    requested: size,
                    limit: slot.limits.max_buffer_size,
                });
            }
            copies[slot.info.index] = Some(slot.create_resident(bytes)?);
        }
        Ok(DeviceBuffer::new(copies, size, Arc::downgrade(&self.inner)))
    }
}

/// The binding of the first resident buffer a job binds.
fn resident_binding(job: &Job) -> Option<u32> {
    job.args()
        .find(|a| matches!(a.data, crate::job::ArgData::Resident(_)))
        .map(|a| a.binding)
}

/// Copies a resident buffer (any size, as `u32` words) into an output, over a 2D grid so
/// large buffers stay within the workgroup count limit.
const COPY_WGSL: &str = "
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.y * groups.x * 256u + id.x;
    if i < arrayLength(&dst) { dst[i] = src[i]; }
}";

impl DeviceBuffer {
    /// Reads the buffer back, from a device that holds a copy. Goes through the device's
    /// queue like any job, so it sees every write of jobs submitted before it on that device.
    pub fn read<T: bytemuck::Pod>(&self) -> Result<Vec<T>> {
        let engine = Engine {
            inner: self.engine().ok_or(Error::Shutdown)?,
        };
        let device = self
            .devices()
            .into_iter()
            .find(|&i| engine.inner.slots[i].usable())
            .ok_or_else(|| engine.inner.slots[self.devices()[0]].shared.drop_error())?;
        let words = (self.size() / 4) as usize;
        let groups = words.div_ceil(256) as u32;
        let x = groups.min(65_535);
        let job = Job::new(&engine.inner.copy)
            .buffer(0, self)
            .output::<u32>(1, words)
            .workgroups(x, groups.div_ceil(x), 1);
        let out = engine.run(job.on_device(device).priority(crate::Priority::High))?;
        out.read::<T>(1)
    }
}

/// A request the channel refused: silence its responder (the job never entered a queue) and
/// return why, with the job.
fn refuse(slot: &DeviceSlot, request: Request) -> (Error, Job) {
    request.responder.disarm();
    (slot.shared.drop_error(), request.job)
}
