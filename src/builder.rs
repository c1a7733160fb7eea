//! [`EngineBuilder`]: the engine's settings, and building it (enumeration and device requests
//! under the one global lock, then one executor per device and the watchdog).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::adapters;
use crate::balance::Balance;
use crate::config::BatchConfig;
use crate::device::health::Health;
use crate::device::watchdog::{Msg, Watchdog};
use crate::device::{DeviceCore, Opening};
use crate::engine::{Engine, EngineParts};
use crate::error::{Error, Result};
use crate::kernel::warm::DiskCache;
use crate::station::{Budget, Recipe, Reopen, Station};

impl Engine {
    /// An engine on every usable adapter with the default settings of [`EngineBuilder`].
    pub fn new() -> Result<Engine> {
        Engine::builder().build()
    }

    /// A builder to choose backends, adapters, device count and batching.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }
}

/// The default of [`EngineBuilder::priority_aging`]: 100 ms.
///
/// Measured on lavapipe (`cargo bench --bench throughput -- priority`; 8 threads x 256
/// outstanding 4,096-element jobs of one priority, one job of the other every 20 ms):
///
/// | aging | High job among Low work, p50 | Low job among High work, p50 |
/// |---|---|---|
/// | 10 ms | 209 ms | 264 ms |
/// | **100 ms** | **20.7 ms** | **435 ms** |
/// | 1 s | 17.7 ms | 2.2 s |
/// | `Duration::MAX` (strict) | 18.8 ms | starved (> 5 s) |
///
/// At 100 ms a High job is nearly as fast as with strict priorities (the backlog ahead of it
/// is the batches already formed), while a steady stream of High work holds a Low job back
/// under half a second, not seconds.
pub const DEFAULT_PRIORITY_AGING: Duration = Duration::from_millis(100);

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
    gpu_timeout: Duration,
    map_storage: Option<bool>,
    /// How often the `metrics` feature publishes (`metrics_interval`).
    #[cfg(feature = "metrics")]
    metrics_interval: Duration,
    /// Where pipeline caches persist (`pipeline_cache_dir`).
    pipeline_cache_dir: Option<std::path::PathBuf>,
    /// An application's device to adopt instead of opening any (`with_device`).
    adopted: Option<(wgpu::Adapter, wgpu::Device, wgpu::Queue)>,
    /// Whether a lost device is replaced (`reopen_lost_devices`), and how often.
    /// `None`: the default, on for devices the engine opens, off for an adopted one.
    reopen: Option<bool>,
    budget: Budget,
    /// Whether read-only resident buffers keep a host copy (`keep_read_only_copies`).
    keep_copies: bool,
    /// Told of each device loss (`on_device_lost`).
    on_lost: Option<crate::station::LostHook>,
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
                priority_aging: DEFAULT_PRIORITY_AGING,
                gpu_timing: false,
                pool_budget: 256 << 20,
                fusion: true,
            },
            queue_capacity: 4096,
            default_timeout: None,
            balance: Balance::default(),
            gpu_timeout: Duration::from_secs(10),
            map_storage: None,
            pipeline_cache_dir: None,
            #[cfg(feature = "metrics")]
            metrics_interval: Duration::from_secs(1),
            adopted: None,
            reopen: None,
            budget: Budget {
                max_losses: 3,
                window: Duration::from_secs(60),
                backoff: Duration::from_millis(100),
                max_replays: 2,
            },
            keep_copies: true,
            on_lost: None,
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
    /// `Duration::MAX`: a partial batch waits until it is full (or a job's deadline comes).
    /// With a delay set, the device's executor alone forms batches (a waiting caller does not
    /// run them itself, see [`JobHandle::wait`](crate::JobHandle::wait)).
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

    /// How much waiting one priority level is worth: a job is served as if submitted this much
    /// later per level below `High` (see [`Priority`](crate::Priority)), so priorities age
    /// gradually and no job starves. Default [`DEFAULT_PRIORITY_AGING`]; `Duration::MAX`:
    /// strict priorities (a steady stream of higher-priority work can then starve lower).
    pub fn priority_aging(mut self, aging: Duration) -> Self {
        self.batch.priority_aging = aging;
        self
    }

    /// The budget of a job that sets no [`Job::timeout`](crate::Job::timeout) or [`Job::deadline`](crate::Job::deadline): past it, a job
    /// not yet encoded resolves [`Error::DeadlineExpired`]. Default: none (`Duration::MAX`
    /// also means none).
    pub fn default_timeout(mut self, budget: Duration) -> Self {
        self.default_timeout = Some(budget);
        self
    }

    /// The GPU watchdog: a device whose submitted work makes no progress (no batch completes)
    /// for this long is declared lost: its jobs resolve [`Error::DeviceLost`] with a reason
    /// that says so, later jobs go to the other devices, and shutdown no longer waits for it.
    /// Catches kernels that never finish and hung drivers. Default 10 s, longer than any
    /// batch of a sane job and than the operating systems' own GPU timeouts (about 2 s on
    /// Windows), so on real hardware the driver usually reports first. `Duration::MAX` turns
    /// the watchdog off; shutdown then waits for a hung GPU.
    pub fn gpu_timeout(mut self, timeout: Duration) -> Self {
        self.gpu_timeout = timeout;
        self
    }

    /// Whether a job's data may live in its own mapped buffers that the kernel reads and
    /// writes directly, where the adapter can map storage buffers: the submitting thread
    /// writes its inputs straight into the memory the kernel reads and the taker reads its
    /// results straight out of the memory the kernel wrote, with no copy in between (for jobs
    /// of 32 KiB of data or more; smaller ones cost more in mappings than they save).
    /// Otherwise the caller writes into an upload buffer and the batch copies it into place
    /// (and its results into one readback buffer). Default: on for adapters that share the
    /// host's memory (CPU and integrated GPUs), off for discrete GPUs, where mapped storage
    /// sits across the bus.
    pub fn map_storage(mut self, on: bool) -> Self {
        self.map_storage = Some(on);
        self
    }

    /// Whether the jobs of one kernel in a batch run as one dispatch of a rewritten kernel
    /// (kernel fusion; see [`Kernel::unfused_reason`](crate::Kernel::unfused_reason) for
    /// kernels that cannot be). Each fused job still sees only its own data, with the same
    /// results as alone. Default true.
    pub fn fusion(mut self, on: bool) -> Self {
        self.batch.fusion = on;
        self
    }

    /// Bytes of free buffers each device keeps for reuse (half for batch buffers, half for
    /// upload buffers); past it, the batch buffers returned longest ago are freed, and upload
    /// buffers coming back are freed; an idle device frees them all after a second. Half of it
    /// also bounds the mapped buffers that queued jobs' callers wrote: past that, a job keeps
    /// its own data until its batch forms, and whoever launches the batch copies it (an eighth
    /// was measured too small: 65,536-element jobs, 256 outstanding, ran at 0.6x one plain
    /// wgpu thread). Default 256 MiB. The buffers of batches in flight are not counted (they
    /// are in use). Raise it for jobs of several MiB with many outstanding: 1M-element SAXPY
    /// jobs (8 MiB in, 4 MiB out), 8 threads x 32 outstanding, ran 3.2x faster on the host
    /// with 512 MiB (buffers made afresh cost page faults).
    pub fn pool_budget(mut self, bytes: u64) -> Self {
        self.batch.pool_budget = bytes;
        self
    }

    /// Whether each job's GPU time is measured with timestamp queries (where the adapter
    /// supports them inside compute passes) and reported in [`JobOutput::gpu_time`](crate::JobOutput::gpu_time) and the
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

    /// Adopts an application's device (a desktop app's renderer's, say) instead of opening
    /// any: the engine batches and submits on `queue` alongside the application's own
    /// submits, and the engine has this one device. `adapter` is the adapter the device was
    /// requested from (the engine reads its name, limits and features from it and from the
    /// device).
    ///
    /// What the engine does and does not do to an adopted device:
    /// - It installs **no** handler: wgpu keeps one uncaptured-error handler and one
    ///   device-lost callback per device, and the application's stay as they were. The engine
    ///   catches its own errors with error scopes, and learns of a lost device from its
    ///   watchdog ([`gpu_timeout`](Self::gpu_timeout)) and from failed operations: after one
    ///   it asks the device (a fresh buffer maps on a working device, not on a lost or
    ///   destroyed one), and a lost device resolves jobs with [`Error::DeviceLost`] and takes
    ///   no more.
    /// - A device opened without compute (limits that allow no compute workgroups, such as
    ///   `wgpu::Limits::downlevel_webgl2_defaults()`) is refused with
    ///   [`Error::RequestDevice`].
    /// - It never destroys the device, and dropping the engine leaves it open.
    /// - It polls with `PollType::Poll` only (never a timed wait, which races with another
    ///   thread's submit or poll in wgpu 30.0.2), so the application may submit and poll from
    ///   its own threads at any time.
    /// - Its resident buffers can be created with extra usages
    ///   ([`Engine::upload_with_usage`]) and bound in the application's own passes
    ///   ([`DeviceBuffer::wgpu_buffer`](crate::DeviceBuffer::wgpu_buffer)). One queue runs its
    ///   submissions in order: once a job that wrote a buffer has completed (its handle
    ///   resolved), every later submission of the application sees its writes, and a job
    ///   submitted after the application's submission sees what that wrote.
    ///
    /// The settings that choose adapters (`backends`, `adapter_name`,
    /// `devices_per_adapter`) do not apply; the device's own features decide whether GPU
    /// timing and mapped storage are available.
    pub fn with_device(
        mut self,
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Self {
        self.adopted = Some((adapter.clone(), device, queue));
        self
    }

    /// How often the statistics are published through the [`metrics`](https://docs.rs/metrics)
    /// facade (feature `metrics`). Default: 1 s. A publisher thread reads the devices'
    /// lock-free statistics and hands them to whatever recorder the application installed;
    /// the submit path does no more work for it. The metrics (all labelled `device`,
    /// `adapter`, `backend`): counters `wgpu_batch_jobs_submitted_total`,
    /// `_jobs_completed_total`, `_jobs_failed_total`, `_batches_total`, `_dispatches_total`,
    /// `_fused_jobs_total`; gauges `wgpu_batch_queue_depth`, `_outstanding_jobs`,
    /// `_pool_bytes`, `_cost_per_job_seconds`, `_gpu_seconds`; histograms
    /// `wgpu_batch_job_latency_seconds` and `_queue_wait_seconds`.
    /// `examples/prometheus.rs` serves them to Prometheus.
    ///
    /// ```no_run
    /// # #[cfg(feature = "metrics")] {
    /// let engine = wgpu_batch::Engine::builder()
    ///     .metrics_interval(std::time::Duration::from_millis(250))
    ///     .build()?;
    /// # }
    /// # Ok::<(), wgpu_batch::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    pub fn metrics_interval(mut self, every: Duration) -> Self {
        self.metrics_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Keeps each device's compiled pipelines in `dir` (created if missing), so the first jobs
    /// of a later process skip the driver's compile. Default: off.
    ///
    /// Only devices with `Features::PIPELINE_CACHE` use it (wgpu 30 caches on Vulkan only;
    /// elsewhere this does nothing; an adopted device ([`with_device`](Self::with_device)) uses
    /// it if the application requested that feature). One file per adapter and driver version: a driver update
    /// never loads an old blob, and a damaged file is ignored (see the `warm` module docs in
    /// the source). The cache is written after [`Engine::kernel`] built new pipelines and at
    /// shutdown. Use a directory only this user can write: wgpu trusts the blob's contents.
    ///
    /// ```no_run
    /// let cache = std::env::temp_dir().join("my-app-pipelines");
    /// let engine = wgpu_batch::Engine::builder().pipeline_cache_dir(cache).build()?;
    /// # Ok::<(), wgpu_batch::Error>(())
    /// ```
    pub fn pipeline_cache_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.pipeline_cache_dir = Some(dir.into());
        self
    }

    /// Replaces a lost device: a new device on the same adapter takes its place (its index,
    /// its statistics, the next [`generation`](crate::DeviceInfo::generation)). The jobs that
    /// were queued on the lost one and never encoded move to another device that can take
    /// them, or wait for the new one, instead of failing; so do jobs submitted meanwhile that
    /// no other device can take (until their deadlines). A job that was running at the loss
    /// runs again if it writes no resident buffer (see [`max_replays`](Self::max_replays));
    /// one that does fails [`Error::DeviceLost`] (it may have run
    /// partly). Read-only resident buffers come back on the new device (see
    /// [`keep_read_only_copies`](Self::keep_read_only_copies)); writable ones are gone
    /// ([`Error::BufferLost`]). An adopted device
    /// ([`with_device`](Self::with_device)) is replaced by the application instead
    /// ([`Engine::replace_device`](crate::Engine::replace_device); learn of the loss with
    /// [`on_device_lost`](Self::on_device_lost) or from
    /// [`Engine::devices`](crate::Engine::devices)). Default on, except for an adopted device:
    /// its jobs would wait for a replacement an application unaware of this never hands over,
    /// so an application that will replace it says so with `reopen_lost_devices(true)`. Off, a
    /// lost device stays lost, its work moves to the other devices, and its jobs fail
    /// `DeviceLost` when none can take them. See [`reopen_budget`](Self::reopen_budget) and
    /// [`reopen_backoff`](Self::reopen_backoff).
    pub fn reopen_lost_devices(mut self, on: bool) -> Self {
        self.reopen = Some(on);
        self
    }

    /// With [`reopen_lost_devices`](Self::reopen_lost_devices): a device lost more than
    /// `max_losses` times within `within` stays down (its
    /// [`DeviceState`](crate::DeviceState) says so) instead of being reopened again and again.
    /// Default 3 losses within 60 s.
    pub fn reopen_budget(mut self, max_losses: usize, within: Duration) -> Self {
        self.budget.max_losses = max_losses;
        self.budget.window = within;
        self
    }

    /// With [`reopen_lost_devices`](Self::reopen_lost_devices): how long after a loss the
    /// device is reopened, doubled for each further loss within the budget's window. Default
    /// 100 ms.
    pub fn reopen_backoff(mut self, first: Duration) -> Self {
        self.budget.backoff = first;
        self
    }

    /// With [`reopen_lost_devices`](Self::reopen_lost_devices): how many times a job that was
    /// running when its device was lost runs again on the reopened device, if it writes no
    /// resident buffer (so running it twice changes nothing but its own outputs). A job
    /// running at more losses than that fails [`Error::Poisoned`]: it
    /// is likely what brings the device down (a kernel that never finishes trips the
    /// watchdog each time), and later jobs of its kernels are refused on that device with
    /// [`Error::Quarantined`] for the budget's window (see
    /// [`reopen_budget`](Self::reopen_budget)). Default 2.
    pub fn max_replays(mut self, n: u32) -> Self {
        self.budget.max_replays = n;
        self
    }

    /// Calls `hook` on an engine thread (`wgpu-batch-reopen{index}`) each time a device is
    /// lost while [`reopen_lost_devices`](Self::reopen_lost_devices) is on, with the device's
    /// description then: its [`state`](crate::DeviceInfo::state) is `Recovering` while a new
    /// device is on its way (or, for an adopted device, until the application hands one to
    /// [`Engine::replace_device`](crate::Engine::replace_device)), and the hook is called once
    /// more with `Down` if the device stays down. The hook may call into the engine, including
    /// `replace_device`; a slow hook delays the reopening.
    pub fn on_device_lost(
        mut self,
        hook: impl Fn(crate::DeviceInfo) + Send + Sync + 'static,
    ) -> Self {
        self.on_lost = Some(crate::station::LostHook(Arc::new(hook)));
        self
    }

    /// Whether each read-only resident buffer ([`Engine::replicate`](crate::Engine::replicate),
    /// [`Engine::upload_read_only_to`](crate::Engine::upload_read_only_to)) keeps a copy of its
    /// bytes in host memory, from which a reopened device gets it back. It costs the buffer's
    /// size once, for as long as the buffer lives
    /// ([`EngineStats::kept_copy_bytes`](crate::EngineStats::kept_copy_bytes)). Default on.
    /// Off, a replicated buffer comes back from a surviving device's copy when there is one,
    /// and is otherwise lost with its device like a writable buffer
    /// ([`Error::BufferLost`]).
    pub fn keep_read_only_copies(mut self, on: bool) -> Self {
        self.keep_copies = on;
        self
    }

    /// Enumerates adapters, opens the devices (or adopts one, see
    /// [`with_device`](Self::with_device)) and starts one executor per device and the
    /// engine's watchdog. Enumeration and device requests run under the process-wide
    /// enumeration lock, so engines built at once on several threads take turns there.
    pub fn build(mut self) -> Result<Engine> {
        let adopted = self.adopted.take();
        let (instance, opened) = match adopted {
            Some(one) => (None, vec![adapters::computes(one)?]),
            None => {
                let (instance, opened) = adapters::enumerating(|| self.open())?;
                (Some(instance), opened)
            }
        };
        let shared = instance.is_none();
        let watch = Watchdog::channel();
        let mut cores = Vec::new();
        let mut stations = Vec::new();
        for (adapter, device, queue) in opened {
            let index = cores.len();
            let info = adapters::device_info(&adapter, &device, index);
            log::info!(
                "device {index}: {} ({:?}, {:?})",
                info.adapter,
                info.backend,
                info.device_type
            );
            let health = Arc::new(Health::new(index, Watchdog::waker(&watch.0, &watch.2)));
            let opening = self.opening(shared)(&adapter, &device);
            let core = DeviceCore::start(info, device, queue, health, opening)?;
            cores.push(core.inbox.clone());
            let recipe = (self.reopen.unwrap_or(!shared))
                .then(|| self.recipe(instance.clone(), &adapter, &watch, shared));
            stations.push(Station::new(core, recipe));
        }
        let inboxes = cores;
        let watchdog = Watchdog::start(watch, inboxes, self.gpu_timeout).map_err(|e| {
            Error::RequestDevice {
                adapter: "(watchdog)".into(),
                message: e.to_string(),
            }
        })?;
        let adapters = stations.iter().map(|s| s.info()).collect();
        Engine::assemble(EngineParts {
            instance,
            adapters,
            stations,
            watchdog,
            default_timeout: self.default_timeout,
            balance: self.balance,
            keep_copies: self.keep_copies,
            queue_capacity: self.queue_capacity,
            #[cfg(feature = "metrics")]
            metrics_interval: self.metrics_interval,
        })
    }

    /// How a device's core starts (for the first device on an adapter and for a reopened one).
    fn opening(&self, shared: bool) -> impl Fn(&wgpu::Adapter, &wgpu::Device) -> Opening + use<> {
        let (cfg, capacity, gpu_timeout) = (self.batch, self.queue_capacity, self.gpu_timeout);
        let dir = self.pipeline_cache_dir.clone();
        move |adapter, device| Opening {
            cfg,
            capacity,
            gpu_timeout,
            shared,
            disk: (dir.as_deref()).and_then(|d| DiskCache::open(d, &adapter.get_info(), device)),
        }
    }

    /// How a lost device on `adapter` is reopened (see `station.rs`).
    fn recipe(
        &self,
        instance: Option<wgpu::Instance>,
        adapter: &wgpu::Adapter,
        watch: &(flume::Sender<Msg>, flume::Receiver<Msg>, Arc<AtomicBool>),
        shared: bool,
    ) -> Recipe {
        let (tx, parked) = (watch.0.clone(), watch.2.clone());
        let cache = self.pipeline_cache_dir.is_some();
        Recipe {
            reopen: instance.map(|instance| Reopen {
                instance,
                adapter: adapter.get_info(),
                request: (self.batch.gpu_timing, self.map_storage, cache),
            }),
            opening: Box::new(self.opening(shared)),
            waker: Box::new(move || Watchdog::waker(&tx, &parked)),
            watch: Watchdog::replacer(&watch.0),
            budget: self.budget,
            on_lost: self.on_lost.clone(),
            capacity: self.queue_capacity,
        }
    }

    /// The instance, and every device opened on the adapters that match the filters.
    #[allow(clippy::type_complexity)] // one use, named by the caller's destructuring
    fn open(
        &self,
    ) -> Result<(
        wgpu::Instance,
        Vec<(wgpu::Adapter, wgpu::Device, wgpu::Queue)>,
    )> {
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
        let found = adapters::pick_adapters(&instance, backends, filter.as_deref())?;
        let mut opened = Vec::new();
        let mut last_err = None;
        for adapter in found {
            for _ in 0..self.devices_per_adapter {
                let (timing, map) = (self.batch.gpu_timing, self.map_storage);
                let cache = self.pipeline_cache_dir.is_some();
                match adapters::request_device(&adapter, timing, map, cache) {
                    Ok((device, queue)) => opened.push((adapter.clone(), device, queue)),
                    Err(e) => {
                        log::warn!("skipping a device: {e}");
                        last_err = Some(e);
                    }
                }
            }
        }
        match (opened.is_empty(), last_err) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(Error::NoAdapter(adapters::INSTALL_HINT.into())),
            _ => Ok((instance, opened)),
        }
    }
}
