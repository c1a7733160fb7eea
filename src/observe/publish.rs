//! The `metrics` feature: every device's statistics published through the [`metrics`] facade,
//! so whichever exporter the application installs (Prometheus, StatsD, ...) serves them.
//!
//! A publisher thread (`wgpu-batch-metrics`) reads the devices' lock-free statistics every
//! [`EngineBuilder::metrics_interval`](crate::EngineBuilder::metrics_interval) and hands them
//! to the facade; the submit path does nothing more than it does without the feature. Once
//! more at shutdown, and on demand with
//! [`Engine::publish_metrics`](crate::Engine::publish_metrics).
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `wgpu_batch_jobs_submitted_total` | counter | jobs accepted onto the device's queue |
//! | `wgpu_batch_jobs_completed_total` | counter | jobs resolved with an output |
//! | `wgpu_batch_jobs_failed_total` | counter | jobs resolved with an error |
//! | `wgpu_batch_batches_total` | counter | command buffers submitted |
//! | `wgpu_batch_dispatches_total` | counter | compute dispatches recorded |
//! | `wgpu_batch_fused_jobs_total` | counter | jobs that ran in fused dispatches |
//! | `wgpu_batch_device_losses_total` | counter | times the device was lost |
//! | `wgpu_batch_device_recoveries_total` | counter | times a lost device was reopened |
//! | `wgpu_batch_jobs_replayed_total` | counter | jobs running at a loss queued to run again |
//! | `wgpu_batch_jobs_poisoned_total` | counter | jobs failed `Poisoned` (running at too many losses) |
//! | `wgpu_batch_last_recovery_seconds` | gauge | loss to the first job completed on the reopened device, the last time |
//! | `wgpu_batch_queue_depth` | gauge | jobs waiting in the queue |
//! | `wgpu_batch_outstanding_jobs` | gauge | jobs submitted and not resolved |
//! | `wgpu_batch_pool_bytes` | gauge | bytes of free buffers kept for reuse |
//! | `wgpu_batch_cost_per_job_seconds` | gauge | the device's time per job (moving average) |
//! | `wgpu_batch_gpu_seconds` | gauge | GPU time of all timed jobs |
//! | `wgpu_batch_job_latency_seconds` | histogram | submit to result |
//! | `wgpu_batch_queue_wait_seconds` | histogram | submit to encoding |
//!
//! Every metric has the labels `device` (its index), `adapter` and `backend`. Counters are
//! published as absolute values. The histograms forward, each period, the samples the engine's
//! own histograms gained (each at its bucket's middle, within 1% of its value) with
//! `record_many`, so an exporter sees the same distribution the engine does.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use parking_lot::Mutex;

use crate::adapters::DeviceInfo;
use crate::observe::stats::DeviceStats;

/// Publishes the statistics of an engine's devices (see the module docs).
pub(crate) struct Publisher {
    state: Arc<State>,
    /// The thread and the sender that stops it; taken by `stop`. Taken by `stop` alone (and
    /// nothing else is held then).
    thread: Mutex<Option<(flume::Sender<()>, JoinHandle<()>)>>,
}

/// What the publisher reads of one device: its description, its lock-free statistics, and
/// its queue depth (which takes the device's board lock for a moment).
pub(crate) struct Source {
    pub(crate) info: DeviceInfo,
    pub(crate) stats: Arc<DeviceStats>,
    pub(crate) depth: Box<dyn Fn() -> usize + Send + Sync>,
}

/// What the thread and `publish_now` share.
struct State {
    sources: Vec<Source>,
    /// Per device, the histograms' bucket counts as last published. Taken to publish (by the
    /// thread or `Engine::publish_metrics`), so each sample is forwarded once. Held while
    /// taking each device's board lock for its queue depth, as `Engine::stats` does; the
    /// other statistics are atomics.
    seen: Mutex<Vec<Seen>>,
}

#[derive(Default)]
struct Seen {
    latency: Vec<u64>,
    queue_wait: Vec<u64>,
}

impl Publisher {
    /// Starts the publisher thread for `sources`, publishing every `every`.
    pub(crate) fn start(sources: Vec<Source>, every: Duration) -> std::io::Result<Publisher> {
        let seen = Mutex::new(sources.iter().map(|_| Seen::default()).collect());
        let state = Arc::new(State { sources, seen });
        let (tx, rx) = flume::bounded::<()>(1);
        let mine = state.clone();
        let join = std::thread::Builder::new()
            .name("wgpu-batch-metrics".into())
            .spawn(move || {
                describe();
                while let Err(flume::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    mine.publish();
                }
            })?;
        Ok(Publisher {
            state,
            thread: Mutex::new(Some((tx, join))),
        })
    }

    /// Publishes now, on the calling thread.
    pub(crate) fn publish_now(&self) {
        describe();
        self.state.publish();
    }

    /// Stops the thread and publishes the final figures. Idempotent.
    pub(crate) fn stop(&self) {
        let Some((tx, join)) = self.thread.lock().take() else {
            return;
        };
        drop(tx); // wakes the thread: its receiver disconnects
        let _ = join.join();
        self.state.publish();
    }
}

impl State {
    fn publish(&self) {
        let mut seen = self.seen.lock();
        for (source, seen) in self.sources.iter().zip(seen.iter_mut()) {
            publish_device(source, seen);
        }
    }
}

/// Gives every metric its unit and description (the facade keeps the latest; an exporter
/// installed after the engine was built gets them from the next period).
fn describe() {
    let c = |name: &'static str, text: &'static str| describe_counter!(name, Unit::Count, text);
    c(
        "wgpu_batch_jobs_submitted_total",
        "Jobs accepted onto the device's queue",
    );
    c(
        "wgpu_batch_jobs_completed_total",
        "Jobs resolved with an output",
    );
    c(
        "wgpu_batch_jobs_failed_total",
        "Jobs resolved with an error",
    );
    c("wgpu_batch_batches_total", "Command buffers submitted");
    c("wgpu_batch_dispatches_total", "Compute dispatches recorded");
    c(
        "wgpu_batch_fused_jobs_total",
        "Jobs that ran in fused dispatches",
    );
    c(
        "wgpu_batch_device_losses_total",
        "Times the device was lost",
    );
    c(
        "wgpu_batch_device_recoveries_total",
        "Times a lost device was reopened",
    );
    c(
        "wgpu_batch_jobs_replayed_total",
        "Jobs running at a loss queued to run again",
    );
    c(
        "wgpu_batch_jobs_poisoned_total",
        "Jobs failed as poisoned (running at too many losses)",
    );
    describe_gauge!(
        "wgpu_batch_queue_depth",
        Unit::Count,
        "Jobs waiting in the queue"
    );
    describe_gauge!(
        "wgpu_batch_outstanding_jobs",
        Unit::Count,
        "Jobs submitted, not resolved"
    );
    describe_gauge!(
        "wgpu_batch_last_recovery_seconds",
        Unit::Seconds,
        "Loss to the first job completed on the reopened device, the last time"
    );
    describe_gauge!(
        "wgpu_batch_pool_bytes",
        Unit::Bytes,
        "Free buffer bytes kept for reuse"
    );
    let s = |name: &'static str, text: &'static str| describe_gauge!(name, Unit::Seconds, text);
    s(
        "wgpu_batch_cost_per_job_seconds",
        "Device time per job (moving average)",
    );
    s("wgpu_batch_gpu_seconds", "GPU time of all timed jobs");
    describe_histogram!(
        "wgpu_batch_job_latency_seconds",
        Unit::Seconds,
        "Submit to result"
    );
    describe_histogram!(
        "wgpu_batch_queue_wait_seconds",
        Unit::Seconds,
        "Submit to encoding"
    );
}

fn publish_device(source: &Source, seen: &mut Seen) {
    let info = &source.info;
    let stats = &source.stats;
    let s = stats.snapshot(info.index, (source.depth)());
    let labels = [
        ("device", info.index.to_string()),
        ("adapter", info.adapter.clone()),
        ("backend", format!("{:?}", info.backend).to_lowercase()),
    ];
    counter!("wgpu_batch_jobs_submitted_total", &labels).absolute(s.submitted);
    counter!("wgpu_batch_jobs_completed_total", &labels).absolute(s.completed);
    counter!("wgpu_batch_jobs_failed_total", &labels).absolute(s.failed);
    counter!("wgpu_batch_batches_total", &labels).absolute(s.batches);
    counter!("wgpu_batch_dispatches_total", &labels).absolute(s.dispatches);
    counter!("wgpu_batch_fused_jobs_total", &labels).absolute(s.fused_jobs);
    counter!("wgpu_batch_device_losses_total", &labels).absolute(s.losses);
    counter!("wgpu_batch_device_recoveries_total", &labels).absolute(s.recoveries);
    counter!("wgpu_batch_jobs_replayed_total", &labels).absolute(s.replays);
    counter!("wgpu_batch_jobs_poisoned_total", &labels).absolute(s.poisoned);
    if let Some(t) = s.last_recovery {
        gauge!("wgpu_batch_last_recovery_seconds", &labels).set(t.as_secs_f64());
    }
    gauge!("wgpu_batch_queue_depth", &labels).set(s.queue_depth as f64);
    gauge!("wgpu_batch_outstanding_jobs", &labels).set(s.outstanding as f64);
    gauge!("wgpu_batch_pool_bytes", &labels).set(s.pool_bytes as f64);
    gauge!("wgpu_batch_cost_per_job_seconds", &labels).set(s.cost_per_job.as_secs_f64());
    gauge!("wgpu_batch_gpu_seconds", &labels).set(s.gpu_time.as_secs_f64());
    let latency = histogram!("wgpu_batch_job_latency_seconds", &labels);
    stats.latency().each_new(&mut seen.latency, |at, n| {
        latency.record_many(at.as_secs_f64(), n as usize);
    });
    let wait = histogram!("wgpu_batch_queue_wait_seconds", &labels);
    stats.queue_wait().each_new(&mut seen.queue_wait, |at, n| {
        wait.record_many(at.as_secs_f64(), n as usize);
    });
}
