//! A device's executor thread: the backstop of its batch loop (`device/driver.rs`).
//!
//! Waiting callers run the loop themselves; the executor sleeps on a timer while they do, and
//! runs what nobody has driven for [`LINGER`] (jobs whose callers do not wait yet, or wait
//! with `.await`, which rings it at once: see `Help::ring` in `device/reply.rs`); after
//! [`COLD_AFTER`] with nothing to do it parks on the channel. With `max_batch_delay` set the
//! executor alone forms batches, holding them open as that setting asks. When the channel disconnects (shutdown)
//! it drains what is queued and in flight, then closes the board; a panic of its loop becomes
//! the device's loss, and no job is left unanswered either way.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::batch::layout::Footprint;
use crate::device::driver::Driver;
use crate::device::inbox::Request;
use crate::device::outbox::Outbox;
use crate::device::submitter::Submitter;

/// How long queued work waits for a caller to run it before the executor does.
pub(crate) const LINGER: Duration = Duration::from_micros(200);
/// How long the executor stays on its timer with nothing to do before parking on the channel.
const COLD_AFTER: Duration = Duration::from_millis(2);
/// How long an executor stays parked before its pools drop their free buffers.
const POOL_IDLE: Duration = Duration::from_secs(1);
/// How long one poll waits while a partial batch is held open for more jobs, so new jobs are
/// taken promptly.
const FORMING_SLICE: Duration = Duration::from_millis(1);

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
