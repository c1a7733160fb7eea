//! The [`Engine`]: device choice and submission, jobs held for a device being replaced,
//! shutdown. Its resident buffers are in `buffers.rs`.

mod buffers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::adapters::DeviceInfo;
use crate::balance::{Balance, Candidate};
use crate::device::DeviceCore;
use crate::device::reply::{DeadlineTimer, JobHandle};
use crate::device::watchdog::Watchdog;
use crate::error::{Error, Result};
use crate::job::{Job, JobOutput, Rejected};
use crate::kernel::compile::{Kernel, KernelSource};
use crate::memory::buffer::{COPY_WGSL, Residents, next_engine_id};
use crate::observe::stats::EngineStats;
use crate::station::Station;

/// What the builder hands over (see `builder.rs`).
pub(crate) struct EngineParts {
    /// `None` for an adopted device (the application keeps its instance).
    pub(crate) instance: Option<wgpu::Instance>,
    pub(crate) adapters: Vec<DeviceInfo>,
    pub(crate) stations: Vec<Arc<Station>>,
    pub(crate) watchdog: Watchdog,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) balance: Balance,
    /// Whether read-only resident buffers keep a host copy.
    pub(crate) keep_copies: bool,
    /// Jobs each device's queue holds (`EngineBuilder::queue_capacity`).
    pub(crate) queue_capacity: usize,
    /// How often the `metrics` feature publishes.
    #[cfg(feature = "metrics")]
    pub(crate) metrics_interval: Duration,
}

pub(crate) struct EngineInner {
    /// Process-unique: what resident buffers remember of the engine that made them.
    id: u64,
    /// Kept alive for the devices' sake (`None` for an adopted device).
    _instance: Option<wgpu::Instance>,
    /// The devices as opened (their adapters' names, backends, types).
    adapters: Vec<DeviceInfo>,
    /// Every device position; fixed after build (a reopened device takes its lost one's
    /// place, see `station.rs`).
    stations: Vec<Arc<Station>>,
    /// Fails stalled devices and wakes async waiters at their deadlines.
    watchdog: Watchdog,
    /// Where async waiters register their deadlines.
    deadlines: DeadlineTimer,
    /// Rotates the starting point of device choice so ties spread out.
    rotate: AtomicUsize,
    /// Set once by shutdown; submit checks it first.
    shutting_down: AtomicBool,
    /// Budget of jobs that set none.
    default_timeout: Option<Duration>,
    /// How device choice weighs devices.
    balance: Balance,
    /// Jobs each device's queue holds.
    queue_capacity: usize,
    /// Publishes the statistics through the `metrics` facade.
    #[cfg(feature = "metrics")]
    publisher: crate::observe::publish::Publisher,
    /// Copies a resident buffer into a job output, for [`Engine::read`].
    copy: Kernel,
    /// The read-only resident buffers, to restore on a reopened device.
    residents: Arc<Residents>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl EngineInner {
    /// The device serving each position now.
    fn cores(&self) -> Vec<Arc<DeviceCore>> {
        self.stations.iter().map(|s| s.core()).collect()
    }

    /// Stops accepting jobs, lets every executor finish (or leaves behind one stuck after a
    /// loss), then stops the watchdog. Idempotent.
    fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for station in &self.stations {
            station.stop();
            let core = station.core();
            if core.usable() {
                core.save_pipelines(); // what the executor built since (fused kernels)
            }
        }
        self.watchdog.stop();
        #[cfg(feature = "metrics")]
        self.publisher.stop(); // the final figures
    }
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
    /// Every opened device, in index order.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.inner.stations.iter().map(|s| s.info()).collect()
    }

    /// Builds the engine from what the builder opened, and prepares the read-back kernel.
    pub(crate) fn assemble(parts: EngineParts) -> Result<Engine> {
        let copy = Kernel::compile(KernelSource::wgsl("wgpu-batch read", COPY_WGSL))?;
        #[cfg(feature = "metrics")]
        let publisher = publisher(&parts.stations, parts.metrics_interval)?;
        let residents = Arc::new(Residents::new(parts.keep_copies));
        crate::fleet::Fleet::join(&parts.stations, &residents, &copy);
        let engine = Engine {
            inner: Arc::new(EngineInner {
                id: next_engine_id(),
                _instance: parts.instance,
                adapters: parts.adapters,
                deadlines: parts.watchdog.deadlines(),
                watchdog: parts.watchdog,
                stations: parts.stations,
                rotate: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                default_timeout: parts.default_timeout,
                balance: parts.balance,
                queue_capacity: parts.queue_capacity,
                #[cfg(feature = "metrics")]
                publisher,
                copy: copy.clone(),
                residents,
            }),
        };
        for core in engine.inner.cores() {
            core.prepare(&copy)?;
        }
        Ok(engine)
    }

    /// How many jobs the engine's queues take for sure: each device's queue capacity
    /// ([`EngineBuilder::queue_capacity`](crate::EngineBuilder::queue_capacity)) times its
    /// devices. Up to this many jobs waiting to run, `try_submit` never fails with
    /// [`Error::QueueFull`] (a device moves queued jobs onto its board as it batches them,
    /// making room, so it may take more).
    pub fn queue_capacity(&self) -> usize {
        self.inner
            .queue_capacity
            .saturating_mul(self.inner.stations.len())
    }

    /// The devices as the engine opened them, lost ones included (a lost device keeps its
    /// index).
    pub fn adapters(&self) -> Vec<DeviceInfo> {
        self.inner.adapters.clone()
    }

    /// Validates `source` (naga, on this thread) and builds its pipeline on every device, so
    /// shader errors surface here rather than on a job.
    pub fn kernel(&self, source: KernelSource) -> Result<Kernel> {
        let kernel = Kernel::compile(source)?;
        for core in self.inner.cores().iter().filter(|s| s.usable()) {
            core.prepare(&kernel)?;
            core.save_pipelines(); // a warm start for the next process (see `kernel/warm.rs`)
        }
        Ok(kernel)
    }

    /// Validates `job` and queues it on an eligible device chosen by the engine's [`Balance`]
    /// among those whose queue has room; only when every one is full does it block, on the
    /// one the rule prefers. The job's uploads are written into the device's mapped upload
    /// memory on this thread.
    pub fn submit(&self, job: Job) -> Result<JobHandle> {
        self.enqueue(job, true).map_err(|r| r.error)
    }

    /// Like [`submit`](Engine::submit) but never blocks: when the queue of every eligible
    /// device is full (or the job's pinned device's is) the job comes back in [`Rejected`]
    /// with [`Error::QueueFull`].
    #[allow(clippy::result_large_err)] // the job comes back by value, as flume's TrySendError does
    pub fn try_submit(&self, job: Job) -> std::result::Result<JobHandle, Rejected> {
        self.enqueue(job, false)
    }

    /// Submits `job` and waits for it. On a device with nothing outstanding this thread runs
    /// the job itself, as a batch of one, without queueing it (the idle fast path); otherwise
    /// it queues it like [`submit`](Engine::submit) and waits (running the device's batches
    /// itself when nobody else is, as every [`JobHandle::wait`] does).
    pub fn run(&self, job: Job) -> Result<JobOutput> {
        let queued = |job| {
            self.enqueue(job, true)
                .map_err(|r: Rejected| r.error)?
                .wait()
        };
        let core = match self.choose(&job) {
            Ok(core) => core,
            // No device can take it now: the queue waits for one being reopened.
            Err(Error::DeviceLost { .. }) => return queued(job),
            Err(e) => return Err(e),
        };
        core.validate(&job)?;
        let deadline = self.deadline_of(&job, Instant::now());
        // As a queued job does, one that may run again after a loss keeps a copy while it runs.
        let again = (core.reopens() && job.is_idempotent()).then(|| job.clone());
        match (core.run_now(job, deadline), again) {
            (Ok(Err(Error::DeviceLost { .. })), Some(job)) => queued(job),
            (Ok(result), _) => result,
            (Err(job), _) => queued(job),
        }
    }

    /// Chooses a device for `job`, validates it there and queues it. A job that may go
    /// anywhere is offered to another device, a bounded number of times, when the chosen one
    /// filled up between the choice and the send, or was lost before the job entered its
    /// queue; so `QueueFull` means every eligible device was full.
    #[allow(clippy::result_large_err)] // as `try_submit`
    fn enqueue(&self, mut job: Job, block: bool) -> std::result::Result<JobHandle, Rejected> {
        let mut last = Error::QueueFull;
        for _ in 0..=self.inner.stations.len() {
            let chosen = match self.choose(&job) {
                Err(error @ Error::DeviceLost { .. }) => match self.hold_or_wait(job, block) {
                    Ok(Held::Handle(handle)) => return Ok(handle),
                    Ok(Held::Ready(back)) => {
                        job = back;
                        self.choose(&job)
                    }
                    Err((back, why)) => {
                        let error = match why {
                            Error::QueueFull | Error::DeadlineExpired => why,
                            _ => error,
                        };
                        return Err(Rejected { error, job: back });
                    }
                },
                other => other,
            };
            let core = match chosen.and_then(|s| s.validate(&job).map(|_| s)) {
                Ok(core) => core,
                Err(error) => return Err(Rejected { error, job }),
            };
            let deadline = self.deadline_of(&job, Instant::now());
            let timer = deadline.map(|_| self.inner.deadlines.clone());
            match core.enqueue(job, deadline, timer, block) {
                Err(r) if r.job.device.is_none() && elsewhere(&r.error, &core) => {
                    (job, last) = (r.job, r.error);
                }
                done => return done,
            }
        }
        Err(Rejected { error: last, job })
    }

    /// Holds `job` at a position whose lost device is being replaced and that could take it,
    /// for the new device; hands it back with why not.
    #[allow(clippy::result_large_err)] // as `try_submit`
    fn hold(&self, job: Job) -> std::result::Result<JobHandle, (Job, Error)> {
        let cores = self.inner.cores();
        // A loss found by a failed operation (a submit's upload) starts its recovery here.
        cores.iter().for_each(|c| c.close_if_lost());
        let holds = match self.eligible(&job, &cores) {
            Ok(holds) => holds,
            Err(e) => return Err((job, e)),
        };
        let mut why = cores[0].drop_error();
        let mut job = job;
        for station in &self.inner.stations {
            let i = station.index;
            if job.device.is_some_and(|d| d != i) || holds.as_ref().is_some_and(|h| !h[i]) {
                continue;
            }
            if let Err(e) = station.admits(&job) {
                return Err((job, e));
            }
            let deadline = self.deadline_of(&job, Instant::now());
            let timer = deadline.map(|_| self.inner.deadlines.clone());
            match station.hold(job, deadline, timer) {
                Ok(handle) => return Ok(handle),
                Err((back, e)) => (job, why) = (back, e),
            }
        }
        Err((job, why))
    }

    /// Holds `job` for a lost device being replaced ([`hold`](Self::hold)); blocking, waits
    /// while the held jobs fill their capacity or the loss is not yet taken in, until the job
    /// is held, a device can take it (it comes back), or its deadline passes.
    #[allow(clippy::result_large_err)] // as `try_submit`
    fn hold_or_wait(&self, mut job: Job, block: bool) -> std::result::Result<Held, (Job, Error)> {
        let deadline = self.deadline_of(&job, Instant::now());
        loop {
            let why = match self.hold(job) {
                Ok(handle) => return Ok(Held::Handle(handle)),
                Err((back, why)) => {
                    job = back;
                    why
                }
            };
            let mut stations = self.inner.stations.iter();
            let reopening =
                stations.any(|s| job.device.is_none_or(|d| d == s.index) && s.reopening());
            if !block || !reopening {
                return Err((job, why));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err((job, Error::DeadlineExpired));
            }
            std::thread::sleep(Duration::from_micros(500));
            if !matches!(self.choose(&job), Err(Error::DeviceLost { .. })) {
                return Ok(Held::Ready(job));
            }
        }
    }

    /// `job`'s deadline if submitted at `now`: the earlier of its own deadline and timeout, or
    /// the engine's default timeout if it sets neither. A budget past the end of time
    /// (`Duration::MAX`) means no deadline.
    fn deadline_of(&self, job: &Job, now: Instant) -> Option<Instant> {
        let within = |b: Duration| now.checked_add(b);
        match (job.deadline, job.timeout) {
            (None, None) => self.inner.default_timeout.and_then(within),
            (at, budget) => at.into_iter().chain(budget.and_then(within)).min(),
        }
    }

    /// Per-device counters and latency percentiles. The counters are atomics; the queue
    /// depth takes each device's board lock for a moment (no submit path waits on it).
    pub fn stats(&self) -> EngineStats {
        let devices = (self.inner.cores().iter())
            .map(|s| s.stats().snapshot(s.info.index, s.queue_depth()))
            .collect();
        EngineStats {
            devices,
            kept_copy_bytes: self.inner.residents.kept_bytes(),
        }
    }

    /// Publishes every device's statistics through the `metrics` facade now, rather than at
    /// the publisher's next period (see
    /// [`EngineBuilder::metrics_interval`](crate::EngineBuilder::metrics_interval) for the
    /// metrics). For a scrape that must see the jobs just finished, or before exiting.
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self) {
        self.inner.publisher.publish_now();
    }

    /// Stops accepting jobs, runs every job already queued, and joins every executor thread.
    /// Later submits fail with [`Error::Shutdown`]. Dropping the last clone does the same.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Hands the engine a new device and queue to replace its lost adopted device `index`
    /// (see [`EngineBuilder::with_device`](crate::EngineBuilder::with_device) and
    /// [`EngineBuilder::on_device_lost`](crate::EngineBuilder::on_device_lost)): the device
    /// takes the lost one's index, statistics and next generation, read-only resident buffers
    /// come back on it, and the jobs that waited for it run. `adapter` is the adapter it was
    /// requested from. [`Error::RequestDevice`] when device `index` is not an adopted device
    /// that was lost (with reopening on), or the device cannot run compute work.
    pub fn replace_device(
        &self,
        index: usize,
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<()> {
        let station = self.inner.stations.get(index).ok_or(Error::Limit {
            what: "device index",
            requested: index as u64,
            limit: self.inner.stations.len().saturating_sub(1) as u64,
        })?;
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        let (adapter, device, queue) = crate::adapters::computes((adapter.clone(), device, queue))?;
        station.replace(&adapter, device, queue)?;
        station.core().prepare(&self.inner.copy).map(|_| ())
    }

    /// Destroys device `index` as a driver reset would, to test failover. Its queued and
    /// running jobs resolve with [`Error::DeviceLost`]; later jobs go to other devices.
    #[cfg(feature = "test-hooks")]
    pub fn lose_device(&self, index: usize) {
        if let Some(core) = self.inner.stations.get(index).map(|s| s.core()) {
            core.destroy();
        }
    }

    /// Makes device `index`'s executor panic at its next batch, to test that a panic becomes
    /// a device loss.
    #[cfg(feature = "test-hooks")]
    pub fn panic_executor(&self, index: usize) {
        if let Some(core) = self.inner.stations.get(index).map(|s| s.core()) {
            core.panic_next();
        }
    }

    /// The most threads that were ever inside the process-wide enumeration lock at once (it
    /// must be one).
    #[cfg(feature = "test-hooks")]
    pub fn max_concurrent_enumerations() -> usize {
        crate::adapters::hooks::most()
    }

    /// Destroys device `index` without telling the engine: the loss is noticed only when wgpu
    /// reports it (at the executor's next poll), as with a real driver reset.
    #[cfg(feature = "test-hooks")]
    pub fn destroy_device(&self, index: usize) {
        if let Some(core) = self.inner.stations.get(index).map(|s| s.core()) {
            core.destroy_quietly();
        }
    }

    /// The device for `job` (see `pick`), unless a job of one of its kernels was
    /// poisoned there a short while ago ([`Error::Quarantined`]).
    fn choose(&self, job: &Job) -> Result<Arc<DeviceCore>> {
        let core = self.pick(job)?;
        self.inner.stations[core.info.index].admits(job)?;
        Ok(core)
    }

    /// The device for `job`: its pinned device, or the best usable one (by the engine's
    /// [`Balance`]) among those that hold every resident buffer it binds. Atomics only.
    fn pick(&self, job: &Job) -> Result<Arc<DeviceCore>> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        let cores = inner.cores();
        let holds = self.eligible(job, &cores)?;
        let eligible = |i: usize| holds.as_ref().is_none_or(|h| h[i]);
        if let Some(i) = job.device {
            let core = cores.get(i).ok_or(Error::Limit {
                what: "device index",
                requested: i as u64,
                limit: cores.len().saturating_sub(1) as u64,
            })?;
            if !eligible(i) {
                if let Some(device) = Engine::lost_copy(job, i, core.info.generation) {
                    return Err(Error::BufferLost { device });
                }
                let problem =
                    format!("pinned to device {i}, but a buffer it binds has no copy there");
                return Err(Error::binding(
                    job.kernel().label(),
                    Engine::resident_binding(job).unwrap_or(0),
                    problem,
                ));
            }
            return if core.usable() {
                Ok(core.clone())
            } else {
                Err(core.drop_error())
            };
        }
        let candidates: Vec<Candidate> = (cores.iter())
            .filter(|s| eligible(s.info.index) && s.usable())
            .map(|s| Candidate {
                index: s.info.index,
                outstanding: s.stats().outstanding(),
                cost_ns: s.stats().cost_ns(),
                room: s.has_room(),
            })
            .collect();
        let turn = inner.rotate.fetch_add(1, Ordering::Relaxed);
        match inner.balance.pick(&candidates, turn) {
            Some(i) => Ok(cores[i].clone()),
            None => {
                let holder = (cores.iter())
                    .find(|s| eligible(s.info.index))
                    .unwrap_or(&cores[0]);
                Err(holder.drop_error())
            }
        }
    }

    /// Device `index`, or a `Limit` error naming the highest index.
    fn core(&self, index: usize) -> Result<Arc<DeviceCore>> {
        let station = self.inner.stations.get(index).ok_or(Error::Limit {
            what: "device index",
            requested: index as u64,
            limit: self.inner.stations.len().saturating_sub(1) as u64,
        })?;
        Ok(station.core())
    }
}

/// What became of a job no usable device could take (see `Engine::hold_or_wait`).
enum Held {
    /// Held for the device replacing a lost one.
    Handle(JobHandle),
    /// A device can take it now.
    Ready(Job),
}

/// Starts the `metrics` publisher over the devices' statistics (a reopened device continues
/// its lost one's).
#[cfg(feature = "metrics")]
fn publisher(
    stations: &[Arc<Station>],
    every: Duration,
) -> Result<crate::observe::publish::Publisher> {
    let sources = (stations.iter())
        .map(|s| {
            let station = s.clone();
            let core = s.core();
            crate::observe::publish::Source {
                info: core.info.clone(),
                stats: core.stats().clone(),
                depth: Box::new(move || station.core().queue_depth()),
            }
        })
        .collect();
    crate::observe::publish::Publisher::start(sources, every).map_err(|e| Error::RequestDevice {
        adapter: "(metrics publisher)".into(),
        message: e.to_string(),
    })
}

/// Whether a job refused with `error` by `core` may try another device: `core` was full, or
/// was lost before the job entered its queue.
fn elsewhere(error: &Error, core: &DeviceCore) -> bool {
    *error == Error::QueueFull || (matches!(error, Error::DeviceLost { .. }) && !core.usable())
}
