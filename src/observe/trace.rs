//! Spans for `tracing` (the `tracing` feature; without it every type here is empty and every
//! call compiles to nothing).
//!
//! - **`wgpu_batch.job`** (level DEBUG), one per job from submit to reply, a child of the
//!   submitting thread's current span: fields `device`, `steps`, `bytes` (the job's data),
//!   `batch` (the batch it ran in, recorded when encoded) and `outcome` (`ok` or the error).
//!   Events inside: `encoded`, `replied`. A job resolved by its handle (cancelled, deadline)
//!   or the watchdog is replied to by them; its span then ends when its device drops it.
//! - **`wgpu_batch.batch`** (level DEBUG), one per batch from forming to completion, on the
//!   thread that runs the batch (a waiting caller or the executor): fields `device`, `batch`, `jobs`, `bytes`, `dispatches`.
//!   Events: `formed`, `encoded`, `submitted`, `completed` (or `failed` with the reason).
//! - Events `wgpu_batch.device_lost` (WARN; fields `device`, `reason`) when a device is lost,
//!   and `wgpu_batch.device_reopened` (WARN; fields `device`, `generation`, `moved` jobs,
//!   `micros` since the loss) when a new device takes its place
//!   (`EngineBuilder::reopen_lost_devices`); `wgpu_batch.job_replayed` (INFO; `device`,
//!   `attempt`) for each job running at a loss that runs again, and `wgpu_batch.job_poisoned`
//!   (WARN; `device`, `kernel`, `losses`) for one that ran out of replays.
//!
//! Spans are created and recorded on the threads that already do that work, with no lock:
//! `tracing` checks each call site's interest once and caches it, so a span no subscriber
//! wants costs one atomic load.

#[cfg(feature = "tracing")]
use tracing::field::Empty;

/// One job's span (see the module docs).
pub(crate) struct JobSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl JobSpan {
    /// Opens the span of a job of `steps` steps and `bytes` bytes queued on `device`.
    #[allow(unused_variables)]
    pub(crate) fn queued(device: usize, steps: usize, bytes: u64) -> JobSpan {
        JobSpan {
            #[cfg(feature = "tracing")]
            span: tracing::debug_span!(
                "wgpu_batch.job",
                device,
                steps,
                bytes,
                batch = Empty,
                outcome = Empty
            ),
        }
    }

    /// The job went into batch `batch` (the device's count).
    #[allow(unused_variables)]
    pub(crate) fn encoded(&self, batch: u64) {
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            self.span.record("batch", batch);
            tracing::debug!(parent: &self.span, batch, "encoded");
        }
    }

    /// The job resolved with `outcome`.
    #[allow(unused_variables)]
    pub(crate) fn replied<T>(&self, outcome: &crate::error::Result<T>) {
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            match outcome {
                Ok(_) => self.span.record("outcome", "ok"),
                Err(e) => self.span.record("outcome", tracing::field::display(e)),
            };
            tracing::debug!(parent: &self.span, "replied");
        }
    }
}

/// One batch's span (see the module docs).
pub(crate) struct BatchSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl BatchSpan {
    /// Opens the span of batch `batch` of device `device`, formed of `jobs` jobs of `bytes()`
    /// bytes in all (counted only when a subscriber wants the span).
    #[allow(unused_variables)]
    pub(crate) fn formed(
        device: usize,
        batch: u64,
        jobs: usize,
        bytes: impl FnOnce() -> u64,
    ) -> BatchSpan {
        #[cfg(feature = "tracing")]
        {
            let span = tracing::debug_span!(
                "wgpu_batch.batch",
                device,
                batch,
                jobs,
                bytes = Empty,
                dispatches = Empty
            );
            if !span.is_disabled() {
                span.record("bytes", bytes());
                tracing::debug!(parent: &span, "formed");
            }
            BatchSpan { span }
        }
        #[cfg(not(feature = "tracing"))]
        BatchSpan {}
    }

    /// The batch's command buffer was recorded, with `dispatches()` compute dispatches
    /// (counted only when a subscriber wants the span).
    #[allow(unused_variables)]
    pub(crate) fn encoded(&self, dispatches: impl FnOnce() -> usize) {
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            let dispatches = dispatches();
            self.span.record("dispatches", dispatches);
            tracing::debug!(parent: &self.span, dispatches, "encoded");
        }
    }

    /// The command buffer went to the queue.
    pub(crate) fn submitted(&self) {
        #[cfg(feature = "tracing")]
        tracing::debug!(parent: &self.span, "submitted");
    }

    /// The batch finished: its results are read (or it failed with `error`).
    #[allow(unused_variables)]
    pub(crate) fn completed(&self, error: Option<&crate::error::Error>) {
        #[cfg(feature = "tracing")]
        match error {
            None => tracing::debug!(parent: &self.span, "completed"),
            Some(e) => tracing::debug!(parent: &self.span, error = %e, "failed"),
        }
    }

    /// The batch finished with `replies` (one per job; all errors when the batch failed).
    #[allow(unused_variables)]
    pub(crate) fn finished<T>(&self, replies: &[crate::error::Result<T>]) {
        #[cfg(feature = "tracing")]
        if !self.span.is_disabled() {
            self.completed(replies.iter().find_map(|r| r.as_ref().err()));
        }
    }
}

/// Records that `device` was lost (see the module docs).
#[allow(unused_variables)]
pub(crate) fn device_lost(device: usize, reason: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(name: "wgpu_batch.device_lost", device, reason, "device lost");
}

/// Records that `device` was reopened as `generation`, `moved` jobs moving to it, `since`
/// its loss (see the module docs).
#[allow(unused_variables)]
pub(crate) fn device_reopened(
    device: usize,
    generation: u32,
    moved: usize,
    since: std::time::Duration,
) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        name: "wgpu_batch.device_reopened",
        device,
        generation,
        moved,
        micros = since.as_micros() as u64,
        "device reopened"
    );
}

/// Records that a job running at a loss of `device` runs again, as attempt `attempt`.
#[allow(unused_variables)]
pub(crate) fn job_replayed(device: usize, attempt: u32) {
    #[cfg(feature = "tracing")]
    tracing::info!(name: "wgpu_batch.job_replayed", device, attempt, "job replayed");
}

/// Records that a job of `kernel` ran at `losses` losses of `device` and is `Poisoned`.
#[allow(unused_variables)]
pub(crate) fn job_poisoned(device: usize, kernel: &str, losses: u32) {
    #[cfg(feature = "tracing")]
    tracing::warn!(name: "wgpu_batch.job_poisoned", device, kernel, losses, "job poisoned");
}
