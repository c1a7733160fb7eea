//! Who runs a device's batches: the batch loop ([`Driver`]), run by any caller blocked on one
//! of the device's jobs and, as a backstop, by the device's executor thread.
//!
//! The loop reads like its job: take what is queued onto the board (**intake**), form a batch
//! by rank up to the batch limits (**gather**), encode and submit it (**launch**, through the
//! submitter), and once its readback is mapped, reply to its jobs (**complete**). Up to
//! `max_in_flight` batches are submitted at once, so batch N+1 is formed while batch N runs.
//! Every step holds the device's submitter lock and leaves its replies in an [`Outbox`],
//! delivered once the lock is released.
//!
//! **A waiting caller runs the loop itself.** A thread blocked in `JobHandle::wait` takes the
//! submitter lock and runs steps until its job resolves: the jobs queued by then (its own and
//! other callers') go out as one batch, and no thread hand-off stands between a job and its
//! result. A caller that submits 16 jobs and then waits runs them as one batch on its own
//! thread. **The executor is the backstop**: it sleeps on a timer while callers drive, and
//! runs what nobody has driven for [`LINGER`] (jobs whose callers do not wait yet, or wait
//! with `.await`, which rings it at once, see [`Help::ring`]); after [`COLD_AFTER`] with
//! nothing to do it parks on the channel. With `max_batch_delay` set the executor alone forms
//! batches, holding them open as that setting asks. The protocol (a job's life, locks, loss and
//! shutdown) is in `device/mod.rs`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::batch::Ready;
use crate::batch::layout::Footprint;
use crate::config::BatchConfig;
use crate::device::health::Health;
use crate::device::inbox::{Inbox, Request};
use crate::device::outbox::Outbox;
use crate::device::quiet::Quiet;
use crate::device::reply::{Help, Reply, Responder, Ticket};
use crate::device::submitter::{Flight, Submitter, binding_alignment};
use crate::error::Error;
use crate::observe::trace::BatchSpan;

/// How long queued work waits for a caller to run it before the executor does.
pub(crate) const LINGER: Duration = Duration::from_micros(200);
/// How long one poll of a waiting caller lasts before it looks at its job again.
const WAITER_SLICE: Duration = Duration::from_millis(5);
/// How long the executor stays on its timer with nothing to do before parking on the channel.
const COLD_AFTER: Duration = Duration::from_millis(2);
/// How long an executor stays parked before its pools drop their free buffers.
const POOL_IDLE: Duration = Duration::from_secs(1);
/// How long one poll waits while a partial batch is held open for more jobs, so new jobs are
/// taken promptly.
const FORMING_SLICE: Duration = Duration::from_millis(1);
/// The largest buffer a batch of several jobs may use: dynamic offsets are `u32`.
const DYNAMIC_OFFSET_RANGE: u64 = 1 << 32;

/// What the executor is built from.
pub(crate) struct ExecutorSetup {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) submitter: Arc<Quiet<Submitter>>,
    pub(crate) limits: wgpu::Limits,
    pub(crate) cfg: BatchConfig,
    /// Most jobs held on the board (the engine's queue capacity).
    pub(crate) capacity: usize,
}

/// A device's batch loop, shared by its executor thread and its waiting callers.
pub(crate) struct Driver {
    inbox: Arc<Inbox>,
    health: Arc<Health>,
    /// The device's submit and poll lock, held for each step.
    submitter: Arc<Quiet<Submitter>>,
    cfg: BatchConfig,
    capacity: usize,
    /// Offset alignment of every binding in a batch (for the jobs' footprints).
    align: u64,
    /// The largest read or read-write buffer a batch of several jobs may use.
    buffer_cap: u64,
    /// The executor's thread, unparked by [`Help::ring`].
    thread: OnceLock<Thread>,
    /// Set by [`Help::ring`]: the executor runs everything at once until the device is idle.
    eager: AtomicBool,
}

impl Driver {
    pub(crate) fn new(s: ExecutorSetup) -> Driver {
        Driver {
            health: s.inbox.health.clone(),
            inbox: s.inbox,
            submitter: s.submitter,
            align: binding_alignment(&s.limits),
            buffer_cap: s.limits.max_buffer_size.min(DYNAMIC_OFFSET_RANGE),
            cfg: s.cfg,
            capacity: s.capacity,
            thread: OnceLock::new(),
            eager: AtomicBool::new(false),
        }
    }

    /// Moves what is queued on the channel onto the board, without blocking. Returns whether
    /// the channel has disconnected (shutdown). Takes the board lock; jobs refused by a
    /// closed board go to `out`.
    fn intake(&self, out: &mut Outbox) -> bool {
        let mut disconnected = false;
        let mut board = self.inbox.board.lock();
        while board.pending.len() < self.capacity {
            match self.inbox.rx.try_recv() {
                Ok(r) if self.inbox.is_closed() => out.skipped.push(r), // replies `DeviceLost` as it drops
                Ok(r) => board.pending.push(r),
                Err(flume::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
                Err(flume::TryRecvError::Empty) => break,
            }
        }
        disconnected
    }

    /// Moves claimable jobs from the board into `batch` while they fit; returns whether the
    /// batch is full (no further job could join it). A job already resolved (cancelled, or
    /// expired by its waiting caller) or past its deadline goes to `out` and is never encoded.
    fn take_ready(
        &self,
        batch: &mut Vec<Request>,
        used: &mut Footprint,
        out: &mut Outbox,
        idle: bool,
    ) -> bool {
        let mut board = self.inbox.board.lock();
        loop {
            if batch.len() >= self.cfg.max_jobs {
                return true;
            }
            let Some(r) = board.pending.pop() else {
                return false;
            };
            let due = r.responder.deadline().is_some_and(|d| Instant::now() >= d);
            if due || !r.responder.is_queued() {
                out.skipped.push(r);
                continue;
            }
            // A job that was running at a loss runs alone on an idle device, so a kernel that
            // brings the device down is poisoned by itself, not with whatever shared its batch.
            let suspect = r.responder.losses() > 0;
            if suspect && !(batch.is_empty() && idle) {
                board.pending.push_front(r);
                return true;
            }
            let add = Footprint::of(&r.job, self.align);
            if !batch.is_empty() && !used.fits(add, self.buffer_cap, self.cfg.max_bytes) {
                board.pending.push_front(r); // still queued: it leads the next batch
                return true;
            }
            if !r.responder.claim() {
                out.skipped.push(r); // resolved in the meantime
                continue;
            }
            *used = used.plus(add);
            batch.push(r);
            if suspect {
                return true;
            }
        }
    }

    /// Launches `requests` as one batch. Jobs whose pipeline cannot be built fail alone; a
    /// batch that wgpu rejects is retried one job at a time so only the culprit fails.
    fn launch(&self, sub: &mut Submitter, mut requests: Vec<Request>, out: &mut Outbox) {
        self.inbox.launching(requests.iter_mut());
        // A panic from here on records the loss while the submitter lock is still held, so
        // no other thread launches (and settles the copies above) before the close.
        let _lost_on_panic = LostOnPanic(&self.health);
        #[cfg(feature = "test-hooks")]
        if self.health.panic_next.swap(false, Ordering::SeqCst) {
            panic!("test hook: Engine::panic_executor");
        }
        self.launch_ready(sub, requests, out);
        self.inbox.launched();
    }

    /// [`launch`](Self::launch)'s body.
    fn launch_ready(&self, sub: &mut Submitter, requests: Vec<Request>, out: &mut Outbox) {
        let mut ready = Vec::with_capacity(requests.len());
        let mut responders = Vec::with_capacity(requests.len());
        let number = sub.batches_launched();
        for r in requests {
            r.responder.note_encoding(number);
            match sub.pipelines_for(&r.job, true) {
                Ok(pipelines) => {
                    let fused = self.fused_pipeline(sub, &r.job);
                    ready.push(Ready {
                        job: r.job,
                        layout: r.layout,
                        staged: r.staged,
                        lent: r.lent,
                        pipelines,
                        fused,
                    });
                    responders.push(r.responder);
                }
                Err(e) => out.replies.push((r.responder, Err(e))),
            }
        }
        if ready.len() <= 1 {
            return self.launch_or_fail(sub, ready, responders, out);
        }
        if let Err((e, ready, responders)) = self.try_launch(sub, ready, responders, out) {
            let index = self.health.index;
            log::warn!(
                "device {index}: batch of {} rejected ({e}); retrying one by one",
                ready.len()
            );
            for (one, responder) in ready.into_iter().zip(responders) {
                self.launch_or_fail(sub, vec![one], vec![responder], out);
            }
        }
    }

    /// The fused pipelines of `job`'s kernels, when fusion is on and every step has one.
    fn fused_pipeline(
        &self,
        sub: &Submitter,
        job: &crate::job::Job,
    ) -> Option<Vec<crate::kernel::pipelines::Pipeline>> {
        let steps = job.steps.iter();
        self.cfg
            .fusion
            .then(|| steps.map(|s| sub.fused_pipeline(&s.kernel)).collect())
            .flatten()
    }

    /// Launches `ready` as one batch; if wgpu rejects it, every job in it fails with the reason.
    fn launch_or_fail(
        &self,
        sub: &mut Submitter,
        ready: Vec<Ready>,
        responders: Vec<Responder>,
        out: &mut Outbox,
    ) {
        if ready.is_empty() {
            return;
        }
        if let Err((e, ready, responders)) = self.try_launch(sub, ready, responders, out) {
            let err = sub.failure(&e);
            if matches!(err, Error::DeviceLost { .. }) && self.inbox.keeps_jobs() {
                let jobs = ready.into_iter().map(|r| r.job);
                return out.unlaunched.extend(jobs.zip(responders)); // they never ran
            }
            out.replies
                .extend(responders.into_iter().map(|r| (r, Err(err.clone()))));
        }
    }

    /// Launches one batch (see [`Submitter::launch`]), its tickets registered on the board
    /// before the submit, and puts it in flight; on a wgpu error gives the jobs back. When
    /// the device was closed meanwhile, the jobs' `DeviceLost` replies go to `out`.
    #[allow(clippy::type_complexity)] // the jobs and their responders come back as they went
    fn try_launch(
        &self,
        sub: &mut Submitter,
        ready: Vec<Ready>,
        responders: Vec<Responder>,
        out: &mut Outbox,
    ) -> Result<(), (Error, Vec<Ready>, Vec<Responder>)> {
        let bytes = || ready.iter().map(|r| r.layout.bytes()).sum();
        let span = BatchSpan::formed(
            self.health.index,
            sub.batches_launched(),
            ready.len(),
            bytes,
        );
        let registered = std::cell::Cell::new(false);
        // With reopening, the board keeps a copy of each job that may run again after a loss
        // (taken from the copies made for the launch).
        let tickets: Vec<_> = responders.iter().map(|r| r.ticket().clone()).collect();
        let register = || {
            registered.set(self.inbox.register(tickets));
            registered.get()
        };
        match sub.launch(ready, &span, register) {
            Ok(Some(batch)) => {
                let launched = Instant::now();
                // A job that was running at a loss runs alone (see `take_ready`).
                let alone = responders.len() == 1 && responders[0].losses() > 0;
                sub.flight.push_back(Flight {
                    batch,
                    alone,
                    responders,
                    span,
                    launched,
                });
                Ok(())
            }
            Ok(None) => {
                // The device was closed: not under this lock, the responders reply its loss.
                let err = self.health.drop_error();
                out.replies
                    .extend(responders.into_iter().map(|r| (r, Err(err.clone()))));
                Ok(())
            }
            Err((e, ready)) => {
                if registered.get() {
                    self.inbox.unregister_last();
                }
                Err((e, ready, responders))
            }
        }
    }

    /// Waits for the oldest batch in flight and leaves its replies in `out`. False when there
    /// was none, or it did not finish before `give_up` passed or `ticket` resolved (the
    /// watchdog fails a stalled batch's jobs while its poll is still inside the driver, so a
    /// waiting caller polls in slices and looks at its own job between them).
    fn complete_oldest(
        &self,
        sub: &mut Submitter,
        give_up: Option<Instant>,
        ticket: Option<&Ticket>,
        out: &mut Outbox,
    ) -> bool {
        let Some(front) = sub.flight.front() else {
            return false;
        };
        if ticket.is_some() || give_up.is_some() {
            loop {
                let slice = Instant::now() + WAITER_SLICE;
                if sub.poll_until(&front.batch, give_up.map_or(slice, |g| g.min(slice))) {
                    break;
                }
                let gave_up = give_up.is_some_and(|g| Instant::now() >= g);
                if gave_up || ticket.is_some_and(Ticket::is_resolved) || !self.health.usable() {
                    return false;
                }
            }
        }
        let Some(flight) = sub.flight.pop_front() else {
            return false;
        };
        let replies = sub.complete(flight.batch, &flight.span);
        let tickets = self.inbox.complete_oldest();
        let lost = |r: &Reply| matches!(r, Err(Error::DeviceLost { .. }));
        if !self.health.usable() && replies.iter().any(lost) {
            out.lost_flight = tickets; // salvaged before the replies go out
        } else {
            out.finished = tickets;
        }
        out.replies
            .extend(flight.responders.into_iter().zip(replies));
        true
    }

    /// One step for a waiting caller whose job is `ticket`: launch what is queued while a
    /// batch may still go in flight (keeping the device fed), else complete the oldest batch.
    /// False when neither was possible. A caller bounded in time (by its `give_up`, or by its
    /// job's deadline while the job is queued) never waits on the device past that bound, and
    /// launches only onto an idle device (a submit can block until the previous batch
    /// finishes).
    fn step(
        &self,
        sub: &mut Submitter,
        ticket: &Ticket,
        give_up: Option<Instant>,
        out: &mut Outbox,
    ) -> bool {
        let give_up = [give_up, ticket.queued_deadline()]
            .into_iter()
            .flatten()
            .min();
        let room = !sub.flight.iter().any(|f| f.alone)
            && match give_up {
                None => sub.flight.len() < self.cfg.max_in_flight,
                Some(_) => sub.flight.is_empty(),
            };
        if room {
            self.intake(out);
            let mut batch = Vec::new();
            let idle = sub.flight.is_empty();
            self.take_ready(&mut batch, &mut Footprint::default(), out, idle);
            if !batch.is_empty() {
                self.launch(sub, batch, out);
                return true;
            }
        }
        !ticket.is_resolved() && self.complete_oldest(sub, give_up, Some(ticket), out)
    }
}

/// Records the device's loss if dropped by a panic (see [`Driver::launch`]).
struct LostOnPanic<'a>(&'a Health);

impl Drop for LostOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .mark_lost("the batch loop panicked while launching a batch".into());
        }
    }
}

impl Help for Driver {
    fn drive(&self, ticket: &Ticket, give_up: Option<Instant>) {
        if !self.cfg.max_delay.is_zero() {
            return self.ring(); // batches are held open: the executor forms them
        }
        while !ticket.is_resolved() && self.health.usable() {
            let Some(mut sub) = self.submitter.try_lock() else {
                return; // another thread runs the batches: the caller waits, then retries
            };
            let mut out = Outbox::default();
            let stepped = catch_unwind(AssertUnwindSafe(|| {
                self.step(&mut sub, ticket, give_up, &mut out)
            }));
            if let Err(panic) = &stepped {
                // Recorded before the lock is released, so no other thread runs a step on
                // the device first (its launch would replace the copies of the jobs the
                // panic dropped, which the close below salvages).
                let msg = crate::error::panic_message(&**panic).unwrap_or("unknown panic");
                let reason = format!("the batch loop panicked on a waiting caller's thread: {msg}");
                self.health.mark_lost(reason);
            }
            drop(sub);
            if stepped.is_err() {
                self.inbox.close(); // salvages first: the replies then find those jobs queued again
                self.ring(); // the executor clears what is in flight
            }
            out.deliver(&self.inbox);
            match stepped {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    fn ring(&self) {
        if !self.eager.swap(true, Ordering::AcqRel)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }
}

/// What the executor does next.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Due {
    /// Form and launch a batch.
    Launch,
    /// Complete the oldest batch in flight.
    Complete,
    /// Nothing is due before this instant.
    At(Instant),
    /// Nothing is queued or in flight.
    Idle,
}

/// What a device holds, as the executor sees it.
#[derive(Debug, Clone, Copy)]
struct Work {
    /// When the longest-waiting pending job was submitted.
    pending: Option<Instant>,
    /// When the oldest batch in flight was launched.
    flight: Option<Instant>,
    /// No further batch may go in flight.
    full: bool,
}

impl Due {
    /// The executor's rule: work nobody has driven for [`LINGER`] is due (all of it when
    /// `urgent`); a pending job is launched unless the flight is full, in which case the
    /// oldest batch is completed first; otherwise it sleeps until the oldest work ripens.
    fn of(w: Work, urgent: bool, now: Instant) -> Due {
        let ripe = |t: Instant| urgent || now >= t + LINGER;
        if w.pending.is_some_and(ripe) {
            return if w.full { Due::Complete } else { Due::Launch };
        }
        if w.flight.is_some_and(ripe) {
            return Due::Complete;
        }
        match w.pending.into_iter().chain(w.flight).min() {
            Some(t) => Due::At(t + LINGER),
            None => Due::Idle,
        }
    }
}

/// The executor thread's state: the loop's backstop (see the module docs).
pub(crate) struct Executor {
    d: Arc<Driver>,
    /// The channel disconnected (shutdown): drain, then return.
    stopping: bool,
}

impl Executor {
    pub(crate) fn new(d: Arc<Driver>) -> Executor {
        let _ = d.thread.set(std::thread::current());
        Executor { d, stopping: false }
    }

    /// The thread's body: serve until stopped, turn a panic into a device loss, and leave no
    /// job unanswered.
    pub(crate) fn run(mut self) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.serve())) {
            let msg = crate::error::panic_message(&*panic).unwrap_or("unknown panic");
            self.d.health.mark_lost(format!("executor panicked: {msg}"));
        }
        self.finish();
    }

    fn serve(&mut self) {
        let mut idle_since: Option<Instant> = None;
        loop {
            if !self.d.health.usable() {
                return;
            }
            match self.due() {
                Due::Launch => {
                    let batch = self.gather();
                    if batch.is_empty() {
                        // What is queued waits for the batches in flight (a job that was
                        // running at a loss runs on an idle device): complete one.
                        self.locked(|d, sub, out| {
                            d.complete_oldest(sub, None, None, out);
                        });
                    } else {
                        self.locked(|d, sub, out| d.launch(sub, batch, out));
                    }
                }
                Due::Complete => {
                    self.locked(|d, sub, out| {
                        d.complete_oldest(sub, None, None, out);
                    });
                }
                Due::At(at) => {
                    std::thread::park_timeout(at.saturating_duration_since(Instant::now()));
                }
                Due::Idle if self.stopping => return,
                Due::Idle => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < COLD_AFTER {
                        std::thread::park_timeout(LINGER);
                        continue;
                    }
                    match self.recv_cold() {
                        Some(r) => self.d.inbox.board.lock().pending.push(r),
                        None => return,
                    }
                }
            }
            idle_since = None;
        }
    }

    /// Runs `f` holding the submitter lock, then delivers what it left.
    fn locked(&self, f: impl FnOnce(&Driver, &mut Submitter, &mut Outbox)) {
        let mut out = Outbox::default();
        f(&self.d, &mut self.d.submitter.lock(), &mut out);
        out.deliver(&self.d.inbox);
    }

    /// After serving: a clean stop completes the batches in flight; then the board is closed,
    /// so whatever is left resolves (`DeviceLost` after a loss; nothing is left otherwise).
    fn finish(&mut self) {
        let mut out = Outbox::default();
        let left = {
            let mut sub = self.d.submitter.lock();
            while self.d.health.usable() && self.d.complete_oldest(&mut sub, None, None, &mut out) {
            }
            std::mem::take(&mut sub.flight)
        };
        out.deliver(&self.d.inbox);
        // After a loss, closing salvages the batches left in flight first; then each
        // responder not queued again answers `DeviceLost` as it drops.
        self.d.inbox.close();
        drop(left);
        self.d.health.note_idle();
    }

    /// What is due: work nobody has driven for [`LINGER`] (at once when rung, stopping, or
    /// holding batches open with `max_delay`).
    fn due(&mut self) -> Due {
        let mut out = Outbox::default();
        self.stopping |= self.d.intake(&mut out);
        out.deliver(&self.d.inbox);
        let now = Instant::now();
        let Some(sub) = self.d.submitter.try_lock() else {
            return Due::At(now + LINGER); // a caller is driving
        };
        let pending = self.d.inbox.board.lock().pending.oldest();
        let flight = sub.flight.front().map(|f| f.launched);
        let full =
            sub.flight.len() >= self.d.cfg.max_in_flight || sub.flight.iter().any(|f| f.alone);
        drop(sub);
        let eager = self.d.eager.load(Ordering::Acquire);
        let urgent = self.stopping || eager || !self.d.cfg.max_delay.is_zero();
        let due = Due::of(
            Work {
                pending,
                flight,
                full,
            },
            urgent,
            now,
        );
        if matches!(due, Due::Idle) {
            self.d.eager.store(false, Ordering::Release);
        }
        due
    }

    /// Parks on the channel for the next job of an idle device; after [`POOL_IDLE`] the pools
    /// drop their free buffers. `None` once the channel disconnects.
    fn recv_cold(&mut self) -> Option<Request> {
        let got = match self.d.inbox.rx.recv_timeout(POOL_IDLE) {
            Err(flume::RecvTimeoutError::Timeout) => {
                self.d.submitter.lock().trim();
                self.d.inbox.rx.recv().ok()
            }
            other => other.ok(),
        };
        self.stopping = got.is_none();
        got
    }

    /// Forms the next batch from the board, by rank, up to the batch limits. With
    /// `max_delay`, a batch that is not full stays open for more jobs until `max_delay` after
    /// its oldest job was submitted, or its earliest deadline, whichever comes first; batches
    /// in flight are completed meanwhile.
    fn gather(&mut self) -> Vec<Request> {
        let mut batch = Vec::new();
        let mut used = Footprint::default();
        loop {
            let mut out = Outbox::default();
            self.stopping |= self.d.intake(&mut out);
            let idle = (self.d.submitter.try_lock()).is_some_and(|s| s.flight.is_empty());
            let full = self.d.take_ready(&mut batch, &mut used, &mut out, idle);
            out.deliver(&self.d.inbox);
            if batch.is_empty() || full || self.d.cfg.max_delay.is_zero() || self.stopping {
                return batch;
            }
            let due = self.due_by(&batch);
            if due.is_some_and(|d| Instant::now() >= d) || !self.wait_for_more(due) {
                return batch;
            }
        }
    }

    /// When an open batch must close: `max_delay` after its oldest job, or its earliest
    /// deadline; `None` when neither bounds it (`max_delay` of `Duration::MAX`).
    fn due_by(&self, batch: &[Request]) -> Option<Instant> {
        let oldest = batch.iter().map(|r| r.responder.submitted()).min()?;
        let by_delay = oldest.checked_add(self.d.cfg.max_delay);
        batch
            .iter()
            .filter_map(|r| r.responder.deadline())
            .chain(by_delay)
            .min()
    }

    /// Waits until `due` for more jobs, completing batches in flight meanwhile (completion
    /// never waits on batch formation). False when the channel disconnected.
    fn wait_for_more(&mut self, due: Option<Instant>) -> bool {
        let slice = Instant::now() + FORMING_SLICE;
        let until = due.map_or(slice, |d| d.min(slice));
        let mut busy = false;
        self.locked(|d, sub, out| {
            busy = d.complete_oldest(sub, Some(until), None, out) || !sub.flight.is_empty();
        });
        if busy {
            return true;
        }
        let got = match due {
            Some(d) => self.d.inbox.rx.recv_deadline(d),
            None => self
                .d
                .inbox
                .rx
                .recv()
                .map_err(|_| flume::RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(r) => self.d.inbox.board.lock().pending.push(r),
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => self.stopping = true,
        }
        !self.stopping
    }
}

#[cfg(test)]
mod tests {
    //! The executor's rule without a device: it never sleeps past ripe work, never launches
    //! onto a full flight, takes fresh work only when urgent, and is idle only with nothing held.
    use super::*;
    use proptest::prelude::*;

    fn at(now: Instant, ago_us: Option<u64>) -> Option<Instant> {
        ago_us.map(|us| now - Duration::from_micros(us))
    }

    proptest! {
        #[test]
        fn the_executor_takes_exactly_the_work_nobody_drove(
            pending in proptest::option::of(0u64..1_000),
            flight in proptest::option::of(0u64..1_000),
            full: bool,
            urgent: bool,
        ) {
            let now = Instant::now() + Duration::from_secs(1);
            let w = Work { pending: at(now, pending), flight: at(now, flight), full: full && flight.is_some() };
            let linger = LINGER.as_micros() as u64;
            let ripe = |ago: Option<u64>| ago.is_some_and(|a| urgent || a >= linger);
            let due = Due::of(w, urgent, now);
            match due {
                Due::Idle => prop_assert!(pending.is_none() && flight.is_none()),
                Due::Launch => prop_assert!(ripe(pending) && !w.full),
                Due::Complete => prop_assert!(
                    flight.is_some() && (ripe(flight) || (ripe(pending) && w.full))
                ),
                Due::At(t) => {
                    prop_assert!(!ripe(pending) && !ripe(flight));
                    let oldest = [w.pending, w.flight].into_iter().flatten().min().unwrap();
                    prop_assert_eq!(t, oldest + LINGER);
                    prop_assert!(t > now);
                }
            }
        }
    }

    #[test]
    fn fresh_work_waits_for_a_caller_unless_rung() {
        let now = Instant::now() + Duration::from_secs(1);
        let fresh = Work {
            pending: Some(now),
            flight: None,
            full: false,
        };
        assert_eq!(Due::of(fresh, false, now), Due::At(now + LINGER));
        assert_eq!(Due::of(fresh, true, now), Due::Launch);
    }
}
