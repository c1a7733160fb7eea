//! A device's end of its request channel: the jobs it holds between the channel and their
//! replies, where whoever must fail the device (its executor, the watchdog, a caller whose batch step panicked,
//! a test hook) can
//! reach them. The protocol (a job's life, locks, loss) is in `device/mod.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::batch::layout::Layout;
use crate::device::health::Health;
use crate::device::queue::{Pending, Queued};
use crate::device::quiet::Quiet;
use crate::device::reply::{Responder, Ticket};
use crate::job::Job;
use crate::job::Priority;
use crate::memory::host::Loan;
use crate::memory::host::Staged;

/// Takes the jobs a lost device kept (see [`Inbox::on_loss`]).
pub(crate) type Keeper = Box<dyn Fn(Vec<(Job, Responder)>) + Send + Sync>;

/// What a lost device does with its jobs (see [`Inbox::on_loss`]).
pub(crate) struct Keep {
    /// Takes the kept jobs.
    pub(crate) keeper: Keeper,
    /// Most times one job may run again.
    pub(crate) max_replays: u32,
    /// Told of each job that was poisoned (its kernels are then refused for a while).
    pub(crate) poisoned: Box<dyn Fn(&Job) + Send + Sync>,
}

/// A queued job and its reply side.
pub(crate) struct Request {
    pub(crate) job: Job,
    pub(crate) responder: Responder,
    /// Where the job's data goes (computed on the submitting thread).
    pub(crate) layout: Layout,
    /// The job's data in host buffers, written by the submitting thread (`None` when the lend
    /// budget was full: the submitter writes it when the batch forms).
    pub(crate) staged: Option<Staged>,
    /// `staged`'s loan against the host pool's budget (given back when dropped).
    pub(crate) lent: Option<Loan>,
    /// With a keeper set, a copy of the job, made on the submitting thread (not under the
    /// device's locks), for the board to keep while the job is launched and in flight.
    pub(crate) copy: Option<Job>,
}

impl Request {
    /// A request for `job`, staged as `staged`; with a keeper set (`keep`), with a copy of
    /// the job made here, on the submitting thread.
    pub(crate) fn new(
        job: Job,
        responder: Responder,
        (layout, staged, lent): (Layout, Option<Staged>, Option<Loan>),
        keep: bool,
    ) -> Request {
        let copy = keep.then(|| job.clone());
        Request {
            job,
            responder,
            layout,
            staged,
            lent,
            copy,
        }
    }
}

impl Queued for Request {
    fn priority(&self) -> Priority {
        self.job.priority
    }
    fn submitted(&self) -> Instant {
        self.responder.submitted()
    }
}

/// The jobs a device holds between its channel and their replies, where whoever fails the
/// device can reach them.
pub(crate) struct Board {
    /// Taken off the channel, not yet batched, by priority.
    pub(crate) pending: Pending<Request>,
    /// The tickets of each batch in flight, oldest first, each with a copy of its job when
    /// the job may run again after a loss (see [`Inbox::on_loss`]).
    in_flight: VecDeque<Vec<(Arc<Ticket>, Option<Job>)>>,
    /// Set by [`Inbox::close`]: nothing more is accepted.
    closed: bool,
    /// With a keeper set: a copy of each job of the batch being launched, until it is in
    /// flight or failed (see [`Inbox::launching`]).
    launching: Vec<(Arc<Ticket>, Job)>,
}

/// The device's end of its request channel, shared by its batch loop and the watchdog.
pub(crate) struct Inbox {
    pub(crate) health: Arc<Health>,
    /// Pending jobs and in-flight tickets (lock order: see the module docs).
    pub(crate) board: Quiet<Board>,
    /// The channel, for the batch loop and for draining it on a loss.
    pub(crate) rx: flume::Receiver<Request>,
    /// The channel's owning sender while the device accepts work; taken by shutdown or a loss.
    sender: Mutex<Option<flume::Sender<Request>>>,
    /// Set once the board is closed, so the watchdog checks without locking.
    closed: AtomicBool,
    /// Where the jobs that were never encoded, and those in flight that may run again, go
    /// when the device is closed after a loss (instead of failing): the device's recovery
    /// (see `station.rs`), with the most times one job may run again.
    keep: std::sync::OnceLock<Keep>,
}

impl Inbox {
    /// Records a loss (if none was recorded) and closes the device.
    pub(crate) fn fail(&self, reason: String) {
        self.health.mark_lost(reason);
        self.close();
    }

    /// Closes a lost device if nobody has yet.
    pub(crate) fn close_if_lost(&self) {
        if !self.health.usable() && !self.closed.load(Ordering::Acquire) {
            self.close();
        }
    }

    /// Stops accepting work and resolves every job the device holds with its drop error
    /// (`DeviceLost` after a loss): the pending ones, those in flight, and those left on the
    /// channel, which is drained until every sender is gone. After a loss, with a keeper set
    /// ([`Inbox::on_loss`]), the jobs go to it instead as [`salvage`](Self::salvage) says.
    /// Idempotent.
    pub(crate) fn close(&self) {
        drop(self.sender.lock().take());
        let (mut pending, in_flight, mut launching) = {
            let mut board = self.board.lock();
            board.closed = true;
            let pending = std::mem::replace(&mut board.pending, Pending::new(Duration::ZERO));
            let in_flight: Vec<_> = std::mem::take(&mut board.in_flight)
                .into_iter()
                .flatten()
                .collect();
            (pending, in_flight, std::mem::take(&mut board.launching))
        };
        self.closed.store(true, Ordering::Release);
        // A job registered in flight while its batch was launching is salvaged once, as in flight.
        launching.retain(|(t, _)| !in_flight.iter().any(|(f, _)| Arc::ptr_eq(t, f)));
        let mut queued = Vec::new();
        while let Some(r) = pending.pop() {
            queued.push((r.job, r.responder));
        }
        while let Ok(r) = self.rx.recv() {
            queued.push((r.job, r.responder));
        }
        let unlaunched = (launching.into_iter())
            .filter_map(|(ticket, job)| Some((job, Responder::unarmed(ticket)?)))
            .collect();
        self.salvage(in_flight, unlaunched, queued);
    }

    /// After a loss, with a keeper set, hands it the jobs that may run on another device: the
    /// `queued` ones (never encoded), the `unlaunched` ones (encoded into a batch that never
    /// reached the device), and the `in_flight` ones with a copy (they write no resident
    /// buffer) that ran at no more losses than the keeper allows replays (past that they
    /// resolve `Poisoned`). Everything else resolves with the device's drop error. Called by
    /// [`close`](Self::close), and by a batch loop for a batch it found failed by the loss
    /// after taking it off the board.
    pub(crate) fn salvage(
        &self,
        in_flight: Vec<(Arc<Ticket>, Option<Job>)>,
        unlaunched: Vec<(Job, Responder)>,
        queued: Vec<(Job, Responder)>,
    ) {
        let keep = self.keep.get().filter(|_| !self.health.usable());
        let Some(keep) = keep else {
            for (ticket, _) in in_flight {
                ticket.resolve(Err(self.health.drop_error()));
            }
            for (_, responder) in unlaunched {
                responder.ticket().resolve(Err(self.health.drop_error()));
            }
            return drop(queued); // each responder replies as it drops
        };
        let mut kept = queued;
        for (ticket, job) in in_flight {
            match job {
                Some(job) => self.replay(ticket, job, keep, &mut kept),
                None => drop(ticket.resolve(Err(self.health.drop_error()))),
            }
        }
        for (job, responder) in unlaunched {
            let ticket = responder.ticket().clone();
            responder.disarm();
            if let Some(attempt) = ticket.unclaim() {
                let span =
                    crate::observe::trace::JobSpan::queued(self.health.index, job.steps.len(), 0);
                kept.push((job, Responder::replayed(ticket, attempt, span)));
            }
        }
        (keep.keeper)(kept);
    }

    /// A job that was running at the loss: queued again (into `kept`) unless it ran at more
    /// than `keep.max_replays` losses, then `Poisoned`.
    fn replay(&self, ticket: Arc<Ticket>, job: Job, keep: &Keep, kept: &mut Vec<(Job, Responder)>) {
        let losses = ticket.losses() + 1;
        if losses > keep.max_replays {
            let device = self.health.index;
            (keep.poisoned)(&job);
            self.health.stats.record_poisoned();
            let kernel = job.kernel().label();
            crate::observe::trace::job_poisoned(device, kernel, losses);
            log::warn!(
                "device {device}: a job of kernel `{kernel}` was running at {losses} losses; \
                 it fails Poisoned and its kernels are refused here for a while"
            );
            ticket.resolve(Err(crate::error::Error::Poisoned { device, losses }));
            return;
        }
        if let Some(attempt) = ticket.replay() {
            self.health.stats.record_replay();
            crate::observe::trace::job_replayed(self.health.index, attempt);
            let steps = job.steps.len();
            let span = crate::observe::trace::JobSpan::queued(self.health.index, steps, 0);
            kept.push((job, Responder::replayed(ticket, attempt, span)));
        }
    }

    /// Sets where the kept jobs go when the device is closed after a loss (once), and how
    /// many times one job may run again (see [`Inbox::close`]).
    pub(crate) fn on_loss(&self, keep: Keep) {
        let _ = self.keep.set(keep);
    }

    /// Whether batches keep a copy of each job that may run again (a keeper is set).
    pub(crate) fn keeps_jobs(&self) -> bool {
        self.keep.get().is_some()
    }

    /// Drops the owning sender: what is queued runs, then the executor returns.
    pub(crate) fn stop_accepting(&self) {
        drop(self.sender.lock().take());
    }

    /// With a keeper set, keeps the copy of each job of a batch about to be launched until
    /// [`launched`](Self::launched): a panic before the batch is in flight leaves them for
    /// [`close`](Self::close) to queue again (they never reached the device), and their
    /// dropped responders leave the answer to it.
    pub(crate) fn launching<'a>(&self, requests: impl Iterator<Item = &'a mut Request>) {
        if !self.keeps_jobs() {
            return;
        }
        let copies: Vec<(Arc<Ticket>, Job)> = requests
            .filter_map(|r| {
                let copy = r.copy.take()?;
                r.responder.on_board();
                Some((r.responder.ticket().clone(), copy))
            })
            .collect();
        // A batch whose launch panicked leaves its copies here until the close that follows
        // the panic: kept, not replaced.
        self.board.lock().launching.extend(copies);
    }

    /// The batch being launched is in flight (its tickets registered, holding their copies)
    /// or failed: the copies left go.
    pub(crate) fn launched(&self) {
        if !self.keeps_jobs() {
            return;
        }
        drop(std::mem::take(&mut self.board.lock().launching));
    }

    /// Puts a batch's tickets on the board before its submit, each with its job's copy from
    /// [`launching`](Self::launching) when the job may run again after a loss (it writes no
    /// resident buffer); false when the device is closed (the batch must not be submitted).
    pub(crate) fn register(&self, tickets: Vec<Arc<Ticket>>) -> bool {
        let mut board = self.board.lock();
        if board.closed {
            return false;
        }
        // The batch's jobs are the launching ones in order, less those already failed.
        let mut copies = std::mem::take(&mut board.launching).into_iter().peekable();
        let mut left = Vec::new();
        let entries = (tickets.into_iter())
            .map(|t| {
                while let Some((c, job)) = copies.next_if(|(c, _)| !Arc::ptr_eq(c, &t)) {
                    left.push((c, job));
                }
                let job = copies.next().map(|(_, job)| job);
                (t, job.filter(Job::is_idempotent))
            })
            .collect();
        left.extend(copies);
        board.launching = left;
        board.in_flight.push_back(entries);
        true
    }

    /// Takes the last registered batch off the board again (its submit failed); its copies
    /// go back to [`launching`](Self::launching), as the batch is retried job by job.
    pub(crate) fn unregister_last(&self) {
        let mut board = self.board.lock();
        let batch = board.in_flight.pop_back().unwrap_or_default();
        for (t, job) in batch {
            if let Some(job) = job {
                board.launching.push((t, job));
            }
        }
    }

    /// Takes the oldest batch off the board (it completed): its tickets, with the copies of
    /// its jobs that may run again.
    pub(crate) fn complete_oldest(&self) -> Vec<(Arc<Ticket>, Option<Job>)> {
        self.board.lock().in_flight.pop_front().unwrap_or_default()
    }

    /// Whether the board is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Inbox {
    /// An inbox over the channel `rx` whose owning sender is `tx`.
    pub(crate) fn new(
        health: Arc<Health>,
        aging: Duration,
        tx: flume::Sender<Request>,
        rx: flume::Receiver<Request>,
    ) -> Inbox {
        Inbox {
            health,
            board: Quiet::new(Board {
                pending: Pending::new(aging),
                in_flight: VecDeque::new(),
                closed: false,
                launching: Vec::new(),
            }),
            rx,
            sender: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            keep: std::sync::OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The loss protocol without a device: closing a device answers every job it holds
    //! (pending on the board, in flight, still in the channel) exactly once, and it takes no
    //! more.
    use super::*;
    use crate::batch::layout::Layout;
    use crate::device::reply::JobHandle;
    use crate::error::Error;
    use crate::observe::trace::JobSpan;

    fn request(inbox: &Inbox) -> (JobHandle, Request) {
        let kernel = crate::kernel::compile::Kernel::compile(crate::kernels::saxpy()).unwrap();
        let job = Job::new(&kernel);
        let span = JobSpan::queued(0, 1, 0);
        let (handle, responder) = JobHandle::pair(inbox.health.clone(), None, None, span);
        let layout = Layout::of(&job, 256);
        let copy = Some(job.clone());
        let request = Request {
            job,
            responder,
            layout,
            staged: None,
            lent: None,
            copy,
        };
        (handle, request)
    }

    #[test]
    fn closing_a_lost_device_answers_every_job_it_holds_once() {
        let (tx, rx) = flume::bounded(16);
        let health = Arc::new(Health::new(3, Box::new(|| {})));
        let inbox = Inbox::new(health, Duration::from_millis(100), tx.clone(), rx);
        let (pending, r) = request(&inbox);
        inbox.board.lock().pending.push(r);
        let (in_flight, running) = request(&inbox);
        assert!(running.responder.claim());
        assert!(inbox.register(vec![running.responder.ticket().clone()]));
        let (queued, r) = request(&inbox);
        tx.send(r).unwrap();
        drop(tx); // the close drains the channel until no sender is left
        inbox.fail("driver reset".into());
        for (what, handle) in [
            ("pending", &pending),
            ("in flight", &in_flight),
            ("queued", &queued),
        ] {
            let reply = handle.try_get().map(|r| r.err());
            assert!(
                matches!(reply, Some(Some(Error::DeviceLost { device: 3, .. }))),
                "{what}: {reply:?}"
            );
        }
        // The responder of the job in flight is still held by its batch: its late reply is
        // dropped (the ticket resolved once), and the closed board refuses new batches.
        running.responder.send(Err(Error::Wgpu("late".into())));
        assert!(!inbox.register(Vec::new()));
        assert!(inbox.is_closed());
        assert!(
            in_flight
                .try_get()
                .is_some_and(|r| r.err() == Some(Error::ResultTaken))
        );
    }

    #[test]
    fn a_kept_device_keeps_its_queued_jobs_replays_running_ones_and_poisons_repeat_runners() {
        let (tx, rx) = flume::bounded(16);
        let health = Arc::new(Health::new(2, Box::new(|| {})));
        let inbox = Inbox::new(health, Duration::from_millis(100), tx.clone(), rx);
        let kept = Arc::new(Mutex::new(Vec::new()));
        let into = kept.clone();
        inbox.on_loss(Keep {
            keeper: Box::new(move |jobs| into.lock().extend(jobs)),
            max_replays: 1,
            poisoned: Box::new(|_| {}),
        });
        assert!(inbox.keeps_jobs());
        let (pending, r) = request(&inbox);
        inbox.board.lock().pending.push(r);
        // One running job on its first loss, one already replayed once (max_replays 1), one
        // that writes a resident buffer (no copy kept).
        let (first, a) = request(&inbox);
        let (again, b) = request(&inbox);
        let (writer, c) = request(&inbox);
        for r in [&a, &b, &c] {
            assert!(r.responder.claim());
        }
        assert_eq!(b.responder.ticket().replay(), Some(1));
        assert!(b.responder.claim());
        // The writer's job gets no copy (as one that writes a resident buffer would not).
        let (mut a, mut b) = (a, b);
        inbox.launching([&mut a, &mut b].into_iter());
        let tickets = [&a, &b, &c].map(|r| r.responder.ticket().clone());
        assert!(inbox.register(tickets.to_vec()));
        drop(tx);
        inbox.fail("driver reset".into());
        // The pending job and the first-time runner are kept, unanswered, with responders
        // that answer for them; the old runner's responder no longer does.
        assert!(pending.try_get().is_none() && first.try_get().is_none());
        let kept: Vec<_> = std::mem::take(&mut *kept.lock());
        assert_eq!(kept.len(), 2);
        a.responder
            .send(Err(Error::Wgpu("the old attempt's late reply".into())));
        assert!(first.try_get().is_none());
        assert!(matches!(
            again.try_get(),
            Some(Err(Error::Poisoned {
                device: 2,
                losses: 2
            }))
        ));
        assert!(matches!(
            writer.try_get(),
            Some(Err(Error::DeviceLost { .. }))
        ));
        for (_, responder) in kept {
            responder.send(Err(Error::Wgpu("ran on the new device".into())));
        }
        assert!(pending.try_get().is_some() && first.try_get().is_some());
        drop((b, c));
    }
}
