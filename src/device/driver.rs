//! A device's batch loop ([`Driver`]), run by any caller blocked on one of the device's jobs
//! and, as a backstop, by the device's executor thread (`device/executor.rs`).
//!
//! The loop reads like its job: take what is queued onto the board (**intake**), form a batch
//! by rank up to the batch limits (**gather**), encode and submit it (**launch**, through the
//! submitter), and once its readback is mapped, reply to its jobs (**complete**). Up to
//! `max_in_flight` batches are submitted at once, so batch N+1 is formed while batch N runs.
//! Every step holds the device's submitter lock and leaves its replies in an [`Outbox`],
//! delivered once the lock is released.
//!
//! **A waiting caller runs the loop itself.** A thread blocked in `JobHandle::wait` takes the
//! submitter lock and runs steps until its job resolves ([`Help::drive`]): the jobs queued by
//! then (its own and other callers') go out as one batch, and no thread hand-off stands
//! between a job and its result. A caller that submits 16 jobs and then waits runs them as one
//! batch on its own thread. The protocol (a job's life, locks, loss and shutdown) is in
//! `device/mod.rs`.

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

/// How long one poll of a waiting caller lasts before it looks at its job again.
const WAITER_SLICE: Duration = Duration::from_millis(5);
/// The largest buffer a batch of several jobs may use: dynamic offsets are `u32`.
const DYNAMIC_OFFSET_RANGE: u64 = 1 << 32;

/// What a device's batch loop is built from.
pub(crate) struct DriverSetup {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) submitter: Arc<Quiet<Submitter>>,
    pub(crate) limits: wgpu::Limits,
    pub(crate) cfg: BatchConfig,
    /// Most jobs held on the board (the engine's queue capacity).
    pub(crate) capacity: usize,
}

/// A device's batch loop, shared by its executor thread and its waiting callers.
pub(crate) struct Driver {
    pub(super) inbox: Arc<Inbox>,
    pub(super) health: Arc<Health>,
    /// The device's submit and poll lock, held for each step.
    pub(super) submitter: Arc<Quiet<Submitter>>,
    pub(super) cfg: BatchConfig,
    capacity: usize,
    /// Offset alignment of every binding in a batch (for the jobs' footprints).
    align: u64,
    /// The largest read or read-write buffer a batch of several jobs may use.
    buffer_cap: u64,
    /// The executor's thread, unparked by [`Help::ring`].
    pub(super) thread: OnceLock<Thread>,
    /// Set by [`Help::ring`]: the executor runs everything at once until the device is idle.
    pub(super) eager: AtomicBool,
}

impl Driver {
    pub(crate) fn new(s: DriverSetup) -> Driver {
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
    pub(super) fn intake(&self, out: &mut Outbox) -> bool {
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
    pub(super) fn take_ready(
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
    pub(super) fn launch(&self, sub: &mut Submitter, mut requests: Vec<Request>, out: &mut Outbox) {
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
    /// watchdog fails a stalled batch's jobs while its poll is still inside the GPU driver, so a
    /// waiting caller polls in slices and looks at its own job between them).
    pub(super) fn complete_oldest(
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
