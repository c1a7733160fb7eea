//! How a job's result gets back to its caller, exactly once.
//!
//! Each submitted job has one [`Ticket`], shared by three parties:
//! - the [`Responder`], which travels with the job to its device and replies with the output
//!   (or, when dropped unanswered, with the reason: `DeviceLost` or `Shutdown`);
//! - the [`JobHandle`], which waits for the reply, and itself resolves the job when the caller
//!   cancels it or its deadline passes while it is still queued;
//! - the device's watchdog, which fails the jobs of a device that stopped making progress.
//!
//! # The protocol
//! The ticket's state moves `QUEUED -> ENCODED -> REPLIED`, or `QUEUED -> REPLIED` for a job
//! that never runs. One move goes back: a job that can run again and was running when its
//! device was lost is queued again on the reopened device (`ENCODED -> QUEUED`, see
//! [`Ticket::replay`]); the ticket counts the attempt, and only the latest attempt's
//! responder answers. Whoever runs the batch loop claims a job (`QUEUED -> ENCODED`) before it encodes it; a
//! job it cannot claim was already resolved and is skipped, so a job answered by its deadline
//! or a cancel never runs. Whoever moves the state to `REPLIED` (one compare-and-swap, so one
//! party) sends the reply into the job's channel of capacity one and counts it in the device's
//! statistics. The handle marks the result taken when a call returns it, so later calls give
//! [`Error::ResultTaken`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::device::health::Health;
use crate::error::{Error, Result};
use crate::job::JobOutput;
use crate::observe::trace::JobSpan;

/// What a job resolves to.
pub(crate) type Reply = Result<JobOutput>;

/// Where async waiters register a deadline so the job is expired (and they are woken) at it:
/// the engine's watchdog. Returns false when the watchdog has stopped.
pub(crate) type DeadlineTimer = Arc<dyn Fn(Instant, Arc<Ticket>) -> bool + Send + Sync>;

/// What a waiting caller can do for its job's device: run its batch loop (see
/// `device/driver.rs`).
pub(crate) trait Help: Send + Sync {
    /// Runs the device's batches on the calling thread until `ticket` resolves, nothing is
    /// left that this thread can do, or `give_up` passes.
    fn drive(&self, ticket: &Ticket, give_up: Option<Instant>);
    /// Asks the executor to run the device's batches now, without waiting for callers (an
    /// async waiter cannot run them itself).
    fn ring(&self);
}

/// How long a waiter that could not run its device's batches (another thread was) waits
/// before trying again.
const RETRY: Duration = Duration::from_micros(500);

/// How long a blocked waiter polls for its reply before parking.
const WAIT_SPIN: Duration = Duration::from_micros(20);

const QUEUED: u8 = 0;
const ENCODED: u8 = 1;
const REPLIED: u8 = 2;

/// The state one job's parties share (see the module docs).
pub(crate) struct Ticket {
    /// The attempt (times the job was queued again after a loss; only the responder of the
    /// latest answers) shifted left by 2, with `QUEUED`, `ENCODED` or `REPLIED` in the low
    /// bits: one word, so a responder of an earlier attempt can never resolve the job, and
    /// the state moves only forward (but for `ENCODED -> QUEUED` with a new attempt, see
    /// [`Ticket::unclaim`]), by compare-and-swap.
    state: AtomicU64,
    /// Set by [`JobHandle::cancel`]; an encoded job's output is then replaced by `Cancelled`.
    cancel: AtomicBool,
    /// The reply channel (capacity one). The ticket holds the sender, so the channel never disconnects.
    tx: flume::Sender<Reply>,
    health: Arc<Health>,
    submitted: Instant,
    /// After this instant the job is not encoded any more.
    deadline: Option<Instant>,
    /// How many losses the job was running at (each was an attempt).
    losses: AtomicU32,
}

impl Ticket {
    /// Moves the state from one of `from` to `REPLIED` (of the attempt `attempt`, or of any)
    /// and, if this call did, delivers `reply`.
    fn resolve_from(&self, from: &[u8], attempt: Option<u32>, reply: Reply) -> bool {
        let mut now = self.state.load(Ordering::Acquire);
        let won = loop {
            let (st, at) = ((now & 3) as u8, now >> 2);
            if !from.contains(&st) || attempt.is_some_and(|a| u64::from(a) != at) {
                break false;
            }
            let replied = (at << 2) | u64::from(REPLIED);
            match (self.state).compare_exchange(now, replied, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break true,
                Err(seen) => now = seen,
            }
        };
        if won {
            let reply = match reply {
                Ok(_) if self.cancel.load(Ordering::Acquire) => Err(Error::Cancelled),
                other => other,
            };
            self.health
                .stats
                .record_done(reply.is_ok(), self.submitted.elapsed());
            let _ = self.tx.try_send(reply); // capacity one, one send: never full
            // Checked after the send: a failed check must not leave the job unanswered.
            crate::device::quiet::assert_may_reply();
        }
        won
    }

    fn st(&self) -> u8 {
        (self.state.load(Ordering::Acquire) & 3) as u8
    }

    /// The current attempt.
    fn attempt(&self) -> u32 {
        (self.state.load(Ordering::Acquire) >> 2) as u32
    }

    /// Resolves the job with `reply` unless it was resolved already.
    pub(crate) fn resolve(&self, reply: Reply) -> bool {
        self.resolve_from(&[QUEUED, ENCODED], None, reply)
    }

    /// Resolves the job with `DeadlineExpired` if it is still queued and its deadline has come.
    pub(crate) fn expire_if_due(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
            && self.resolve_from(&[QUEUED], None, Err(Error::DeadlineExpired))
    }

    /// Takes the job for encoding; false when it was already resolved (it must not run).
    pub(crate) fn claim(&self) -> bool {
        let now = self.state.load(Ordering::Acquire);
        (now & 3) as u8 == QUEUED
            && (self.state)
                .compare_exchange(
                    now,
                    now | u64::from(ENCODED),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Queues the job again after a loss it was running at (`ENCODED -> QUEUED` with the
    /// next attempt, the one move back): the new attempt's number, or `None` when the job is
    /// not encoded (it resolved, or was queued again already). The responder of the earlier
    /// attempt can no longer answer.
    pub(crate) fn replay(&self) -> Option<u32> {
        let attempt = self.unclaim()?;
        self.losses.fetch_add(1, Ordering::AcqRel);
        Some(attempt)
    }

    /// Queues the job again after its batch failed to launch on a lost device: as
    /// [`replay`](Self::replay), but it never ran, so no loss is counted against it.
    pub(crate) fn unclaim(&self) -> Option<u32> {
        let mut now = self.state.load(Ordering::Acquire);
        loop {
            if (now & 3) as u8 != ENCODED {
                return None;
            }
            let next = ((now >> 2) + 1) << 2 | u64::from(QUEUED);
            match (self.state).compare_exchange(now, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some((next >> 2) as u32),
                Err(seen) => now = seen,
            }
        }
    }

    /// How many losses the job was running at.
    pub(crate) fn losses(&self) -> u32 {
        self.losses.load(Ordering::Acquire)
    }

    /// Whether the job has resolved (its reply is sent or being sent).
    pub(crate) fn is_resolved(&self) -> bool {
        self.st() == REPLIED
    }

    /// Whether the job is still queued (neither claimed nor resolved).
    pub(crate) fn is_queued(&self) -> bool {
        self.st() == QUEUED
    }

    /// The deadline, while it still matters: the job is queued.
    pub(crate) fn queued_deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.st() == QUEUED)
    }

    /// When the job was submitted.
    pub(crate) fn submitted(&self) -> Instant {
        self.submitted
    }

    /// The job's deadline, if it has one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// The device side of a job's ticket. Replies exactly once: through [`Responder::send`], or
/// when dropped (a job dropped by a shutdown, a lost device or a panic) with the reason.
pub(crate) struct Responder {
    ticket: Arc<Ticket>,
    /// The job's `tracing` span, which ends with the responder (see `observe/trace.rs`).
    span: JobSpan,
    /// Cleared once it replied or was disarmed.
    armed: bool,
    /// The ticket's attempt this responder answers for (see [`Ticket::replay`]).
    attempt: u32,
    /// The device's board holds a copy of the job (its batch is being launched or in flight,
    /// see `Inbox::launching`): dropped by a panic, the responder leaves the answer to the
    /// board, which the panic's handler closes, so the job can be queued again.
    board: bool,
}

impl Responder {
    /// Records that the device's board holds a copy of the job (see the field).
    pub(crate) fn on_board(&mut self) {
        self.board = true;
    }

    /// The responder of `ticket`'s new attempt `attempt` (see [`Ticket::replay`]).
    pub(crate) fn replayed(ticket: Arc<Ticket>, attempt: u32, span: JobSpan) -> Responder {
        Responder {
            ticket,
            span,
            armed: true,
            attempt,
            board: false,
        }
    }

    /// A disarmed responder for `ticket`'s current attempt, for a job whose own responder was
    /// dropped by a panic while the board held it (see [`Inbox::launching`]); `None` once the
    /// job resolved.
    ///
    /// [`Inbox::launching`]: crate::device::inbox::Inbox::launching
    pub(crate) fn unarmed(ticket: Arc<Ticket>) -> Option<Responder> {
        if ticket.is_resolved() {
            return None;
        }
        let attempt = ticket.attempt();
        let span = JobSpan::queued(ticket.health.index, 1, 0);
        Some(Responder {
            ticket,
            span,
            armed: false,
            attempt,
            board: false,
        })
    }

    /// Whether this responder still answers for its job (no later attempt replaced it).
    fn current(&self) -> bool {
        self.ticket.attempt() == self.attempt
    }

    /// Delivers the result, unless the job was resolved already (cancelled or expired while
    /// queued, or failed by the watchdog) or queued again after a loss.
    pub(crate) fn send(mut self, reply: Reply) {
        self.armed = false;
        self.span.replied(&reply);
        self.ticket
            .resolve_from(&[QUEUED, ENCODED], Some(self.attempt), reply);
    }

    /// The shared ticket (the device keeps a clone of each job's in flight for the watchdog).
    pub(crate) fn ticket(&self) -> &Arc<Ticket> {
        &self.ticket
    }

    /// Records how long the job waited in the queue; called when batch `batch` (the device's
    /// count) is encoded with it.
    pub(crate) fn note_encoding(&self, batch: u64) {
        self.span.encoded(batch);
        let t = &self.ticket;
        t.health.stats.record_queue_wait(t.submitted.elapsed());
    }

    /// Drops the responder without replying or counting: the job never entered a queue.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl std::ops::Deref for Responder {
    type Target = Ticket;
    fn deref(&self) -> &Ticket {
        &self.ticket
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let board_answers = std::thread::panicking() && self.board;
        if self.armed && self.current() && !board_answers {
            let reply = Err(self.ticket.health.drop_error());
            self.span.replied(&reply);
            (self.ticket).resolve_from(&[QUEUED, ENCODED], Some(self.attempt), reply);
        }
    }
}

/// Cancels one job (see [`JobHandle::canceller`]); cheap to clone.
#[derive(Clone)]
pub struct Canceller {
    ticket: Arc<Ticket>,
}

impl Canceller {
    /// As [`JobHandle::cancel`].
    pub fn cancel(&self) {
        cancel(&self.ticket);
    }
}

/// Marks the job cancelled, and resolves it `Cancelled` if it is still queued.
fn cancel(ticket: &Ticket) {
    ticket.cancel.store(true, Ordering::Release);
    ticket.resolve_from(&[QUEUED], None, Err(Error::Cancelled));
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canceller").finish_non_exhaustive()
    }
}

/// A submitted job. Block on it with [`wait`](JobHandle::wait), poll it with
/// [`try_get`](JobHandle::try_get), or `.await` it on any executor.
///
/// The result is delivered once: after one call returned it, later calls give
/// [`Error::ResultTaken`]. A job whose deadline passes while it is still queued resolves
/// [`Error::DeadlineExpired`] at the deadline, for a caller blocked in `wait` as for one that
/// `.await`s it, and never runs.
///
/// A caller blocked in [`wait`](JobHandle::wait) or [`wait_timeout`](JobHandle::wait_timeout)
/// runs the device's batches on its own thread while nobody else is (the jobs queued by then,
/// its own and other callers', go out as one batch); `.await` asks the device's executor
/// thread to run them instead, so a future never blocks its executor. A job nobody waits on
/// is run by the executor within about 200 µs.
pub struct JobHandle {
    rx: flume::Receiver<Reply>,
    fut: Option<flume::r#async::RecvFut<'static, Reply>>,
    ticket: Arc<Ticket>,
    /// A call already returned the result.
    taken: AtomicBool,
    /// Wakes an async waiter at the deadline (present when the job has one).
    timer: Option<DeadlineTimer>,
    /// The deadline was registered with `timer`.
    armed: bool,
    /// The device's batch loop, which a blocked waiter runs itself (weak: a handle does not
    /// keep a dropped engine's device alive).
    help: Option<Weak<dyn Help>>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("state", &self.st())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("device", &self.device())
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl JobHandle {
    /// A handle and its responder, for a job queued on `health`'s device with `deadline`.
    pub(crate) fn pair(
        health: Arc<Health>,
        deadline: Option<Instant>,
        timer: Option<DeadlineTimer>,
        span: JobSpan,
    ) -> (JobHandle, Responder) {
        let (tx, rx) = flume::bounded(1);
        let ticket = Arc::new(Ticket {
            state: AtomicU64::new(u64::from(QUEUED)),
            cancel: AtomicBool::new(false),
            tx,
            health,
            submitted: Instant::now(),
            deadline,
            losses: AtomicU32::new(0),
        });
        let handle = JobHandle {
            rx,
            fut: None,
            ticket: ticket.clone(),
            taken: AtomicBool::new(false),
            timer: timer.filter(|_| deadline.is_some()),
            armed: false,
            help: None,
        };
        (
            handle,
            Responder {
                ticket,
                span,
                armed: true,
                attempt: 0,
                board: false,
            },
        )
    }

    /// Lets a blocked waiter run the batches of the job's device through `help`.
    pub(crate) fn helped_by(mut self, help: Weak<dyn Help>) -> JobHandle {
        self.help = Some(help);
        self
    }

    /// The device's batch loop, while the device lives.
    fn helper(&self) -> Option<Arc<dyn Help>> {
        self.help.as_ref().and_then(Weak::upgrade)
    }

    /// Cancels the job. One not yet encoded into a batch resolves [`Error::Cancelled`] at once
    /// and never runs; one already encoded finishes on the device and the handle then gets
    /// `Cancelled` instead of its output. A job already resolved is unaffected.
    pub fn cancel(&self) {
        cancel(&self.ticket);
    }

    /// Something that cancels this job from anywhere, as [`cancel`](Self::cancel) does, while
    /// the handle itself is moved elsewhere (into a future being awaited, another thread).
    pub fn canceller(&self) -> Canceller {
        Canceller {
            ticket: self.ticket.clone(),
        }
    }

    /// The index of the device the job was queued on.
    pub fn device(&self) -> usize {
        self.ticket.health.index
    }

    /// Blocks until the job resolves, running the device's batches meanwhile when nobody else
    /// is.
    pub fn wait(self) -> Result<JobOutput> {
        self.wait_until(None).unwrap_or(Err(Error::Timeout))
    }

    /// Blocks for at most `timeout` (`Duration::MAX`: no limit), running the device's batches
    /// meanwhile when nobody else is (never waiting on the device past `timeout`). On
    /// [`Error::Timeout`] the job keeps running and the handle stays usable.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<JobOutput> {
        self.wait_until(Instant::now().checked_add(timeout))
            .unwrap_or(Err(Error::Timeout))
    }

    /// Waits for the reply until `give_up` (never when `None`), expiring the job at its
    /// deadline on the way; runs the device's batches meanwhile when nobody else does (see
    /// [`Help::drive`]), retrying every [`RETRY`]. `None` when it gave up.
    fn wait_until(&self, give_up: Option<Instant>) -> Option<Result<JobOutput>> {
        if self.taken.load(Ordering::Acquire) {
            return Some(Err(Error::ResultTaken));
        }
        let help = self.helper();
        let mut first = true;
        loop {
            let help = help.as_ref().filter(|_| !self.ticket.is_resolved());
            if let Some(help) = help {
                help.drive(&self.ticket, give_up);
            }
            // Spin once only: a waiter that keeps spinning takes the cores a software
            // device (lavapipe) computes on.
            if let Some(reply) = std::mem::take(&mut first)
                .then(|| self.spin(give_up))
                .flatten()
            {
                return Some(self.take(reply));
            }
            let retry = help.map(|_| Instant::now() + RETRY);
            let until = [give_up, self.ticket.queued_deadline(), retry]
                .into_iter()
                .flatten()
                .min();
            let got = match until {
                Some(at) => self.rx.recv_deadline(at),
                None => self
                    .rx
                    .recv()
                    .map_err(|_| flume::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(reply) => return Some(self.take(reply)),
                Err(flume::RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if !self.ticket.expire_if_due(now) && give_up.is_some_and(|g| now >= g) {
                        return None;
                    }
                }
                // The ticket holds a sender, so this cannot happen; answer rather than panic.
                Err(flume::RecvTimeoutError::Disconnected) => {
                    return Some(Err(Error::ResultTaken));
                }
            }
        }
    }

    /// Polls for the reply for up to [`WAIT_SPIN`] (never past `give_up`), yielding the core
    /// between polls: a reply that is microseconds away then needs no thread wake-up.
    fn spin(&self, give_up: Option<Instant>) -> Option<Reply> {
        let start = Instant::now();
        let end = give_up.map_or(start + WAIT_SPIN, |g| g.min(start + WAIT_SPIN));
        while Instant::now() < end {
            if let Ok(reply) = self.rx.try_recv() {
                return Some(reply);
            }
            std::thread::yield_now();
        }
        None
    }

    /// The result if the job has resolved, without blocking.
    pub fn try_get(&self) -> Option<Result<JobOutput>> {
        if self.taken.load(Ordering::Acquire) {
            return Some(Err(Error::ResultTaken));
        }
        self.ticket.expire_if_due(Instant::now());
        self.rx.try_recv().ok().map(|reply| self.take(reply))
    }

    /// Marks the result taken. (Two threads racing on one handle: only one receives it.)
    fn take(&self, reply: Reply) -> Result<JobOutput> {
        self.taken.store(true, Ordering::Release);
        reply
    }
}

impl Future for JobHandle {
    type Output = Result<JobOutput>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.taken.load(Ordering::Acquire) {
            return Poll::Ready(Err(Error::ResultTaken));
        }
        this.ticket.expire_if_due(Instant::now());
        let fut = this
            .fut
            .get_or_insert_with(|| this.rx.clone().into_recv_async());
        match Pin::new(fut).poll(cx) {
            Poll::Ready(Ok(reply)) => Poll::Ready(this.take(reply)),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ResultTaken)),
            Poll::Pending => {
                if let Some(help) = this.helper() {
                    help.ring(); // this thread must not block: the executor runs the batch
                }
                // The watchdog expires the job at its deadline, which sends the reply and
                // wakes this future through the channel.
                if let (false, Some(at), Some(timer)) =
                    (this.armed, this.ticket.queued_deadline(), &this.timer)
                {
                    this.armed = timer(at, this.ticket.clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The reply protocol without a device: whatever the device side, the canceller and the
    //! deadline do in whatever order, the handle gets exactly one reply, and the one the
    //! protocol promises (a CPU model of the ticket's three states).
    use super::*;
    use proptest::prelude::*;

    /// One thing a party does to a queued job.
    #[derive(Debug, Clone, Copy)]
    enum Event {
        /// The caller cancels.
        Cancel,
        /// The executor looks at the job with the deadline passed (or not).
        Expire(bool),
        /// The executor claims it for a batch.
        Claim,
        /// The watchdog or a close fails it (a ticket resolve, as for jobs in flight).
        Fail,
    }

    /// How the responder ends.
    #[derive(Debug, Clone, Copy)]
    enum End {
        /// Replies with an output (a batch's result).
        SendOk,
        /// Replies with an error of its own (a batch's failure).
        Send,
        /// Is dropped without replying (a shutdown, a lost device, a panic).
        Drop,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Cancel),
            any::<bool>().prop_map(Event::Expire),
            Just(Event::Claim),
            Just(Event::Fail),
        ]
    }

    fn pair(deadline: Option<Instant>) -> (JobHandle, Responder) {
        let health = Arc::new(Health::new(0, Box::new(|| {})));
        let span = JobSpan::queued(0, 1, 0);
        JobHandle::pair(health, deadline, None, span)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn every_job_gets_exactly_the_reply_the_protocol_promises(
            events in prop::collection::vec(event(), 0..6),
            end in prop_oneof![Just(End::SendOk), Just(End::Send), Just(End::Drop)],
        ) {
            let past = Instant::now();
            let (handle, responder) = pair(Some(past));
            // The model: the first resolution wins; a claim only takes a queued job.
            let (mut state, mut want, mut cancelled) = (QUEUED, None::<Error>, false);
            for e in &events {
                match *e {
                    Event::Cancel => {
                        handle.cancel();
                        cancelled = true;
                        if state == QUEUED {
                            (state, want) = (REPLIED, Some(Error::Cancelled));
                        }
                    }
                    Event::Expire(due) => {
                        let now = if due { past } else { past - Duration::from_secs(1) };
                        let expired = responder.expire_if_due(now);
                        prop_assert_eq!(expired, due && state == QUEUED);
                        if expired {
                            (state, want) = (REPLIED, Some(Error::DeadlineExpired));
                        }
                    }
                    Event::Claim => {
                        prop_assert_eq!(responder.claim(), state == QUEUED);
                        if state == QUEUED {
                            state = ENCODED;
                        }
                    }
                    Event::Fail => {
                        let won = responder.ticket().resolve(Err(Error::Wgpu("failed".into())));
                        prop_assert_eq!(won, state != REPLIED);
                        if state != REPLIED {
                            (state, want) = (REPLIED, Some(Error::Wgpu("failed".into())));
                        }
                    }
                }
            }
            let kernel = crate::kernel::compile::Kernel::compile(crate::kernels::saxpy()).unwrap();
            match end {
                End::SendOk => responder.send(Ok(crate::job::JobOutput {
                    device: 0,
                    kernel,
                    ranges: Vec::new(),
                    mapped: None,
                    gpu_time: None,
                })),
                End::Send => responder.send(Err(Error::Wgpu("batch".into()))),
                End::Drop => drop(responder),
            }
            // An output of a job cancelled after it was encoded becomes `Cancelled`; an error
            // stays what it is.
            let want = match (want, end) {
                (Some(e), _) => Some(e),
                (None, End::SendOk) if cancelled => Some(Error::Cancelled),
                (None, End::SendOk) => None,
                (None, End::Send) => Some(Error::Wgpu("batch".into())),
                (None, End::Drop) => Some(Error::Shutdown), // a healthy device: shut down
            };
            prop_assert_eq!(handle.try_get().map(|r| r.err()), Some(want));
            prop_assert_eq!(handle.try_get().map(|r| r.err()), Some(Some(Error::ResultTaken)));
        }
    }

    #[test]
    fn a_disarmed_responder_leaves_the_handle_unanswered() {
        let (handle, responder) = pair(None);
        responder.disarm(); // the job never entered a queue: its submit returned the error
        assert!(handle.try_get().is_none());
    }
}
