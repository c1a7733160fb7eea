//! Lock-free statistics: plain atomics bumped with `Relaxed` on the hot paths, read into `Copy`
//! snapshots. A snapshot's fields are read one by one, so under load they can disagree by the
//! few jobs that moved between two reads.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

/// Log-linear latency histogram in nanoseconds, HDR-style: exact below 64 ns, then 64
/// buckets per power of two (each under 1.6% wide), so every quantile is within 1% of the
/// truth. Recording is one `Relaxed` add; 3,776 buckets (30 KiB) cover every `u64`.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
}

/// Sub-buckets per power of two (and the exact range below it), as a shift.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < SUB {
            return ns as usize;
        }
        let e = 63 - ns.leading_zeros(); // at least SUB_BITS
        let sub = (ns >> (e - SUB_BITS)) & (SUB - 1);
        (SUB + u64::from(e - SUB_BITS) * SUB + sub) as usize
    }

    /// Bucket `i`'s range of nanoseconds: `[lower, upper)`.
    fn range(i: usize) -> (u64, u64) {
        let i = i as u64;
        if i < SUB {
            return (i, i + 1);
        }
        let (e, sub) = ((i - SUB) / SUB, (i - SUB) % SUB);
        ((SUB + sub) << e, (SUB + sub + 1).saturating_mul(1 << e))
    }

    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(ns)].fetch_add(1, Relaxed);
    }

    /// The `q`-quantile (0..=1): the middle of its bucket, to three significant digits; zero
    /// when empty.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        let mut at = counts.len() - 1;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                at = i;
                break;
            }
        }
        let (lower, upper) = Self::range(at);
        Duration::from_nanos(significant(lower + (upper - lower) / 2, 3))
    }
}

#[cfg(feature = "metrics")]
impl Histogram {
    /// Calls `f(bucket middle, new samples)` for every bucket that gained samples since the
    /// counts in `seen` (one per bucket), and updates `seen`: how a publisher forwards the
    /// distribution without a lock.
    pub(crate) fn each_new(&self, seen: &mut Vec<u64>, mut f: impl FnMut(Duration, u64)) {
        seen.resize(self.buckets.len(), 0);
        for (i, (bucket, seen)) in self.buckets.iter().zip(seen.iter_mut()).enumerate() {
            let now = bucket.load(Relaxed);
            if now > *seen {
                let (lower, upper) = Self::range(i);
                f(
                    Duration::from_nanos(lower + (upper - lower) / 2),
                    now - *seen,
                );
                *seen = now;
            }
        }
    }
}

/// `v` rounded to `digits` significant decimal digits.
fn significant(v: u64, digits: u32) -> u64 {
    let scale = match v.checked_ilog10() {
        Some(d) if d >= digits => 10u64.pow(d + 1 - digits),
        _ => return v,
    };
    (v / scale + u64::from(v % scale >= scale / 2)).saturating_mul(scale)
}

/// One device's counters, written with `Relaxed` atomics: counters only grow (or take a
/// maximum); `cost_ns` and `pool_bytes` are stored only by the holder of the device's submitter
/// lock.
pub(crate) struct DeviceStats {
    /// Jobs accepted onto this device's queue.
    submitted: AtomicU64,
    /// Jobs resolved with an output.
    completed: AtomicU64,
    /// Jobs resolved with an error.
    failed: AtomicU64,
    /// Batches submitted.
    batches: AtomicU64,
    /// Jobs in all submitted batches (for the mean batch size).
    batched_jobs: AtomicU64,
    /// Largest batch so far.
    max_batch: AtomicU64,
    /// Compute dispatches recorded.
    dispatches: AtomicU64,
    /// Jobs that ran in fused groups.
    fused_jobs: AtomicU64,
    /// Times the device was lost, and reopened (`EngineBuilder::reopen_lost_devices`).
    losses: AtomicU64,
    recoveries: AtomicU64,
    /// Jobs running at a loss that were queued to run again, and jobs failed `Poisoned`.
    replays: AtomicU64,
    poisoned: AtomicU64,
    /// While a reopened device has completed no job yet: when its predecessor was lost, in
    /// nanoseconds since `epoch` (0 otherwise).
    lost_at_ns: AtomicU64,
    /// The last time from a loss to the first job completed on the reopened device (0: none).
    recovery_ns: AtomicU64,
    epoch: Instant,
    /// Time from submit to the start of encoding.
    queue_wait: Histogram,
    /// Time from submit to the reply.
    latency: Histogram,
    /// GPU nanoseconds of every timed job, and how many were timed.
    gpu_ns: AtomicU64,
    gpu_jobs: AtomicU64,
    /// Moving average of the device time per job, in nanoseconds (0 until measured); what
    /// weighted balancing divides work by.
    cost_ns: AtomicU64,
    /// Bytes of free buffers the device's pool keeps.
    pool_bytes: AtomicU64,
    /// Jobs entered (about to be queued, queued, running) and not yet resolved: what device
    /// choice balances, and what the idle fast path needs to be zero.
    outstanding: AtomicU64,
}

impl DeviceStats {
    pub(crate) fn new() -> Self {
        let z = || AtomicU64::new(0);
        DeviceStats {
            submitted: z(),
            completed: z(),
            failed: z(),
            batches: z(),
            batched_jobs: z(),
            max_batch: z(),
            dispatches: z(),
            fused_jobs: z(),
            losses: z(),
            recoveries: z(),
            replays: z(),
            poisoned: z(),
            lost_at_ns: z(),
            recovery_ns: z(),
            epoch: Instant::now(),
            queue_wait: Histogram::new(),
            latency: Histogram::new(),
            gpu_ns: z(),
            gpu_jobs: z(),
            cost_ns: z(),
            pool_bytes: z(),
            outstanding: z(),
        }
    }

    /// A job is about to be queued (or run at once): outstanding from now. `SeqCst`, like
    /// its reads, so a job entered on one thread is seen by another's idle check.
    pub(crate) fn enter(&self) {
        self.outstanding.fetch_add(1, SeqCst);
    }

    /// A job entered but never queued (its channel refused it).
    pub(crate) fn abandon(&self) {
        self.outstanding.fetch_sub(1, SeqCst);
    }

    /// A job was accepted onto the device's queue (or run at once).
    pub(crate) fn record_submit(&self) {
        self.submitted.fetch_add(1, Relaxed);
    }

    /// A job resolved.
    pub(crate) fn record_done(&self, ok: bool, latency: Duration) {
        if ok { &self.completed } else { &self.failed }.fetch_add(1, Relaxed);
        if ok && self.lost_at_ns.load(Relaxed) != 0 {
            self.first_after_recovery();
        }
        self.latency.record(latency);
        self.outstanding.fetch_sub(1, SeqCst);
    }

    /// The device was lost.
    pub(crate) fn record_loss(&self) {
        self.losses.fetch_add(1, Relaxed);
    }

    /// A job running at a loss will run again.
    pub(crate) fn record_replay(&self) {
        self.replays.fetch_add(1, Relaxed);
    }

    /// A job running at a loss ran out of replays and failed `Poisoned`.
    pub(crate) fn record_poisoned(&self) {
        self.poisoned.fetch_add(1, Relaxed);
    }

    /// A lost device, lost at `lost_at`, was reopened and serves from now: the next job
    /// completed measures the recovery.
    pub(crate) fn record_recovery(&self, lost_at: Instant) {
        self.recoveries.fetch_add(1, Relaxed);
        let ns = lost_at.saturating_duration_since(self.epoch).as_nanos();
        self.lost_at_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX).max(1), Relaxed);
    }

    /// The first job completed after a recovery: how long since the loss.
    fn first_after_recovery(&self) {
        let lost_at = self.lost_at_ns.swap(0, Relaxed);
        if lost_at != 0 {
            let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.recovery_ns
                .store(now.saturating_sub(lost_at).max(1), Relaxed);
        }
    }

    /// A batch of `jobs` went out as `dispatches` compute dispatches (fewer when jobs fused;
    /// a multi-step job is one dispatch per step), `fused` of its jobs in fused groups.
    pub(crate) fn record_batch(&self, jobs: usize, dispatches: usize, fused: usize) {
        self.dispatches.fetch_add(dispatches as u64, Relaxed);
        self.fused_jobs.fetch_add(fused as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.batched_jobs.fetch_add(jobs as u64, Relaxed);
        self.max_batch.fetch_max(jobs as u64, Relaxed);
    }

    pub(crate) fn record_gpu_time(&self, d: Duration) {
        self.gpu_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.gpu_jobs.fetch_add(1, Relaxed);
    }

    /// Folds one batch's device time into the cost per job (a 1/8-weight moving average).
    /// Only the holder of the submitter lock writes it, so load-then-store loses nothing.
    pub(crate) fn record_busy(&self, busy: Duration, jobs: usize) {
        let per_job = u64::try_from(busy.as_nanos() / jobs.max(1) as u128)
            .unwrap_or(u64::MAX)
            .max(1);
        let old = self.cost_ns.load(Relaxed);
        let new = if old == 0 {
            per_job
        } else {
            (old - old / 8).saturating_add(per_job / 8)
        };
        self.cost_ns.store(new.max(1), Relaxed);
    }

    /// The measured device time per job in nanoseconds; 0 until the first batch completes.
    pub(crate) fn cost_ns(&self) -> u64 {
        self.cost_ns.load(Relaxed)
    }

    /// Records the bytes the device's buffer pool keeps.
    pub(crate) fn set_pool_bytes(&self, bytes: u64) {
        self.pool_bytes.store(bytes, Relaxed);
    }

    /// Submit to result, every job.
    #[cfg(feature = "metrics")]
    pub(crate) fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// Submit to encoding, every job.
    #[cfg(feature = "metrics")]
    pub(crate) fn queue_wait(&self) -> &Histogram {
        &self.queue_wait
    }

    pub(crate) fn record_queue_wait(&self, d: Duration) {
        self.queue_wait.record(d);
    }

    /// Batches submitted so far.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Relaxed)
    }

    /// Jobs entered and not yet resolved: the load figure that device choice balances.
    pub(crate) fn outstanding(&self) -> u64 {
        self.outstanding.load(SeqCst)
    }

    pub(crate) fn snapshot(&self, device: usize, queue_depth: usize) -> DeviceStatsSnapshot {
        let batches = self.batches.load(Relaxed);
        let batched = self.batched_jobs.load(Relaxed);
        DeviceStatsSnapshot {
            device,
            submitted: self.submitted.load(Relaxed),
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            batches,
            mean_batch: if batches == 0 {
                0.0
            } else {
                batched as f64 / batches as f64
            },
            max_batch: self.max_batch.load(Relaxed),
            dispatches: self.dispatches.load(Relaxed),
            fused_jobs: self.fused_jobs.load(Relaxed),
            losses: self.losses.load(Relaxed),
            recoveries: self.recoveries.load(Relaxed),
            replays: self.replays.load(Relaxed),
            poisoned: self.poisoned.load(Relaxed),
            last_recovery: match self.recovery_ns.load(Relaxed) {
                0 => None,
                ns => Some(Duration::from_nanos(ns)),
            },
            queue_depth,
            outstanding: self.outstanding(),
            queue_wait_p50: self.queue_wait.quantile(0.5),
            queue_wait_p99: self.queue_wait.quantile(0.99),
            latency_p50: self.latency.quantile(0.5),
            latency_p99: self.latency.quantile(0.99),
            cost_per_job: Duration::from_nanos(self.cost_ns()),
            gpu_time: Duration::from_nanos(self.gpu_ns.load(Relaxed)),
            gpu_timed_jobs: self.gpu_jobs.load(Relaxed),
            pool_bytes: self.pool_bytes.load(Relaxed),
        }
    }
}

/// One device's statistics at one moment. Fields are read one by one (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceStatsSnapshot {
    /// The device's index in [`Engine::devices`](crate::Engine::devices).
    pub device: usize,
    /// Jobs accepted onto the device's queue.
    pub submitted: u64,
    /// Jobs resolved with an output.
    pub completed: u64,
    /// Jobs resolved with an error.
    pub failed: u64,
    /// Batches (command buffers) submitted.
    pub batches: u64,
    /// Mean jobs per batch.
    pub mean_batch: f64,
    /// Largest batch.
    pub max_batch: u64,
    /// Compute dispatches recorded: one per job and step, except that a fused group of jobs
    /// (see [`EngineBuilder::fusion`](crate::EngineBuilder::fusion)) is one.
    pub dispatches: u64,
    /// Jobs that ran as members of a fused dispatch.
    pub fused_jobs: u64,
    /// Times this device position's device was lost.
    pub losses: u64,
    /// Times a lost device here was reopened
    /// ([`EngineBuilder::reopen_lost_devices`](crate::EngineBuilder::reopen_lost_devices)).
    pub recoveries: u64,
    /// Jobs running at a loss of this device that were queued to run again (each time).
    pub replays: u64,
    /// Jobs that ran out of replays and failed [`Error::Poisoned`](crate::Error::Poisoned).
    pub poisoned: u64,
    /// The last recovery's time from the loss to the first job completed on the reopened
    /// device (`None` before the first).
    pub last_recovery: Option<Duration>,
    /// Jobs waiting in the request queue.
    pub queue_depth: usize,
    /// Jobs submitted and not yet resolved (queued, encoding or running).
    pub outstanding: u64,
    /// Median time from submit to encoding (within 1%, to three significant digits).
    pub queue_wait_p50: Duration,
    /// 99th percentile of the time from submit to encoding.
    pub queue_wait_p99: Duration,
    /// Median time from submit to the result.
    pub latency_p50: Duration,
    /// 99th percentile of the time from submit to the result.
    pub latency_p99: Duration,
    /// Moving average of the device's time per job (what weighted balancing uses).
    pub cost_per_job: Duration,
    /// GPU time of all timed jobs (timestamp queries; zero where the adapter has none).
    pub gpu_time: Duration,
    /// How many jobs `gpu_time` covers.
    pub gpu_timed_jobs: u64,
    /// Bytes of free buffers the device's pool keeps for reuse (at most
    /// [`EngineBuilder::pool_budget`](crate::EngineBuilder::pool_budget)).
    pub pool_bytes: u64,
}

/// Statistics of every device of an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStats {
    /// One entry per device, in device order.
    pub devices: Vec<DeviceStatsSnapshot>,
    /// Bytes of host memory the engine keeps to restore read-only resident buffers after a
    /// device loss: each live read-only buffer's size, once (see
    /// [`EngineBuilder::keep_read_only_copies`](crate::EngineBuilder::keep_read_only_copies)).
    pub kept_copy_bytes: u64,
}

impl DeviceStatsSnapshot {
    /// Batched jobs per compute dispatch (1.0 without fusion for one-step jobs; 0.0 before
    /// the first batch).
    pub fn jobs_per_dispatch(&self) -> f64 {
        if self.dispatches == 0 {
            0.0
        } else {
            self.mean_batch * self.batches as f64 / self.dispatches as f64
        }
    }
}

impl EngineStats {
    /// Jobs resolved with an output, over all devices.
    pub fn completed(&self) -> u64 {
        self.devices.iter().map(|d| d.completed).sum()
    }

    /// Jobs resolved with an error, over all devices.
    pub fn failed(&self) -> u64 {
        self.devices.iter().map(|d| d.failed).sum()
    }

    /// Batches submitted, over all devices.
    pub fn batches(&self) -> u64 {
        self.devices.iter().map(|d| d.batches).sum()
    }

    /// Compute dispatches recorded, over all devices.
    pub fn dispatches(&self) -> u64 {
        self.devices.iter().map(|d| d.dispatches).sum()
    }

    /// Jobs that ran in fused dispatches, over all devices.
    pub fn fused_jobs(&self) -> u64 {
        self.devices.iter().map(|d| d.fused_jobs).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for ns in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1_000,
            12_345,
            1_000_000,
            987_654_321,
            u64::MAX,
        ] {
            let (lower, upper) = Histogram::range(Histogram::bucket(ns));
            assert!(
                lower <= ns && (ns < upper || upper == u64::MAX),
                "{ns} not in [{lower}, {upper})"
            );
            assert!(upper - lower <= lower / 64 + 1, "bucket of {ns} too wide");
        }
        assert_eq!(Histogram::bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_one_percent_and_rounded() {
        let h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us) + Duration::from_nanos(us * 7));
        }
        let (p50, p99) = (
            h.quantile(0.5).as_nanos() as f64,
            h.quantile(0.99).as_nanos() as f64,
        );
        assert!((p50 / 50_350.0 - 1.0).abs() < 0.01, "{p50}");
        assert!((p99 / 99_693.0 - 1.0).abs() < 0.01, "{p99}");
        // Three significant digits: 50.3µs, not 50.331648µs.
        assert_eq!(h.quantile(0.5).as_nanos() % 100, 0);
        assert_eq!(significant(50_331_648, 3), 50_300_000);
        assert_eq!(
            (significant(999, 3), significant(99_950, 3)),
            (999, 100_000)
        );
    }
}
