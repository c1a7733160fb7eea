//! One device position of the engine across losses: the device serving it now, and, when
//! reopening is on (`EngineBuilder::reopen_lost_devices`, the default), how a lost device is
//! replaced: by a new device on the same adapter, or, for an adopted device, by the one the
//! application hands over (`Engine::replace_device`).
//!
//! **At a loss.** When a lost device's board is closed ([`Inbox::close`](crate::device::inbox::Inbox::close)), the jobs it held
//! that were never encoded (pending on its board or still in its channel) are kept instead of
//! failed. A job that was running may have run partly: if it writes no resident buffer it is
//! kept too and runs again (at most `max_replays` times; a job running at more losses than
//! that is `Poisoned`, and its kernels are refused here, `Quarantined`, for the budget's
//! window); otherwise it fails `DeviceLost`. A thread named `wgpu-batch-reopen{index}` starts.
//! It tells the application (`EngineBuilder::on_device_lost`) and moves each kept job that
//! another usable device can take (not pinned here, holding its resident buffers) there at
//! once; the rest wait for this position's next device.
//!
//! **Reopening.** The thread checks the budget (at most `max_losses` losses within `window`;
//! past it the position stays down and says so), waits the backoff (`backoff`, doubled for
//! each recent loss), then, under the process-wide enumeration lock, finds the adapter again
//! (same backend, vendor, device id and name) and requests a new device. An adopted device
//! instead waits, for as long as it takes, for the application's replacement. The new device
//! gets the next generation, the same index and the same statistics. Before it serves, the
//! read-only resident buffers that had a copy here are made again on it (`fleet.rs`); the
//! other resident buffers of the lost device are gone (jobs and reads that need them get
//! `BufferLost`). Then the kept jobs, and the jobs held meanwhile, are queued on it with their
//! own handles. Pipelines are built again from each kernel's module as jobs need them.
//!
//! **Meanwhile** a submitted job that no other device can take is held here (up to the
//! queue's capacity) and its handle returned; it waits for the new device like a kept job,
//! until its deadline. When the position goes down instead, the held and kept jobs move to
//! another device if one can take them, and fail `DeviceLost` otherwise.
//!
//! Locks: the held jobs, then the current core (read for a moment by every submit and written
//! once per recovery, under the held jobs' lock, so a job is either held before the new
//! device serves or sees it); the recovery thread's handle, which shutdown takes and joins;
//! the loss times. Nothing else is taken while one is held.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::adapters::{self, DeviceInfo, DeviceState};
use crate::device::health::Health;
use crate::device::inbox::Keep;
use crate::device::reply::{DeadlineTimer, JobHandle, Responder};
use crate::device::{DeviceCore, Opening};
use crate::error::{Error, Result};
use crate::job::Job;

const UP: u8 = 0;
const RECOVERING: u8 = 1;
const DOWN: u8 = 2;

/// How a new device's core starts, from its adapter and device.
pub(crate) type OpeningFor = dyn Fn(&wgpu::Adapter, &wgpu::Device) -> Opening + Send + Sync;

/// Told of each device loss, with the device's description then (`EngineBuilder::on_device_lost`).
#[derive(Clone)]
pub(crate) struct LostHook(pub(crate) Arc<dyn Fn(DeviceInfo) + Send + Sync>);

impl std::fmt::Debug for LostHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LostHook")
    }
}

/// A kept or held job and its reply side.
type Waiting = Vec<(Job, Responder)>;

/// How a lost device is replaced (see the module docs).
pub(crate) struct Recipe {
    /// How to open a new device on the same adapter; `None` for an adopted device, which the
    /// application replaces.
    pub(crate) reopen: Option<Reopen>,
    /// How to start the new device's core.
    pub(crate) opening: Box<OpeningFor>,
    /// The watchdog's wake-up, for the new device's health.
    pub(crate) waker: Box<dyn Fn() -> Box<dyn Fn() + Send + Sync> + Send + Sync>,
    /// Hands the new device's board to the watchdog.
    pub(crate) watch: Box<dyn Fn(usize, Arc<crate::device::inbox::Inbox>) + Send + Sync>,
    pub(crate) budget: Budget,
    pub(crate) on_lost: Option<LostHook>,
    /// Most jobs held while the device is replaced (the queue's capacity).
    pub(crate) capacity: usize,
}

/// How the engine opens a new device on a lost one's adapter.
pub(crate) struct Reopen {
    pub(crate) instance: wgpu::Instance,
    /// The adapter the device was opened on, to find it again.
    pub(crate) adapter: wgpu::AdapterInfo,
    /// `request_device`'s settings: GPU timing, mapped storage, a pipeline cache.
    pub(crate) request: (bool, Option<bool>, bool),
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

/// What a station needs of the engine's other positions around a loss (see `fleet.rs`).
pub(crate) trait Fleet: Send + Sync {
    /// Queues `job` on a usable device other than `except` that can take it now (not pinned,
    /// holding its resident buffers, not refusing its kernels); hands it back otherwise.
    fn elsewhere(&self, job: Job, responder: Responder, except: usize) -> Option<(Job, Responder)>;
    /// Makes again on `core` the read-only resident buffers that had a copy at its position.
    fn restore(&self, core: &DeviceCore);
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
    /// Jobs kept from the lost device or submitted since, waiting for the next device.
    waiting: Mutex<Waiting>,
    /// The engine's other positions, set once the engine is built.
    fleet: OnceLock<Arc<dyn Fleet>>,
}

impl Station {
    /// A position served by `core`; with a `recipe`, a lost device is replaced.
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
            waiting: Mutex::new(Vec::new()),
            fleet: OnceLock::new(),
        });
        Station::arm(&station, &station.core());
        station
    }

    /// Joins the station to its engine's other positions (once).
    pub(crate) fn join(&self, fleet: Arc<dyn Fleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// The device serving this position now.
    pub(crate) fn core(&self) -> Arc<DeviceCore> {
        self.core.read().clone()
    }

    /// The device's description, with its state and generation now.
    pub(crate) fn info(&self) -> DeviceInfo {
        let core = self.core();
        let mut info = core.info.clone();
        let replaced = self.recipe.is_some() && !self.stopped.load(Ordering::SeqCst);
        info.state = match self.state.load(Ordering::Acquire) {
            UP if !core.usable() && replaced => DeviceState::Recovering,
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

    /// Whether the lost device here is being replaced (and will be unless that fails).
    pub(crate) fn reopening(&self) -> bool {
        self.info().state == DeviceState::Recovering
    }

    /// Holds `job` for the device that will replace the lost one here, and returns its
    /// handle; hands it back with `QueueFull` when the held jobs fill the queue's capacity,
    /// or with `DeviceLost` when no replacement is under way.
    #[allow(clippy::result_large_err)] // the job comes back by value, as in `try_submit`
    pub(crate) fn hold(
        &self,
        job: Job,
        deadline: Option<Instant>,
        timer: Option<DeadlineTimer>,
    ) -> std::result::Result<JobHandle, (Job, Error)> {
        let mut waiting = self.waiting.lock();
        let core = self.core();
        if self.state.load(Ordering::Acquire) != RECOVERING || self.stopped.load(Ordering::SeqCst) {
            return Err((job, core.drop_error()));
        }
        if waiting.len() >= self.recipe.as_ref().map_or(0, |r| r.capacity) {
            return Err((job, Error::QueueFull));
        }
        let (handle, responder) = core.hold(&job, deadline, timer);
        waiting.push((job, responder));
        Ok(handle)
    }

    /// Stops replacing lost devices, fails the held jobs `Shutdown`, and stops the device
    /// serving now (see [`DeviceCore::stop`]).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let recovery = self.recovery.lock().take();
        // A recovery thread that drops the engine's last handle (in the application's loss
        // hook) shuts the engine down itself; it must not wait for itself.
        if let Some(join) = recovery.filter(|j| j.thread().id() != std::thread::current().id()) {
            let _ = join.join();
        }
        let held = std::mem::take(&mut *self.waiting.lock());
        for (_, responder) in held {
            responder.send(Err(Error::Shutdown));
        }
        self.core().stop();
    }

    /// Makes `core`'s board keep its never-encoded and replayable jobs at a loss, for this
    /// position (see [`take`](Self::take)).
    fn arm(station: &Arc<Station>, core: &DeviceCore) {
        let Some(recipe) = &station.recipe else {
            return;
        };
        let (weak, generation) = (Arc::downgrade(station), core.info.generation);
        let keeper = move |kept| match weak.upgrade() {
            Some(station) => Station::take(&station, generation, kept),
            None => drop(kept), // the engine is gone: each answers as it drops
        };
        let (quarantine, window) = (station.quarantine.clone(), recipe.budget.window);
        core.inbox.on_loss(Keep {
            keeper: Box::new(keeper),
            max_replays: recipe.budget.max_replays,
            poisoned: Box::new(move |job| quarantine.add(job, Instant::now() + window)),
        });
    }

    /// Takes jobs the lost device of `generation` kept (its board may hand over several
    /// lots): the first news of the loss starts the recovery; later lots wait with the first,
    /// or go to the device that replaced it, or elsewhere once the position is down.
    fn take(station: &Arc<Station>, generation: u32, kept: Waiting) {
        let mut waiting = station.waiting.lock();
        let current = station.core();
        let stopped = station.stopped.load(Ordering::SeqCst);
        if current.info.generation != generation {
            drop(waiting);
            return kept
                .into_iter()
                .for_each(|(job, r)| current.requeue(job, r));
        }
        match station.state.load(Ordering::Acquire) {
            _ if stopped => drop((waiting, kept)), // shutting down: each answers as it drops
            UP => {
                waiting.extend(kept);
                station.state.store(RECOVERING, Ordering::Release);
                drop(waiting);
                Station::start_recovery(station);
            }
            RECOVERING => waiting.extend(kept),
            _ => {
                drop(waiting);
                drop(station.move_elsewhere(kept));
            }
        }
    }

    /// Starts the recovery thread for the loss just taken.
    fn start_recovery(station: &Arc<Station>) {
        let mut slot = station.recovery.lock();
        let s = station.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("wgpu-batch-reopen{}", station.index))
            .spawn(move || s.recover());
        match spawned {
            Ok(join) => *slot = Some(join),
            Err(e) => {
                drop(slot);
                log::error!("device {}: cannot start its recovery: {e}", station.index);
                if let Some(recipe) = &station.recipe {
                    station.go_down(recipe);
                }
            }
        }
    }

    /// The recovery thread's body (see the module docs).
    fn recover(self: &Arc<Self>) {
        let Some(recipe) = &self.recipe else { return };
        let lost_at = Instant::now();
        let wait = self.charge(&recipe.budget, lost_at);
        let waiting = std::mem::take(&mut *self.waiting.lock());
        let rest = self.move_elsewhere(waiting);
        Station::take(self, self.core().info.generation, rest);
        let Some(reopen) = &recipe.reopen else {
            // Adopted: the jobs wait for the application's device (`Engine::replace_device`).
            self.tell(recipe);
            log::warn!(
                "device {} (adopted) was lost; its jobs wait for Engine::replace_device",
                self.index
            );
            return;
        };
        let Some(wait) = wait else {
            log::error!(
                "device {}: lost more than {} times within {:?}; it stays down",
                self.index,
                recipe.budget.max_losses,
                recipe.budget.window
            );
            return self.go_down(recipe);
        };
        self.tell(recipe);
        std::thread::sleep(wait);
        let opened = if self.stopped.load(Ordering::SeqCst) {
            Err(Error::Shutdown)
        } else {
            self.open(recipe, reopen)
        };
        match opened {
            Ok(core) => self.serve(recipe, core, lost_at),
            Err(e) => {
                log::error!("device {}: could not be reopened: {e}", self.index);
                self.go_down(recipe);
            }
        }
    }

    /// Tells the application of the loss, if it asked.
    fn tell(&self, recipe: &Recipe) {
        if let Some(hook) = &recipe.on_lost {
            (hook.0)(self.info());
        }
    }

    /// The position stays down: the waiting jobs go to another device or fail.
    fn go_down(&self, recipe: &Recipe) {
        let waiting = {
            let mut waiting = self.waiting.lock();
            self.state.store(DOWN, Ordering::Release);
            std::mem::take(&mut *waiting)
        };
        self.tell(recipe);
        drop(self.move_elsewhere(waiting));
    }

    /// Queues on other devices the jobs they can take now; the rest come back.
    fn move_elsewhere(&self, jobs: Waiting) -> Waiting {
        let Some(fleet) = self.fleet.get() else {
            return jobs;
        };
        (jobs.into_iter())
            .filter_map(|(job, responder)| fleet.elsewhere(job, responder, self.index))
            .collect()
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
    fn open(&self, recipe: &Recipe, reopen: &Reopen) -> Result<DeviceCore> {
        let want = &reopen.adapter;
        let (adapter, device, queue) = adapters::enumerating(|| {
            let all = pollster::block_on(reopen.instance.enumerate_adapters(want.backend.into()));
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
            let (timing, map, cache) = reopen.request;
            let (device, queue) = adapters::request_device(&adapter, timing, map, cache)?;
            Ok::<_, Error>((adapter, device, queue))
        })?;
        self.start_core(recipe, &adapter, device, queue)
    }

    /// The core of the next device here.
    fn start_core(
        &self,
        recipe: &Recipe,
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<DeviceCore> {
        let old = self.core();
        let mut info = adapters::device_info(adapter, &device, self.index);
        info.generation = old.info.generation + 1;
        let health = Health::new(self.index, (recipe.waker)()).continuing(&old.health_stats());
        let opening = (recipe.opening)(adapter, &device);
        DeviceCore::start(info, device, queue, Arc::new(health), opening)
    }

    /// The application's replacement for the lost adopted device here (see
    /// `Engine::replace_device`).
    pub(crate) fn replace(
        self: &Arc<Self>,
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<()> {
        let refuse = |why: &str| Error::RequestDevice {
            adapter: adapter.get_info().name,
            message: format!("device {} {why}", self.index),
        };
        let Some(recipe) = self.recipe.as_ref().filter(|r| r.reopen.is_none()) else {
            return Err(refuse(
                "is not adopted (the engine reopens its own devices) or is not replaced at all",
            ));
        };
        if self.state.load(Ordering::Acquire) != RECOVERING {
            return Err(refuse("is not lost: nothing to replace"));
        }
        let lost_at = self
            .losses
            .lock()
            .back()
            .copied()
            .unwrap_or_else(Instant::now);
        let core = self.start_core(recipe, adapter, device, queue)?;
        self.serve(recipe, core, lost_at);
        Ok(())
    }

    /// Puts `core` into service, after restoring the read-only buffers on it, and queues the
    /// waiting jobs on it.
    fn serve(self: &Arc<Self>, recipe: &Recipe, core: DeviceCore, lost_at: Instant) {
        if self.stopped.load(Ordering::SeqCst) {
            core.stop(); // shutdown started meanwhile; it stops whatever serves after joining us
            return;
        }
        Station::arm(self, &core);
        if let Some(fleet) = self.fleet.get() {
            fleet.restore(&core);
        }
        let core = Arc::new(core);
        let generation = core.info.generation;
        let waiting = {
            let mut waiting = self.waiting.lock();
            *self.core.write() = core.clone();
            core.stats().record_recovery(lost_at);
            self.state.store(UP, Ordering::Release);
            std::mem::take(&mut *waiting)
        };
        (recipe.watch)(self.index, core.inbox.clone());
        let moved = waiting.len();
        crate::observe::trace::device_reopened(self.index, generation, moved, lost_at.elapsed());
        for (job, responder) in waiting {
            core.requeue(job, responder);
        }
        log::warn!(
            "device {}: replaced by {} (generation {generation}) in {:.1?}; {moved} waiting jobs moved to it",
            self.index,
            core.info.adapter,
            lost_at.elapsed()
        );
    }
}
