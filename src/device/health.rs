//! What every party of one device shares without a lock: whether it is lost, and its
//! statistics. Producers read it to choose a device, handles and responders to explain a job
//! that could not run, the executor and the watchdog to record a loss.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::observe::stats::DeviceStats;

/// The lock-free state of one device.
pub(crate) struct Health {
    /// The engine's index of the device.
    pub(crate) index: usize,
    /// Set once, when the device is lost (the first reason wins); read on the submit path.
    lost: OnceLock<String>,
    /// Lock-free counters (shared with the `metrics` publisher).
    pub(crate) stats: std::sync::Arc<DeviceStats>,
    /// When the device last made progress while it had work outstanding, in nanoseconds since
    /// [`Health::epoch`]; 0 while nothing is submitted. Written under the submitter lock, read by the
    /// watchdog (`Relaxed`: a stale read only delays the watchdog by one tick).
    busy_since: AtomicU64,
    /// The origin of `busy_since`.
    epoch: std::time::Instant,
    /// Wakes the watchdog when the device starts work while idle.
    wake: Box<dyn Fn() + Send + Sync>,
    /// Test hook: the batch loop panics at its next launch, on whichever thread runs it.
    #[cfg(feature = "test-hooks")]
    pub(crate) panic_next: std::sync::atomic::AtomicBool,
}

impl Health {
    pub(crate) fn new(index: usize, wake: Box<dyn Fn() + Send + Sync>) -> Health {
        Health {
            index,
            lost: OnceLock::new(),
            stats: std::sync::Arc::new(DeviceStats::new()),
            busy_since: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            wake,
            #[cfg(feature = "test-hooks")]
            panic_next: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same health with `stats` as its statistics: a reopened device continues the
    /// counts of the one it replaces.
    pub(crate) fn continuing(mut self, stats: &std::sync::Arc<DeviceStats>) -> Health {
        self.stats = stats.clone();
        self
    }

    /// Whether submit may send here.
    pub(crate) fn usable(&self) -> bool {
        self.lost.get().is_none()
    }

    /// Why the device was lost, if it was.
    pub(crate) fn lost_reason(&self) -> Option<&str> {
        self.lost.get().map(String::as_str)
    }

    /// Records a loss; the first reason wins. Returns whether this call recorded it.
    pub(crate) fn mark_lost(&self, reason: String) -> bool {
        let first = self.lost.set(reason.clone()).is_ok();
        if first {
            self.stats.record_loss();
            log::warn!("device {} lost: {reason}", self.index);
            crate::observe::trace::device_lost(self.index, &reason);
        }
        first
    }

    /// The error for a job this device could not run: the loss if there was one; a thread
    /// unwinding from a panic of the batch loop is a loss too (its reason is recorded once the unwinding
    /// ends); otherwise the engine shut down.
    pub(crate) fn drop_error(&self) -> Error {
        match self.lost.get() {
            Some(reason) => Error::DeviceLost {
                device: self.index,
                reason: reason.clone(),
            },
            None if std::thread::panicking() => Error::DeviceLost {
                device: self.index,
                reason: "the device's batch loop panicked".into(),
            },
            None => Error::Shutdown,
        }
    }

    /// Notes that the device made progress (or started work) now, with work outstanding.
    pub(crate) fn note_progress(&self) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if self.busy_since.swap(ns.max(1), Ordering::Relaxed) == 0 {
            (self.wake)();
        }
    }

    /// Notes that nothing is outstanding on the device.
    pub(crate) fn note_idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// How long the device has had work outstanding without progress; `None` when idle.
    pub(crate) fn stalled_for(&self) -> Option<std::time::Duration> {
        let since = self.busy_since.load(Ordering::Relaxed);
        (since != 0).then(|| {
            let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            std::time::Duration::from_nanos(now.saturating_sub(since))
        })
    }
}
