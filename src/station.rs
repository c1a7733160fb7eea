//! One device position of the engine across losses: the device serving it now, and, when
//! reopening is on (`EngineBuilder::reopen_lost_devices`, the default; never for an adopted
//! device), how a lost device is replaced by a new one on the same adapter.
//!
//! **Reopening.** When a lost device's board is closed ([`Inbox::close`]), the jobs it held
//! that were never encoded (pending on its board or still in its channel) are kept instead of
//! failed, and a thread named `wgpu-batch-reopen{index}` starts. It checks the budget (at most
//! `max_losses` losses within `window`; past it the position stays down and says so), waits
//! the backoff (`backoff`, doubled for each recent loss), then, under the process-wide
//! enumeration lock, finds the adapter again (same backend, vendor, device id and name) and
//! requests a new device. The new device gets the next generation, the same index and the
//! same statistics, and the kept jobs are queued on it with their own handles. Pipelines are
//! built again from each kernel's module as jobs need them. A job that was running at the
//! loss may have run partly: if it writes no resident buffer it is kept too and runs again
//! (at most `max_replays` times; a job running at more losses than that is `Poisoned`, and
//! its kernels are refused here, `Quarantined`, for the budget's window), otherwise it fails
//! `DeviceLost`. Resident buffers of the lost device are gone (jobs and
//! reads that need them get `BufferLost`). Meanwhile a blocking submit that no other device
//! can take waits for the new device (until its deadline).
//!
//! Locks (leaves: nothing else is taken while they are held): the current core, read for a
//! moment by every submit and written once per recovery; the recovery thread's handle, which
//! shutdown takes and joins; the loss times.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::adapters::{self, DeviceInfo, DeviceState};
use crate::device::health::Health;
use crate::device::inbox::Keep;
use crate::device::reply::Responder;
use crate::device::{DeviceCore, Opening};
use crate::error::{Error, Result};
use crate::job::Job;

const UP: u8 = 0;
const RECOVERING: u8 = 1;
const DOWN: u8 = 2;

/// How a new device's core starts, from its adapter and device.
pub(crate) type OpeningFor = dyn Fn(&wgpu::Adapter, &wgpu::Device) -> Opening + Send + Sync;

/// How a lost device is reopened (see the module docs).
pub(crate) struct Recipe {
    pub(crate) instance: wgpu::Instance,
    /// The adapter the device was opened on, to find it again.
    pub(crate) adapter: wgpu::AdapterInfo,
    /// `request_device`'s settings: GPU timing, mapped storage, a pipeline cache.
    pub(crate) request: (bool, Option<bool>, bool),
    /// How to start the new device's core.
    pub(crate) opening: Box<OpeningFor>,
    /// The watchdog's wake-up, for the new device's health.
    pub(crate) waker: Box<dyn Fn() -> Box<dyn Fn() + Send + Sync> + Send + Sync>,
    /// Hands the new device's board to the watchdog.
    pub(crate) watch: Box<dyn Fn(usize, Arc<crate::device::inbox::Inbox>) + Send + Sync>,
    pub(crate) budget: Budget,
}

/// How often a device may be reopened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Most losses within `window` that are still reopened.
    pub(crate) max_losses: usize,
    pub(crate) window: Duration,
    /// The wait before the first reopen; doubled for each further loss within `window`.
    pub(crate) backoff: Duration,
    /// Most times a job running at a loss is run again (then it is `Poisoned`).
    pub(crate) max_replays: u32,
}

/// Kernels one of whose jobs was poisoned here, refused until an instant.
#[derive(Default)]
struct Quarantine {
    /// Whether any is refused (so a submit looks without locking when none is).
    any: AtomicBool,
    /// (kernel id, label, refused until); a leaf lock.
    kernels: Mutex<Vec<(u64, String, Instant)>>,
}

impl Quarantine {
    fn add(&self, job: &Job, until: Instant) {
        let mut kernels = self.kernels.lock();
        for step in &job.steps {
            let k = &step.kernel;
            kernels.push((k.id(), k.label().to_owned(), until));
        }
        self.any.store(true, Ordering::Release);
    }

    fn check(&self, job: &Job, device: usize) -> Result<()> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        let mut kernels = self.kernels.lock();
        kernels.retain(|(_, _, until)| *until > now);
        self.any.store(!kernels.is_empty(), Ordering::Release);
        let refused = job
            .steps
            .iter()
            .find_map(|s| kernels.iter().find(|(id, ..)| *id == s.kernel.id()));
        match refused {
            Some((_, label, until)) => Err(Error::Quarantined {
                kernel: label.clone(),
                device,
                remaining: until.saturating_duration_since(now),
            }),
            None => Ok(()),
        }
    }
}

/// See the module docs.
pub(crate) struct Station {
    pub(crate) index: usize,
    /// The device serving this position now (lock: see the module docs).
    core: RwLock<Arc<DeviceCore>>,
    state: AtomicU8,
    /// Losses within the budget's window, oldest first.
    losses: Mutex<VecDeque<Instant>>,
    recipe: Option<Recipe>,
    /// Set by shutdown: no device is reopened any more.
    stopped: AtomicBool,
    /// The recovery thread under way, joined by shutdown (which sets `stopped` first, so a
    /// recovery finishing meanwhile stops the device it opened or leaves it to shutdown).
    recovery: Mutex<Option<JoinHandle<()>>>,
    /// Kernels refused here after one of their jobs was poisoned.
    quarantine: Arc<Quarantine>,
}

impl Station {
    /// A position served by `core`; with a `recipe`, a lost device is reopened.
    pub(crate) fn new(core: DeviceCore, recipe: Option<Recipe>) -> Arc<Station> {
        let station = Arc::new(Station {
            index: core.info.index,
            core: RwLock::new(Arc::new(core)),
            state: AtomicU8::new(UP),
            losses: Mutex::new(VecDeque::new()),
            recipe,
            stopped: AtomicBool::new(false),
            recovery: Mutex::new(None),
            quarantine: Arc::default(),
        });
        Station::arm(&station, &station.core());
        station
    }

    /// The device serving this position now.
    pub(crate) fn core(&self) -> Arc<DeviceCore> {
        self.core.read().clone()
    }

    /// The device's description, with its state and generation now.
    pub(crate) fn info(&self) -> DeviceInfo {
        let core = self.core();
        let mut info = core.info.clone();
        let reopens = self.recipe.is_some() && !self.stopped.load(Ordering::SeqCst);
        info.state = match self.state.load(Ordering::Acquire) {
            UP if !core.usable() && reopens => DeviceState::Recovering,
            UP if !core.usable() => DeviceState::Down,
            UP => DeviceState::Up,
            RECOVERING => DeviceState::Recovering,
            _ => DeviceState::Down,
        };
        info
    }

    /// An error when a job of one of `job`'s kernels was poisoned here a short while ago.
    pub(crate) fn admits(&self, job: &Job) -> Result<()> {
        self.quarantine.check(job, self.index)
    }

    /// Whether the lost device here is being reopened (and will be unless it fails to open).
    pub(crate) fn reopening(&self) -> bool {
        self.info().state == DeviceState::Recovering
    }

    /// Stops reopening and stops the device serving now (see [`DeviceCore::stop`]).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let recovery = self.recovery.lock().take();
        if let Some(join) = recovery {
            let _ = join.join();
        }
        self.core().stop();
    }

    /// Makes `core`'s board keep its never-encoded jobs at a loss and start a recovery.
    fn arm(station: &Arc<Station>, core: &DeviceCore) {
        let Some(recipe) = &station.recipe else {
            return;
        };
        let weak = Arc::downgrade(station);
        let keeper = move |kept| {
            if let Some(station) = weak.upgrade() {
                Station::start_recovery(&station, kept);
            }
        };
        let (quarantine, window) = (station.quarantine.clone(), recipe.budget.window);
        core.inbox.on_loss(Keep {
            keeper: Box::new(keeper),
            max_replays: recipe.budget.max_replays,
            poisoned: Box::new(move |job| quarantine.add(job, Instant::now() + window)),
        });
    }

    /// Starts the recovery thread (one at a time); the `kept` jobs go to the new device.
    fn start_recovery(station: &Arc<Station>, kept: Vec<(Job, Responder)>) {
        let mut slot = station.recovery.lock();
        if station.stopped.load(Ordering::SeqCst) {
            return; // shutting down: the kept jobs answer as they drop
        }
        let s = station.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("wgpu-batch-reopen{}", station.index))
            .spawn(move || Station::recover(&s, kept));
        match spawned {
            Ok(join) => *slot = Some(join),
            Err(e) => log::error!("device {}: cannot start its recovery: {e}", station.index),
        }
    }

    /// The recovery thread's body (see the module docs).
    fn recover(self: &Arc<Self>, kept: Vec<(Job, Responder)>) {
        let Some(recipe) = &self.recipe else { return };
        let lost_at = Instant::now();
        let Some(wait) = self.charge(&recipe.budget, lost_at) else {
            self.state.store(DOWN, Ordering::Release);
            log::error!(
                "device {}: lost more than {} times within {:?}; it stays down",
                self.index,
                recipe.budget.max_losses,
                recipe.budget.window
            );
            return;
        };
        self.state.store(RECOVERING, Ordering::Release);
        std::thread::sleep(wait);
        let opened = if self.stopped.load(Ordering::SeqCst) {
            Err(Error::Shutdown)
        } else {
            self.open(recipe)
        };
        match opened {
            Ok(core) => self.serve(recipe, core, kept, lost_at),
            Err(e) => {
                self.state.store(DOWN, Ordering::Release);
                log::error!("device {}: could not be reopened: {e}", self.index);
            }
        }
    }

    /// Counts a loss against the budget: the wait before reopening, or `None` when the
    /// budget is spent.
    fn charge(&self, budget: &Budget, now: Instant) -> Option<Duration> {
        let mut losses = self.losses.lock();
        while losses
            .front()
            .is_some_and(|t| now.duration_since(*t) > budget.window)
        {
            losses.pop_front();
        }
        losses.push_back(now);
        let recent = losses.len();
        (recent <= budget.max_losses).then(|| {
            budget
                .backoff
                .saturating_mul(1 << (recent - 1).min(16) as u32)
        })
    }

    /// A new device on the same adapter, under the enumeration lock, and its core.
    fn open(&self, recipe: &Recipe) -> Result<DeviceCore> {
        let want = &recipe.adapter;
        let (adapter, device, queue) = adapters::enumerating(|| {
            let all = pollster::block_on(recipe.instance.enumerate_adapters(want.backend.into()));
            let adapter = all
                .into_iter()
                .find(|a| {
                    let i = a.get_info();
                    (i.backend, i.vendor, i.device, &i.name)
                        == (want.backend, want.vendor, want.device, &want.name)
                })
                .ok_or_else(|| Error::RequestDevice {
                    adapter: want.name.clone(),
                    message: "the adapter is gone".into(),
                })?;
            let (timing, map, cache) = recipe.request;
            let (device, queue) = adapters::request_device(&adapter, timing, map, cache)?;
            Ok::<_, Error>((adapter, device, queue))
        })?;
        let old = self.core();
        let mut info = adapters::device_info(&adapter, &device, self.index);
        info.generation = old.info.generation + 1;
        let health = Health::new(self.index, (recipe.waker)()).continuing(&old.health_stats());
        let opening = (recipe.opening)(&adapter, &device);
        DeviceCore::start(info, device, queue, Arc::new(health), opening)
    }

    /// Puts `core` into service and queues the `kept` jobs on it.
    fn serve(
        self: &Arc<Self>,
        recipe: &Recipe,
        core: DeviceCore,
        kept: Vec<(Job, Responder)>,
        lost_at: Instant,
    ) {
        if self.stopped.load(Ordering::SeqCst) {
            core.stop(); // shutdown started meanwhile; it stops whatever serves after joining us
            return;
        }
        Station::arm(self, &core);
        let core = Arc::new(core);
        *self.core.write() = core.clone();
        let generation = core.info.generation;
        core.stats().record_recovery(lost_at);
        self.state.store(UP, Ordering::Release);
        (recipe.watch)(self.index, core.inbox.clone());
        let moved = kept.len();
        crate::observe::trace::device_reopened(self.index, generation, moved, lost_at.elapsed());
        for (job, responder) in kept {
            core.requeue(job, responder);
        }
        log::warn!(
            "device {}: reopened on {} (generation {generation}) in {:.1?}; {moved} queued jobs moved to it",
            self.index,
            recipe.adapter.name,
            lost_at.elapsed()
        );
    }
}
