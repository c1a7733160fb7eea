//! The executor: the thread that serves one device's queue.
//!
//! Its loop reads like its job: take what is queued onto the board (**intake**), form a batch
//! by rank up to the batch limits (**gather**), hand it to the device's submitter to encode
//! and submit (**launch**), and once its readback is mapped, reply to its jobs (**complete**).
//! Up to `max_in_flight` batches are submitted at once, so batch N+1 is formed while batch N
//! runs. The callers of jobs of 32 KiB or more wrote their data already; the executor's
//! submitter writes the smaller jobs' data, a batch at a time, into one upload buffer (see
//! `device/mapped.rs`); every caller copies its own results out. The protocol it follows (a job's
//! life, locks, loss and shutdown) is in `device/mod.rs`.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::layout::Footprint;
use crate::batch::{InFlight, Ready};
use crate::config::BatchConfig;
use crate::device::health::Health;
use crate::device::inbox::{Inbox, Request};
use crate::device::quiet::Quiet;
use crate::device::reply::Responder;
use crate::device::submitter::{Submitter, binding_alignment};
use crate::error::Error;
use crate::observe::trace::BatchSpan;

/// How long an idle executor polls its channel before parking.
const IDLE_SPIN: Duration = Duration::from_micros(50);
/// How long an executor stays idle before its pools drop their free buffers.
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

/// What the executor does next.
enum Next {
    Batch(Vec<Request>),
    Complete,
    Exit,
}

pub(crate) struct Executor {
    inbox: Arc<Inbox>,
    health: Arc<Health>,
    /// The device's submit and poll lock, taken per launch and per completion.
    submitter: Arc<Quiet<Submitter>>,
    cfg: BatchConfig,
    capacity: usize,
    /// Batches submitted, oldest first, with their jobs' responders.
    in_flight: VecDeque<(InFlight, Vec<Responder>, BatchSpan)>,
    /// The channel disconnected (shutdown): drain, then return.
    stopping: bool,
    /// Offset alignment of every binding in a batch (for the jobs' footprints).
    align: u64,
    /// The largest read or read-write buffer a batch of several jobs may use.
    buffer_cap: u64,
}

impl Executor {
    pub(crate) fn new(s: ExecutorSetup) -> Executor {
        Executor {
            health: s.inbox.health.clone(),
            inbox: s.inbox,
            submitter: s.submitter,
            align: binding_alignment(&s.limits),
            buffer_cap: s.limits.max_buffer_size.min(DYNAMIC_OFFSET_RANGE),
            cfg: s.cfg,
            capacity: s.capacity,
            in_flight: VecDeque::new(),
            stopping: false,
        }
    }

    /// The thread's body: serve until stopped, turn a panic into a device loss, and leave no
    /// job unanswered.
    pub(crate) fn run(mut self) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.serve())) {
            let msg = crate::error::panic_message(&*panic).unwrap_or("unknown panic");
            self.health.mark_lost(format!("executor panicked: {msg}"));
        }
        self.finish();
    }

    fn serve(&mut self) {
        loop {
            if !self.health.usable() {
                return;
            }
            match self.next() {
                Next::Batch(requests) => {
                    self.launch(requests);
                    if self.in_flight.len() >= self.cfg.max_in_flight {
                        self.complete_oldest();
                    }
                }
                Next::Complete => self.complete_oldest(),
                Next::Exit => return,
            }
        }
    }

    /// After serving: a clean stop completes the batches in flight; then the board is closed,
    /// so whatever is left resolves (`DeviceLost` after a loss; nothing is left otherwise).
    fn finish(&mut self) {
        while self.health.usable() && !self.in_flight.is_empty() {
            self.complete_oldest();
        }
        self.in_flight.clear();
        self.inbox.close();
        self.health.note_idle();
    }

    /// Blocks for work only when nothing is in flight; otherwise prefers finishing a batch.
    fn next(&mut self) -> Next {
        if self.intake() == 0 {
            if !self.in_flight.is_empty() {
                return Next::Complete;
            }
            match self.recv_idle() {
                Some(r) => self.accept(r),
                None => return Next::Exit,
            }
        }
        Next::Batch(self.gather())
    }

    /// Moves what is queued on the channel onto the board, without blocking; returns how
    /// many jobs are pending.
    fn intake(&mut self) -> usize {
        let mut refused = Vec::new();
        let mut board = self.inbox.board.lock();
        while board.pending.len() < self.capacity {
            match self.inbox.rx.try_recv() {
                Ok(r) if self.inbox.is_closed() => refused.push(r),
                Ok(r) => board.pending.push(r),
                Err(flume::TryRecvError::Disconnected) => {
                    self.stopping = true;
                    break;
                }
                Err(flume::TryRecvError::Empty) => break,
            }
        }
        let n = board.pending.len();
        drop(board);
        drop(refused); // replies `DeviceLost` as it drops, outside the lock
        n
    }

    /// Puts one received job on the board.
    fn accept(&mut self, r: Request) {
        self.inbox.board.lock().pending.push(r);
    }

    /// Waits for the next job on an idle device. Spins briefly first: a caller that waits on
    /// its job's result often submits the next one right after, and catching it without
    /// parking saves a thread wake-up. After [`POOL_IDLE`] idle, the pools drop their free
    /// buffers.
    fn recv_idle(&mut self) -> Option<Request> {
        if self.stopping {
            return None;
        }
        let spin_until = Instant::now() + IDLE_SPIN;
        while Instant::now() < spin_until {
            match self.inbox.rx.try_recv() {
                Ok(r) => return Some(r),
                Err(flume::TryRecvError::Disconnected) => break,
                Err(flume::TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
        let got = match self.inbox.rx.recv_timeout(POOL_IDLE) {
            Err(flume::RecvTimeoutError::Timeout) => {
                self.submitter.lock().trim();
                self.inbox.rx.recv().ok()
            }
            other => other.ok(),
        };
        self.stopping = got.is_none();
        got
    }

    /// Forms the next batch from the board, by rank, up to the batch limits.
    ///
    /// A job already resolved (cancelled, or expired by its waiting caller) is skipped; one
    /// whose deadline has passed resolves `DeadlineExpired`; neither is ever encoded. With
    /// `max_delay`, a batch that is not full stays open for more jobs until `max_delay` after
    /// its oldest job was submitted, or its earliest deadline, whichever comes first; batches
    /// in flight are completed meanwhile.
    fn gather(&mut self) -> Vec<Request> {
        let mut batch = Vec::new();
        let mut used = Footprint::default();
        loop {
            let full = self.take_ready(&mut batch, &mut used);
            if batch.is_empty() || full || self.cfg.max_delay.is_zero() || self.stopping {
                return batch;
            }
            let due = self.due(&batch);
            if due.is_some_and(|d| Instant::now() >= d) || !self.wait_for_more(due) {
                return batch;
            }
        }
    }

    /// Moves claimable jobs from the board into `batch` while they fit; returns whether the
    /// batch is full (no further job could join it).
    fn take_ready(&mut self, batch: &mut Vec<Request>, used: &mut Footprint) -> bool {
        self.intake();
        let mut skipped = Vec::new();
        let mut board = self.inbox.board.lock();
        let full = loop {
            if batch.len() >= self.cfg.max_jobs {
                break true;
            }
            let Some(r) = board.pending.pop() else {
                break false;
            };
            let due = r.responder.deadline().is_some_and(|d| Instant::now() >= d);
            if due || !r.responder.is_queued() {
                skipped.push(r); // expired (answered below) or resolved already: never encoded
                continue;
            }
            let add = Footprint::of(&r.job, self.align);
            if !batch.is_empty() && !used.fits(add, self.buffer_cap, self.cfg.max_bytes) {
                board.pending.push_front(r); // still queued: it leads the next batch
                break true;
            }
            if !r.responder.claim() {
                skipped.push(r); // resolved in the meantime
                continue;
            }
            *used = used.plus(add);
            batch.push(r);
        };
        drop(board);
        for r in &skipped {
            r.responder.expire_if_due(Instant::now());
        }
        drop(skipped);
        full
    }

    /// When an open batch must close: `max_delay` after its oldest job, or its earliest
    /// deadline; `None` when neither bounds it (`max_delay` of `Duration::MAX`).
    fn due(&self, batch: &[Request]) -> Option<Instant> {
        let oldest = batch.iter().map(|r| r.responder.submitted()).min()?;
        let by_delay = oldest.checked_add(self.cfg.max_delay);
        batch
            .iter()
            .filter_map(|r| r.responder.deadline())
            .chain(by_delay)
            .min()
    }

    /// Waits until `due` for more jobs, completing batches in flight meanwhile (completion
    /// never waits on batch formation). False when the channel disconnected.
    fn wait_for_more(&mut self, due: Option<Instant>) -> bool {
        if let Some((oldest, ..)) = self.in_flight.front() {
            let slice = Instant::now() + FORMING_SLICE;
            let until = due.map_or(slice, |d| d.min(slice));
            if self.submitter.lock().poll_until(oldest, until) {
                self.complete_oldest();
            }
            return true;
        }
        let got = match due {
            Some(d) => self.inbox.rx.recv_deadline(d),
            None => self
                .inbox
                .rx
                .recv()
                .map_err(|_| flume::RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(r) => self.accept(r),
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => self.stopping = true,
        }
        !self.stopping
    }

    /// Hands `requests` to the submitter as one batch. Jobs whose pipeline cannot be built
    /// fail alone; a batch that wgpu rejects is retried one job at a time so only the culprit
    /// fails.
    fn launch(&mut self, requests: Vec<Request>) {
        #[cfg(feature = "test-hooks")]
        if self
            .health
            .panic_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("test hook: Engine::panic_executor");
        }
        let mut ready = Vec::with_capacity(requests.len());
        let mut responders = Vec::with_capacity(requests.len());
        let mut refused = Vec::new(); // answered once the submitter lock is released
        {
            let sub = self.submitter.lock();
            let number = sub.batches_launched();
            for r in requests {
                r.responder.note_encoding(number);
                match sub.pipelines_for(&r.job, true) {
                    Ok(pipelines) => {
                        let fused = self.fused_pipeline(&sub, &r.job);
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
                    Err(e) => refused.push((r.responder, e)),
                }
            }
        }
        for (responder, e) in refused {
            responder.send(Err(e));
        }
        if ready.len() <= 1 {
            return self.launch_or_fail(ready, responders);
        }
        if let Err((e, ready, responders)) = self.try_launch(ready, responders) {
            let index = self.health.index;
            log::warn!(
                "device {index}: batch of {} rejected ({e}); retrying one by one",
                ready.len()
            );
            for (one, responder) in ready.into_iter().zip(responders) {
                self.launch_or_fail(vec![one], vec![responder]);
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
    fn launch_or_fail(&mut self, ready: Vec<Ready>, responders: Vec<Responder>) {
        if ready.is_empty() {
            return;
        }
        if let Err((e, _, responders)) = self.try_launch(ready, responders) {
            let err = self.submitter.lock().failure(&e);
            for r in responders {
                r.send(Err(err.clone()));
            }
        }
    }

    /// Launches one batch (see [`Submitter::launch`]), its tickets registered on the board
    /// before the submit; on a wgpu error gives the jobs back.
    #[allow(clippy::type_complexity)] // the jobs and their responders come back as they went
    fn try_launch(
        &mut self,
        ready: Vec<Ready>,
        responders: Vec<Responder>,
    ) -> Result<(), (Error, Vec<Ready>, Vec<Responder>)> {
        let mut sub = self.submitter.lock();
        let bytes = || ready.iter().map(|r| r.layout.bytes()).sum();
        let span = BatchSpan::formed(
            self.health.index,
            sub.batches_launched(),
            ready.len(),
            bytes,
        );
        let registered = std::cell::Cell::new(false);
        let register = || {
            let tickets = responders.iter().map(|r| r.ticket().clone()).collect();
            registered.set(self.inbox.register(tickets));
            registered.get()
        };
        match sub.launch(ready, &span, register) {
            Ok(Some(batch)) => {
                self.in_flight.push_back((batch, responders, span));
                Ok(())
            }
            Ok(None) => Ok(()), // the device was closed: the responders reply DeviceLost
            Err((e, ready)) => {
                if registered.get() {
                    self.inbox.unregister_last();
                }
                Err((e, ready, responders))
            }
        }
    }

    /// Waits for the oldest batch in flight and replies to its jobs (outside the lock).
    fn complete_oldest(&mut self) {
        let Some((batch, responders, span)) = self.in_flight.pop_front() else {
            return;
        };
        let replies = self.submitter.lock().complete(batch, &span);
        self.inbox.complete_oldest();
        for (responder, reply) in responders.into_iter().zip(replies) {
            responder.send(reply);
        }
    }
}
