//! One opened device: its wgpu `Device`, its request channel, the board of jobs it holds, its
//! batch loop (run by waiting callers and by its executor thread), and how it handles loss and
//! shutdown. This is the one place the protocol is written; the other modules link here.
//!
//! # Locks, in the order they may be taken
//! 1. The process-wide enumeration lock (`adapters.rs`): instance creation, adapter
//!    enumeration and device requests, in `EngineBuilder::build` and in the reopening of a
//!    lost device (`station.rs`), nowhere else. Never held while taking any other lock;
//!    never taken on the submit path. (Each device position's current-core lock in
//!    `station.rs` is a leaf: read for a moment by every submit, written once per reopening.)
//! 2. The metrics publisher's `seen` lock (`observe/publish.rs`, feature `metrics`): held while it
//!    reads every device's statistics, so it is taken before the board (4).
//! 3. Per device, [`DeviceCore::submitter`]: the device's queue, buffer pool, kept bind groups,
//!    timestamp queries and batches in flight (`device/submitter.rs`); whoever holds it is the
//!    one thread that submits to and polls the device. Taken for one step of the batch loop
//!    (launch one batch, or complete one) by a caller blocked on one of the device's jobs
//!    (with `try_lock`: a caller never queues behind another that is running batches), by the
//!    executor (to run a step, to look at what is in flight, to trim its pool when idle), by
//!    `Engine::run`'s idle fast path (`try_lock`), and by a submitting thread whose write into
//!    mapped memory failed (to poll, so that wgpu reports a loss). May be held across
//!    `queue.submit` and `device.poll`, and while taking the board (4) or a leaf (5); never
//!    across a channel wait or a reply.
//! 4. Per device, [`Inbox::board`]: the jobs taken off the channel and not yet batched, and
//!    the tickets of the batches in flight. Taken briefly by whoever runs the batch loop
//!    (intake, gather, register, complete), by `Engine::stats` and the publisher (the queue
//!    depth), and by whoever closes the device after a loss (the watchdog, the executor, a
//!    caller whose step panicked, the `lose_device` hook). Nothing but a leaf is taken while it
//!    is held, and it is never held across a wait, a submit, a poll or a reply.
//! 5. Leaves, taken with nothing else taken while held: the pipeline cache's map
//!    (`kernel/pipelines.rs`; each pipeline is built once, outside it), the upload pool's free list
//!    (`device/mapped.rs`; taken once per written job or batch), [`Inbox::sender`] and
//!    [`DeviceCore::executor`] (taken once each, by shutdown or a loss).
//!
//! The rule that no reply is sent while the submitter or the board lock is held is checked:
//! both are `quiet::Quiet` mutexes, and every reply asserts (in debug builds) that its thread
//! holds neither. A step of the batch loop leaves its replies in an outbox, sent once the lock
//! is released.
//!
//! Submitting takes no lock of the engine: it reads atomics ([`Health`]) to choose a device
//! (one whose queue has room first), writes a job of 32 KiB or more into mapped memory from
//! the device's host pool (a smaller one is written later, with its batch, by whoever
//! launches it: see `Layout::writer`), and sends on the device's bounded channel.
//!
//! # Who runs a batch
//! The batch loop (`device/driver.rs`) has one runner for every caller: a thread blocked in
//! `JobHandle::wait` or `wait_timeout` takes the submitter lock if it is free and runs steps
//! (launch what is queued, its own job and others', as one batch; complete the oldest batch)
//! until its job resolves, never waiting on the device past its own bound. The executor thread
//! is the backstop: it runs what nobody has driven for `LINGER` (200 µs: jobs whose callers
//! are not waiting yet), at once when an async waiter rings it (a future must not block its
//! executor's thread) or when the engine stops, and alone when `max_batch_delay` holds
//! batches open. `Engine::run` on an idle device runs its job as a batch of one through the
//! same runner ([`Submitter::launch`] then [`Submitter::complete`]) without queueing it.
//!
//! # A job's life
//! laid out, and written into mapped memory (by the submitting thread for a job of 32 KiB or
//! more, see `device/mapped.rs`) -> queued (in the channel) -> pending (moved onto the board by
//! whoever runs the batch loop, by priority, see `device/queue.rs`; at most `queue_capacity`
//! of them) -> claimed (taken by rank; a job already resolved by a cancel or its deadline is
//! skipped and never encoded) -> encoded (one command buffer per batch) -> in flight (its
//! ticket on the board, one `queue.submit`) -> read back (the batch's readback buffer is
//! mapped) -> replied (through the job's `Responder`, see `device/reply.rs`) -> copied out
//! (by the thread that takes the result). A caller waiting on a job gets its deadline error at
//! the deadline, whatever the device is doing.
//!
//! Only the holder of the submitter lock submits to and polls the device: wgpu serializes
//! submits per device anyway, lavapipe's submit blocks until the previous one finishes, and a
//! timed poll racing a submit can panic in wgpu 30.0.2. So polls may be timed: the holder waits
//! in slices and notices a loss between them.
//!
//! # Loss
//! A device-lost callback, a panic of the batch loop (on the executor or on a waiting
//! caller's thread), a fatal poll error, the watchdog (a device that made no progress for
//! `gpu_timeout`) or the `lose_device` hook records the reason in [`Health`] (a `OnceLock`,
//! read by submit without locking); submit then skips the device. The device is then
//! *closed* ([`Inbox::close`]): its owning sender is dropped, every job on its board resolves
//! `DeviceLost` (unless salvaged, below), and the channel is drained until no sender is left.
//! The executor closes it when it notices the loss; the watchdog closes it when the executor
//! is stuck in the GPU driver.
//! Callbacks only record the reason: they run inside wgpu's poll, where dropping a job's
//! buffers could deadlock.
//!
//! With `EngineBuilder::reopen_lost_devices` the board has a keeper (the device's position,
//! `station.rs`), and a loss *salvages* jobs instead of failing them ([`Inbox::salvage`]):
//! - jobs never encoded (pending on the board, or still in the channel) are kept;
//! - jobs of a batch that never reached the device are kept: the board holds a copy of each
//!   job of the batch being launched ([`Inbox::launching`]) until it is in flight, so a
//!   submit that fails with the loss, a close racing the launch, or a panic before the
//!   submit loses none (a responder dropped by a panic leaves the answer to the board while
//!   the board holds its ticket; the panic records the loss before the submitter lock is
//!   released, so no other thread launches first, and its handler closes the device);
//! - jobs in flight that write no resident buffer (the board keeps a copy of each while it
//!   is in flight) are kept to run again, unless one ran at more than `max_replays` losses:
//!   it fails `Poisoned`. A batch that a step found failed by the loss after taking it off
//!   the board is salvaged by that step, before its replies go out;
//! - the other jobs in flight fail `DeviceLost` (they may have run partly).
//!
//! A kept job goes back to `QUEUED` under a new attempt number ([`Ticket::unclaim`]), so any
//! answer of its earlier attempt is ignored, and its position queues it elsewhere or on the
//! device that replaces this one. A job that ran at a loss runs alone on an idle device
//! (`take_ready`), so only the kernel that keeps bringing the device down becomes poison.
//!
//! [`Ticket::unclaim`]: crate::device::reply::Ticket::unclaim
//!
//! # Shutdown
//! The engine refuses new jobs and drops every channel's owning sender. Producers hold only
//! weak senders, upgraded for one send, so a send already under way still lands; the executor
//! sees the channel disconnect, runs every step left at once, finishes the batches in flight
//! and returns. Every queued job therefore runs. The engine waits for each executor; one whose
//! device was lost and that has not returned [`ABANDON_AFTER`] later is stuck in the GPU driver:
//! it is left behind (logged), its jobs already failed by the loss.

pub(crate) mod driver;
pub(crate) mod executor;
pub(crate) mod health;
pub(crate) mod inbox;
pub(crate) mod mapped;
pub(crate) mod outbox;
pub(crate) mod poll;
pub(crate) mod probe;
pub(crate) mod queue;
pub(crate) mod quiet;
pub(crate) mod reply;
pub(crate) mod submitter;
pub(crate) mod watchdog;

use std::sync::Arc;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::adapters::DeviceInfo;
use crate::batch::Ready;
use crate::batch::layout::{Footprint, Layout, Writer};
use crate::config::BatchConfig;
use crate::device::driver::{Driver, DriverSetup};
use crate::device::executor::Executor;
use crate::device::health::Health;
use crate::device::inbox::{Inbox, Request};
use crate::device::mapped::HostPool;
use crate::device::quiet::Quiet;
use crate::device::reply::{DeadlineTimer, Help, JobHandle};
use crate::device::submitter::{Submitter, binding_alignment, pipelines_for};
use crate::error::{Error, Result};
use crate::job::{Job, JobOutput, Rejected};
use crate::kernel::compile::Kernel;
use crate::kernel::pipelines::{Pipeline, PipelineCache};
use crate::memory::host::{Loan, Staged};
use crate::observe::trace::{BatchSpan, JobSpan};

/// How long shutdown waits for the executor of a lost device before leaving it behind.
pub(crate) const ABANDON_AFTER: Duration = Duration::from_millis(250);

/// One device and everything that serves it.
pub(crate) struct DeviceCore {
    pub(crate) info: DeviceInfo,
    limits: wgpu::Limits,
    health: Arc<Health>,
    pub(crate) inbox: Arc<Inbox>,
    /// Producers' end of the request channel (bounded: a full queue blocks `submit`). Weak:
    /// a producer upgrades it for the length of one send; once the owning sender is dropped
    /// and those sends finish, the executor sees the channel disconnect.
    tx: flume::WeakSender<Request>,
    device: wgpu::Device,
    pipelines: Arc<PipelineCache>,
    /// The device's submit and poll lock (lock order: see the module docs).
    submitter: Arc<Quiet<Submitter>>,
    /// Mapped host buffers, taken by submitting threads.
    host: Arc<HostPool>,
    /// The offset alignment of bindings in this device's batches.
    align: u64,
    /// An application's device (`EngineBuilder::with_device`): its lost callback is not ours.
    shared: bool,
    /// The device's batch loop, run by waiting callers and the executor.
    driver: Arc<Driver>,
    /// The executor thread, and a channel that disconnects when it returns; taken by `stop`.
    executor: Mutex<Option<(JoinHandle<()>, flume::Receiver<()>)>>,
}

/// How to start a device's core.
pub(crate) struct Opening {
    pub(crate) cfg: BatchConfig,
    /// The request queue's capacity.
    pub(crate) capacity: usize,
    pub(crate) gpu_timeout: Duration,
    /// The device is an application's (`EngineBuilder::with_device`): no handlers, polls
    /// that never wait on wgpu.
    pub(crate) shared: bool,
    /// The pipeline cache on disk (`EngineBuilder::pipeline_cache_dir`), where the device
    /// has one.
    pub(crate) disk: Option<crate::kernel::warm::DiskCache>,
}

impl DeviceCore {
    /// Wraps an opened device and starts its executor thread.
    pub(crate) fn start(
        info: DeviceInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
        health: Arc<Health>,
        opening: Opening,
    ) -> Result<DeviceCore> {
        let Opening {
            cfg,
            capacity,
            gpu_timeout,
            shared,
            disk,
        } = opening;
        if !shared {
            install_handlers(&device, &health); // an adopted device keeps its app's
        }
        let capacity = capacity.max(1);
        let bounds = cfg.fusion.then(|| {
            probe::bounds(&device, &queue, gpu_timeout, shared, disk.as_ref())
                .inspect_err(|e| log::warn!("device {}: kernels run unfused: {e}", info.index))
                .ok()
        });
        let bounds = bounds.flatten();
        let (tx, rx) = flume::bounded(capacity);
        let weak = tx.downgrade();
        let inbox = Arc::new(Inbox::new(health.clone(), cfg.priority_aging, tx, rx));
        let pipelines = Arc::new(PipelineCache::new(
            device.clone(),
            cfg.shared_bind_groups,
            bounds,
            disk,
        ));
        let budget = cfg.pool_budget;
        let direct = device
            .features()
            .contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS);
        let host = Arc::new(HostPool::new(
            device.clone(),
            direct,
            budget / 2,
            budget / 2,
        ));
        let submitter = Arc::new(Quiet::new(Submitter::new(
            device.clone(),
            queue,
            health.clone(),
            pipelines.clone(),
            host.clone(),
            &cfg,
            shared,
        )));
        let limits = device.limits();
        let setup = DriverSetup {
            inbox: inbox.clone(),
            submitter: submitter.clone(),
            limits: limits.clone(),
            cfg,
            capacity,
        };
        let driver = Arc::new(Driver::new(setup));
        let (join, exit_rx) = spawn_executor(&info, driver.clone())?;
        Ok(DeviceCore {
            info,
            align: binding_alignment(&limits),
            limits,
            health,
            inbox,
            tx: weak,
            device,
            pipelines,
            submitter,
            host,
            shared,
            driver,
            executor: Mutex::new(Some((join, exit_rx))),
        })
    }

    /// Writes `job`'s data (if its caller writes it, see `Layout::writer`) and queues it, with
    /// its `deadline` (registered with `timer` for async waiters), waiting for room when
    /// `block`: the device's one door for a queued job. A job refused comes back unchanged,
    /// never having entered the queue.
    #[allow(clippy::result_large_err)] // the job comes back by value, as flume's TrySendError does
    pub(crate) fn enqueue(
        &self,
        job: Job,
        deadline: Option<Instant>,
        timer: Option<DeadlineTimer>,
        block: bool,
    ) -> std::result::Result<JobHandle, Rejected> {
        let Some(tx) = self.tx.upgrade() else {
            let error = self.health.drop_error();
            return Err(Rejected { error, job });
        };
        if !block && tx.is_full() {
            // Checked first so a caller retrying on a full queue pays for no upload.
            let error = Error::QueueFull;
            return Err(Rejected { error, job });
        }
        let (layout, staged, lent) =
            match self.stage(&job, true, |e| self.submitter.lock().failure(e)) {
                Ok(staged) => staged,
                Err(error) => return Err(Rejected { error, job }),
            };
        let span = JobSpan::queued(self.info.index, job.steps.len(), layout.bytes());
        let (handle, responder) = JobHandle::pair(self.health.clone(), deadline, timer, span);
        let help: std::sync::Weak<dyn Help> = Arc::downgrade(&self.driver) as _;
        let handle = handle.helped_by(help);
        let keep = self.inbox.keeps_jobs();
        let request = Request::new(job, responder, (layout, staged, lent), keep);
        let stats = &self.health.stats;
        stats.enter();
        let refused = if block {
            tx.send(request).err().map(|e| (e.0, false))
        } else {
            tx.try_send(request).err().map(|e| match e {
                flume::TrySendError::Full(r) => (r, true),
                flume::TrySendError::Disconnected(r) => (r, false),
            })
        };
        let Some((request, full)) = refused else {
            stats.record_submit();
            return Ok(handle);
        };
        stats.abandon();
        request.responder.disarm(); // the job never entered a queue
        let error = if full {
            Error::QueueFull
        } else {
            self.health.drop_error()
        };
        Err(Rejected {
            error,
            job: request.job,
        })
    }

    /// Queues `job`, kept from a lost device (see `station.rs`), here under its caller's
    /// existing handle: its data is written again for this device. Blocks while the queue is
    /// full; a job this device cannot take answers as it drops.
    pub(crate) fn requeue(&self, job: Job, responder: crate::device::reply::Responder) {
        let Some(tx) = self.tx.upgrade() else {
            return; // dropped with `responder`: it answers
        };
        if let Some(device) = self.lost_buffer(&job) {
            return responder.send(Err(Error::BufferLost { device }));
        }
        let Ok((layout, staged, lent)) =
            self.stage(&job, true, |e| self.submitter.lock().failure(e))
        else {
            return;
        };
        let keep = self.inbox.keeps_jobs();
        let request = Request::new(job, responder, (layout, staged, lent), keep);
        let _ = tx.send(request); // on a disconnect it comes back and answers as it drops
    }

    /// This device's index if `job` binds a resident buffer whose copy here was lost with an
    /// earlier device (a job kept across a loss, or held while the device was replaced).
    fn lost_buffer(&self, job: &Job) -> Option<usize> {
        let (index, generation) = (self.info.index, self.info.generation);
        job.args()
            .any(|a| match &a.data {
                crate::job::ArgData::Resident(b) => b.current_on(index, generation) != Some(true),
                _ => false,
            })
            .then_some(index)
    }

    /// A handle and its responder for `job`, held outside any queue while this lost device's
    /// position waits for a new one (see `station.rs`); counted as submitted and outstanding
    /// here, as the statistics continue on the new device.
    pub(crate) fn hold(
        &self,
        job: &Job,
        deadline: Option<Instant>,
        timer: Option<DeadlineTimer>,
    ) -> (JobHandle, crate::device::reply::Responder) {
        let stats = &self.health.stats;
        stats.enter();
        stats.record_submit();
        let span = JobSpan::queued(self.info.index, job.steps.len(), 0);
        JobHandle::pair(self.health.clone(), deadline, timer, span)
    }

    /// Whether a loss of this device keeps its jobs for the device that replaces it.
    pub(crate) fn reopens(&self) -> bool {
        self.inbox.keeps_jobs()
    }

    /// The device's statistics (a reopened device continues them).
    pub(crate) fn health_stats(&self) -> Arc<crate::observe::stats::DeviceStats> {
        self.health.stats.clone()
    }

    /// Jobs waiting in the request queue and on the board.
    pub(crate) fn queue_depth(&self) -> usize {
        let pending = self.inbox.board.lock().pending.len();
        self.inbox.rx.len() + pending
    }

    /// Whether the request queue can take a job now (a hint: another producer may fill it).
    pub(crate) fn has_room(&self) -> bool {
        !self.inbox.rx.is_full()
    }

    /// Checks `job` against its kernels' bindings and this device's limits. No lock.
    pub(crate) fn validate(&self, job: &Job) -> Result<()> {
        job.validate(&self.limits)?;
        Footprint::of(job, self.align).check(&self.limits)
    }

    /// Lays `job` out and writes its data into this device's mapped host buffers, on the
    /// calling thread, if its caller writes it (see `Layout::writer`); with `lend`, only while
    /// queued jobs leave room in the lend budget (else the submitter writes it with its
    /// batch). A failure here usually means the device was lost and nobody knows yet:
    /// `failure` asks the submitter (it polls, so wgpu's lost callback runs), and the error is
    /// then `DeviceLost`, so the job can go to another device.
    fn stage(
        &self,
        job: &Job,
        lend: bool,
        failure: impl FnOnce(&Error) -> Error,
    ) -> Result<(Layout, Option<Staged>, Option<Loan>)> {
        let layout = Layout::of(job, self.align);
        if layout.writer(self.align) == Writer::Submitter {
            return Ok((layout, None, None)); // the submitter writes it with its batch
        }
        match self.host.write(job, &layout, self.align, lend) {
            Ok(Some(w)) => Ok((layout, Some(w.staged), w.loan)),
            Ok(None) => Ok((layout, None, None)),
            Err(e) => Err(failure(&Error::Wgpu(format!(
                "could not write a job's data: {e}"
            )))),
        }
    }

    /// The idle fast path: if this device has nothing outstanding and its submitter is free,
    /// runs `job` as a batch of one on the calling thread and returns its result; otherwise
    /// hands the job back. `deadline` is the job's, from its submission now.
    pub(crate) fn run_now(
        &self,
        job: Job,
        deadline: Option<Instant>,
    ) -> std::result::Result<Result<JobOutput>, Job> {
        let stats = &self.health.stats;
        if stats.outstanding() != 0 || !self.usable() {
            return Err(job);
        }
        let Some(mut sub) = self.submitter.try_lock() else {
            return Err(job);
        };
        // Holding the submitter, nothing can be launched; anything outstanding was submitted
        // before this job, by this thread or another, and must not be overtaken.
        if stats.outstanding() != 0 || !self.inbox.rx.is_empty() {
            return Err(job);
        }
        let submitted = Instant::now();
        let (layout, staged) = match self.stage(&job, false, |e| sub.failure(e)) {
            Ok((layout, staged, _)) => (layout, staged),
            Err(_) => return Err(job), // the queue path reports it (and re-routes a loss)
        };
        stats.enter();
        stats.record_submit();
        let span = JobSpan::queued(self.info.index, job.steps.len(), layout.bytes());
        span.encoded(sub.batches_launched());
        let result = self.run_locked(&mut sub, job, (layout, staged), deadline);
        drop(sub);
        span.replied(&result);
        stats.record_queue_wait(Duration::ZERO);
        stats.record_done(result.is_ok(), submitted.elapsed());
        Ok(result)
    }

    /// Runs one staged job as a batch of one, holding the submitter.
    fn run_locked(
        &self,
        sub: &mut Submitter,
        job: Job,
        (layout, staged): (Layout, Option<Staged>),
        deadline: Option<Instant>,
    ) -> Result<JobOutput> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::DeadlineExpired);
        }
        let pipelines = pipelines_for(&self.pipelines, &job, true)?;
        let bytes = layout.bytes();
        let ready = vec![Ready {
            job,
            layout,
            staged,
            lent: None,
            pipelines,
            fused: None, // a batch of one runs plainly
        }];
        // The batch loop's runner (the submitter's launch and complete), with nothing to register:
        // this thread waits itself.
        let span = BatchSpan::formed(self.info.index, sub.batches_launched(), 1, || bytes);
        let launched = sub.launch(ready, &span, || true);
        let batch = launched.map_err(|(e, _)| sub.failure(&e))?;
        let replies = batch.map(|b| sub.complete(b, &span)).unwrap_or_default();
        let reply = replies.into_iter().next();
        reply.unwrap_or(Err(Error::Wgpu("a batch of one gave no reply".into())))
    }

    /// The error for a job this device cannot take (see [`Health::drop_error`]).
    pub(crate) fn drop_error(&self) -> Error {
        self.health.drop_error()
    }

    /// The device's lock-free statistics.
    pub(crate) fn stats(&self) -> &Arc<crate::observe::stats::DeviceStats> {
        &self.health.stats
    }

    /// Writes the on-disk pipeline cache if it changed (a warm start for the next process).
    pub(crate) fn save_pipelines(&self) {
        self.pipelines.save();
    }

    /// Where a resident buffer is made here: the device's index, its wgpu device, the largest
    /// buffer it allows, and its generation.
    pub(crate) fn home(&self) -> (usize, &wgpu::Device, u64, u32) {
        let max = self.limits.max_buffer_size;
        (self.info.index, &self.device, max, self.info.generation)
    }

    /// Whether submit may send here.
    pub(crate) fn usable(&self) -> bool {
        self.health.usable()
    }

    /// After an operation on the device failed: whether the device is lost (an adopted
    /// device is asked, see [`notice_adopted_loss`](crate::device::poll::notice_adopted_loss)).
    pub(crate) fn lost_after_failure(&self) -> bool {
        if self.shared {
            poll::notice_adopted_loss(&self.device, &self.health);
        }
        !self.usable()
    }

    /// Closes the board of this device if it was found lost and nobody closed it yet, so its
    /// jobs are salvaged and its position starts replacing it. Takes no device lock.
    pub(crate) fn close_if_lost(&self) {
        self.inbox.close_if_lost();
    }

    /// `kernel`'s pipeline on this device, created (on the calling thread) and cached if
    /// missing, after checking the kernel against the device's limits.
    pub(crate) fn prepare(&self, kernel: &Kernel) -> Result<Pipeline> {
        kernel.check_limits(&self.limits)?;
        self.pipelines
            .get(kernel, self.pipelines.dynamic_for(kernel))
    }

    /// Lets the executor finish what is queued and waits for it; leaves behind an executor
    /// that is stuck in the GPU driver after a loss (see the module docs). Idempotent.
    pub(crate) fn stop(&self) {
        self.inbox.stop_accepting();
        let Some((join, exited)) = self.executor.lock().take() else {
            return;
        };
        let mut lost_at: Option<Instant> = None;
        while let Err(flume::RecvTimeoutError::Timeout) =
            exited.recv_timeout(Duration::from_millis(20))
        {
            if self.health.usable() {
                continue;
            }
            let since = *lost_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= ABANDON_AFTER {
                self.inbox.close();
                log::error!(
                    "device {}: its executor is stuck in the GPU driver after the loss ({}); \
                     leaving its thread behind (its jobs were failed)",
                    self.info.index,
                    self.health.lost_reason().unwrap_or("unknown")
                );
                return;
            }
        }
        if join.join().is_err() {
            log::error!(
                "device {} executor thread panicked outside its guard",
                self.info.index
            );
        }
    }

    /// Makes the executor panic at its next batch (a test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn panic_next(&self) {
        self.health
            .panic_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Destroys the wgpu device and leaves the detection to wgpu's lost callback, which runs
    /// at the executor's next poll: the path a real driver loss takes.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn destroy_quietly(&self) {
        self.device.destroy();
    }

    /// Destroys the wgpu device and fails it at once, as a driver reset would. (wgpu itself
    /// runs the lost callback only at the next poll.)
    #[cfg(feature = "test-hooks")]
    pub(crate) fn destroy(&self) {
        self.device.destroy();
        self.inbox.fail("destroyed by Engine::lose_device".into());
    }
}

/// Starts the executor thread of the device `info` describes; returns it with a channel that
/// disconnects when it returns.
fn spawn_executor(
    info: &DeviceInfo,
    driver: Arc<Driver>,
) -> Result<(JoinHandle<()>, flume::Receiver<()>)> {
    let (exit_tx, exit_rx) = flume::bounded::<()>(0);
    let join = std::thread::Builder::new()
        .name(format!("wgpu-batch-dev{}", info.index))
        .spawn(move || {
            let _exit = exit_tx; // dropped when the thread returns, even by a panic
            Executor::new(driver).run();
        })
        .map_err(|e| Error::RequestDevice {
            adapter: info.adapter.clone(),
            message: e.to_string(),
        })?;
    Ok((join, exit_rx))
}

/// Routes wgpu's uncaptured errors to the log (its default handler panics) and device loss to
/// [`Health`]. Only records: these run inside wgpu's poll (see the module docs).
fn install_handlers(device: &wgpu::Device, health: &Arc<Health>) {
    let index = health.index;
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        log::error!("device {index}: uncaptured wgpu error: {e}");
    }));
    let weak = Arc::downgrade(health);
    device.set_device_lost_callback(move |reason, message| {
        if let Some(health) = weak.upgrade() {
            health.mark_lost(format!("{reason:?}: {message}"));
        }
    });
}
