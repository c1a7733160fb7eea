//! The [`Engine`]: adapter enumeration (the one global lock), device choice and submission.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

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
            },
            queue_capacity: 4096,
            default_timeout: None,
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
        Ok(Engine {
            inner: Arc::new(EngineInner {
                enumeration: Mutex::new(Enumeration {
                    _instance: instance,
                    adapters: infos,
                }),
                slots,
                rotate: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                default_timeout: self.default_timeout,
            }),
        })
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

struct EngineInner {
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

    /// The device for `job`: its pinned device, or the usable one with the fewest outstanding
    /// jobs (atomics only; ties rotate).
    fn choose(&self, job: &Job) -> Result<Arc<DeviceSlot>> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        if let Some(i) = job.device {
            let slot = inner.slots.get(i).ok_or(Error::Limit {
                what: "device index",
                requested: i as u64,
                limit: inner.slots.len().saturating_sub(1) as u64,
            })?;
            return if slot.usable() {
                Ok(slot.clone())
            } else {
                Err(slot.shared.drop_error())
            };
        }
        let n = inner.slots.len();
        let start = inner.rotate.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| &inner.slots[(start + k) % n])
            .filter(|s| s.usable())
            .min_by_key(|s| s.shared.stats.outstanding())
            .cloned()
            .ok_or_else(|| inner.slots[0].shared.drop_error())
    }
}

/// A request the channel refused: silence its responder (the job never entered a queue) and
/// return why, with the job.
fn refuse(slot: &DeviceSlot, request: Request) -> (Error, Job) {
    request.responder.disarm();
    (slot.shared.drop_error(), request.job)
}
