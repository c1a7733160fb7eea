//! The engine's watchdog: one thread that
//! - fails a device whose work has made no progress for `gpu_timeout` (a kernel that never
//!   finishes, a hung driver): its jobs resolve `DeviceLost` with a reason that says so, the
//!   device is skipped from then on, and work moves to the other devices;
//! - closes a device that was lost while the thread running its batches is stuck in the
//!   driver;
//! - wakes `.await`ed jobs at their deadline (a blocked `wait` needs no help: it waits on
//!   the deadline itself).
//!
//! It sleeps while no device has work outstanding and no deadline is registered: whoever
//! starts work on an idle device wakes it ([`Health::note_progress`]). While a device is
//! busy it checks every [`tick`] of the timeout.
//!
//! [`Health::note_progress`]: crate::device::health::Health::note_progress

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::device::inbox::Inbox;
use crate::device::reply::{DeadlineTimer, Ticket};

/// What the watchdog is told.
pub(crate) enum Msg {
    /// Wake an async waiter's job at this instant (expire it if still queued).
    Deadline(Instant, Arc<Ticket>),
    /// A device started work: check it from now on.
    Wake,
    /// Device `.0` was reopened: watch its new board.
    Replace(usize, Arc<Inbox>),
    /// The engine stopped.
    Stop,
}

/// How often a busy device is checked: an eighth of the timeout, between 1 ms and 250 ms.
pub(crate) fn tick(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(250))
}

/// The engine's end of the watchdog thread.
pub(crate) struct Watchdog {
    tx: flume::Sender<Msg>,
    join: Mutex<Option<JoinHandle<()>>>,
}

impl Watchdog {
    /// The watchdog's channel and parked flag, made before the devices (which need its
    /// wake-up, [`Watchdog::waker`]), then handed to [`Watchdog::start`].
    pub(crate) fn channel() -> (flume::Sender<Msg>, flume::Receiver<Msg>, Arc<AtomicBool>) {
        let (tx, rx) = flume::unbounded();
        (tx, rx, Arc::new(AtomicBool::new(false)))
    }

    /// The wake-up a device calls when it starts work while idle.
    pub(crate) fn waker(
        tx: &flume::Sender<Msg>,
        parked: &Arc<AtomicBool>,
    ) -> Box<dyn Fn() + Send + Sync> {
        let (tx, parked) = (tx.clone(), parked.clone());
        Box::new(move || {
            if parked.swap(false, Ordering::AcqRel) {
                let _ = tx.send(Msg::Wake);
            }
        })
    }

    /// Starts the thread over the devices' inboxes.
    pub(crate) fn start(
        (tx, rx, parked): (flume::Sender<Msg>, flume::Receiver<Msg>, Arc<AtomicBool>),
        inboxes: Vec<Arc<Inbox>>,
        timeout: Duration,
    ) -> std::io::Result<Watchdog> {
        let watch = Watch {
            rx,
            parked,
            inboxes,
            timeout,
            heap: BinaryHeap::new(),
        };
        let join = std::thread::Builder::new()
            .name("wgpu-batch-watchdog".into())
            .spawn(move || watch.run())?;
        Ok(Watchdog {
            tx,
            join: Mutex::new(Some(join)),
        })
    }

    /// Where async waiters register their deadlines.
    pub(crate) fn deadlines(&self) -> DeadlineTimer {
        let tx = self.tx.clone();
        Arc::new(move |at, ticket| tx.send(Msg::Deadline(at, ticket)).is_ok())
    }

    /// Hands the watchdog a reopened device's board (see `station.rs`).
    pub(crate) fn replacer(
        tx: &flume::Sender<Msg>,
    ) -> Box<dyn Fn(usize, Arc<Inbox>) + Send + Sync> {
        let tx = tx.clone();
        Box::new(move |index, inbox| {
            let _ = tx.send(Msg::Replace(index, inbox));
        })
    }

    /// Stops the thread (after the executors have stopped) and joins it. Idempotent.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(join) = self.join.lock().take() {
            let _ = join.join();
        }
    }
}

/// The watchdog thread's state.
struct Watch {
    rx: flume::Receiver<Msg>,
    parked: Arc<AtomicBool>,
    inboxes: Vec<Arc<Inbox>>,
    timeout: Duration,
    /// Registered deadlines, earliest first.
    heap: BinaryHeap<Reverse<(Instant, Deadline)>>,
}

/// A ticket in the heap, ordered by the instant beside it (tickets compare equal).
struct Deadline(Arc<Ticket>);

impl PartialEq for Deadline {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Deadline {}
impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deadline {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Watch {
    fn run(mut self) {
        loop {
            let now = Instant::now();
            self.expire(now);
            let busy = self.check();
            let wake_at = [
                self.heap.peek().map(|Reverse((at, _))| *at),
                busy.then(|| now + tick(self.timeout)),
            ]
            .into_iter()
            .flatten()
            .min();
            let got = match wake_at {
                Some(at) => self.rx.recv_deadline(at),
                None => {
                    self.parked.store(true, Ordering::Release);
                    // A device may have started work between `check` and parking.
                    if self.any_busy() {
                        self.parked.store(false, Ordering::Release);
                        continue;
                    }
                    self.rx
                        .recv()
                        .map_err(|_| flume::RecvTimeoutError::Disconnected)
                }
            };
            self.parked.store(false, Ordering::Release);
            match got {
                Ok(Msg::Deadline(at, t)) => self.heap.push(Reverse((at, Deadline(t)))),
                Ok(Msg::Wake) | Err(flume::RecvTimeoutError::Timeout) => {}
                Ok(Msg::Replace(index, inbox)) => {
                    if let Some(old) = self.inboxes.get_mut(index) {
                        *old = inbox;
                    }
                }
                Ok(Msg::Stop) | Err(flume::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Expires the registered jobs whose deadline has come.
    fn expire(&mut self, now: Instant) {
        while self.heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            if let Some(Reverse((_, Deadline(ticket)))) = self.heap.pop() {
                ticket.expire_if_due(now);
            }
        }
    }

    /// Fails stalled devices and closes lost ones; returns whether any device is busy.
    fn check(&self) -> bool {
        for inbox in &self.inboxes {
            inbox.close_if_lost();
            if let Some(stalled) = inbox.health.stalled_for()
                && stalled > self.timeout
                && inbox.health.usable()
            {
                inbox.fail(format!(
                    "the watchdog saw no progress for {stalled:.1?} (gpu_timeout {:?}): \
                     a kernel that never finishes, or a hung driver",
                    self.timeout
                ));
            }
        }
        self.any_busy()
    }

    fn any_busy(&self) -> bool {
        self.inboxes
            .iter()
            .any(|i| i.health.usable() && i.health.stalled_for().is_some())
    }
}
