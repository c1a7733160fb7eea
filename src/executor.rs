//! The executor: the one thread that encodes, submits and polls for one device.
//!
//! Its loop: take what is queued onto the board (intake), form a batch by rank up to the
//! batch limits (gather), encode it into one command buffer and submit it (launch), and reply
//! to the jobs of the oldest batch once its readback is mapped (complete). Up to
//! `max_in_flight` batches are submitted at once, so batch N+1 is formed while batch N runs.
//! The protocol it follows (a job's life, locks, loss and shutdown) is in `device.rs`.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{self, Buffers, EncodeStep, Placement, Plan, Target};
use crate::device::{BatchConfig, Inbox, Request};
use crate::error::{Error, Result, scoped};
use crate::health::Health;
use crate::job::{Footprint, JobOutput};
use crate::kernel::Kernel;
use crate::pipelines::{Pipeline, PipelineCache};
use crate::pool::{BufferPool, Role};
use crate::reply::Responder;

/// How long an idle executor polls its channel before parking.
const IDLE_SPIN: Duration = Duration::from_micros(50);
/// How long an executor stays idle before its pool drops its free buffers.
const POOL_IDLE: Duration = Duration::from_secs(1);
/// How long one poll waits before the executor checks for a loss again.
const POLL_SLICE: Duration = Duration::from_millis(50);
/// How long one poll waits while a partial batch is held open for more jobs, so new jobs are
/// taken promptly.
const FORMING_SLICE: Duration = Duration::from_millis(1);
/// Most jobs a timed batch may hold: two timestamp queries each, within wgpu's 4096.
const MAX_TIMED_JOBS: usize = 2048;
/// The largest buffer a batch of several jobs may use: dynamic offsets are `u32`.
const DYNAMIC_OFFSET_RANGE: u64 = 1 << 32;

/// What the executor is built from.
pub(crate) struct ExecutorSetup {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) pipelines: Arc<PipelineCache>,
    pub(crate) cfg: BatchConfig,
    /// Most jobs held on the board (the engine's queue capacity).
    pub(crate) capacity: usize,
}

/// A submitted batch waiting for its results.
struct InFlight {
    index: wgpu::SubmissionIndex,
    /// Per job: its responder, its last kernel, and each step's placements.
    jobs: Vec<(Responder, Kernel, Vec<Vec<Placement>>)>,
    buffers: Buffers,
    /// Fires when the readback is mapped (or the work is done, for a batch with no readback).
    done: flume::Receiver<std::result::Result<(), String>>,
    /// Where the jobs' timestamps sit in the readback, if the batch was timed.
    timestamps: Option<u64>,
    /// When its encoding began: the start of its device time, for the cost per job. (Not when
    /// `submit` returned: the GL backend runs the whole batch inside `submit`.)
    encoding_began: Instant,
}

/// A job with the pipelines of its steps, ready to encode.
type Ready = (Request, Vec<Pipeline>);

/// What the executor does next.
enum Next {
    Batch(Vec<Request>),
    Complete,
    Exit,
}

pub(crate) struct Executor {
    inbox: Arc<Inbox>,
    health: Arc<Health>,
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipelines: Arc<PipelineCache>,
    /// This device's buffers; the executor's alone.
    pool: BufferPool,
    cfg: BatchConfig,
    capacity: usize,
    in_flight: VecDeque<InFlight>,
    /// The channel disconnected (shutdown): drain, then return.
    stopping: bool,
    /// Two timestamp queries per job of a batch, where the device supports them in passes.
    queries: Option<wgpu::QuerySet>,
    /// Nanoseconds per timestamp tick.
    period_ns: f32,
    /// When the previous batch completed: where the next one's device time starts at the latest.
    last_done: Option<Instant>,
    /// Offset alignment of every binding in a batch: the stricter of uniform and storage.
    align: u64,
    /// The largest read or read-write buffer a batch of several jobs may use.
    buffer_cap: u64,
}

impl Executor {
    pub(crate) fn new(s: ExecutorSetup) -> Executor {
        let limits = s.device.limits();
        Executor {
            health: s.inbox.health.clone(),
            inbox: s.inbox,
            pool: BufferPool::new(limits.max_buffer_size, s.cfg.pool_budget),
            queries: s
                .cfg
                .gpu_timing
                .then(|| timestamp_queries(&s.device, s.cfg.max_jobs))
                .flatten(),
            period_ns: s.queue.get_timestamp_period(),
            align: binding_alignment(&limits),
            buffer_cap: limits.max_buffer_size.min(DYNAMIC_OFFSET_RANGE),
            device: s.device,
            queue: s.queue,
            pipelines: s.pipelines,
            cfg: s.cfg,
            capacity: s.capacity,
            in_flight: VecDeque::new(),
            stopping: false,
            last_done: None,
        }
    }

    /// The thread's body: serve until stopped, turn a panic into a device loss, and leave no
    /// job unanswered.
    pub(crate) fn run(mut self) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.serve())) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
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
    /// parking saves a thread wake-up (tens of microseconds). After [`POOL_IDLE`] idle, the
    /// pool drops its free buffers.
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
                self.pool.trim();
                self.health.stats.set_pool_bytes(self.pool.free_bytes());
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
            if r.responder.expire_if_due(Instant::now()) || !r.responder.is_queued() {
                skipped.push(r); // resolved already: never encoded
                continue;
            }
            let add = r.job.footprint(self.align);
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
        if !self.in_flight.is_empty() {
            let slice = Instant::now() + FORMING_SLICE;
            let until = due.map_or(slice, |d| d.min(slice));
            if self.poll_oldest(until) {
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

    /// Encodes and submits `requests` as one batch. Jobs whose pipeline cannot be built fail
    /// alone; a batch that wgpu rejects is retried one job at a time so only the culprit fails.
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
        for r in requests {
            r.responder.note_encoding();
            match self.pipelines_for(&r, true) {
                Ok(p) => ready.push((r, p)),
                Err(e) => r.responder.send(Err(e)),
            }
        }
        if ready.len() <= 1 {
            return self.launch_or_fail(ready);
        }
        if let Err((e, ready)) = self.try_launch(ready) {
            let index = self.health.index;
            log::warn!(
                "device {index}: batch of {} rejected ({e}); retrying one by one",
                ready.len()
            );
            for one in ready {
                self.launch_or_fail(vec![one]);
            }
        }
    }

    /// The pipelines of a job's steps: with dynamic offsets where the device allows them and
    /// `dynamic` is set.
    fn pipelines_for(&self, r: &Request, dynamic: bool) -> Result<Vec<Pipeline>> {
        r.job
            .steps
            .iter()
            .map(|s| {
                let d = dynamic && self.pipelines.dynamic_for(&s.kernel);
                self.pipelines.get(&s.kernel, d)
            })
            .collect()
    }

    /// Submits `ready` as one batch; if wgpu rejects it, every job in it fails with the reason.
    fn launch_or_fail(&mut self, ready: Vec<Ready>) {
        if ready.is_empty() {
            return;
        }
        if let Err((e, ready)) = self.try_launch(ready) {
            let err = self.failure(&e);
            for (r, _) in ready {
                r.responder.send(Err(err.clone()));
            }
        }
    }

    /// The error to give a job that failed with `e`: device loss trumps what wgpu said.
    fn failure(&self, e: &Error) -> Error {
        // A lost device reports it through its callback, which wgpu runs inside poll once the
        // device's queue is idle: wait for that, boundedly (this is the error path only).
        for _ in 0..20 {
            if !self.health.usable() {
                break;
            }
            let wait = wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(POLL_SLICE),
            };
            if self.device.poll(wait).is_ok() {
                break;
            }
        }
        match self.health.lost_reason() {
            Some(_) => self.health.drop_error(),
            None => e.clone(),
        }
    }

    /// Plans, encodes and submits one batch; on a wgpu error gives the jobs back.
    fn try_launch(
        &mut self,
        mut ready: Vec<Ready>,
    ) -> std::result::Result<(), (Error, Vec<Ready>)> {
        let encoding_began = Instant::now();
        let timed = self.queries.is_some() && ready.len() <= MAX_TIMED_JOBS;
        let plan = {
            let args: Vec<Vec<&[crate::job::Arg]>> = ready
                .iter()
                .map(|(r, _)| r.job.steps.iter().map(|s| s.args.as_slice()).collect())
                .collect();
            Plan::new(&args, self.align, timed)
        };
        if plan.max_offset() > u64::from(u32::MAX) {
            // Only a lone job reaches past a dynamic offset's range: bind it plainly.
            for (r, pipelines) in &mut ready {
                match self.pipelines_for(r, false) {
                    Ok(p) => *pipelines = p,
                    Err(e) => return Err((e, ready)),
                }
            }
        }
        let tickets = ready
            .iter()
            .map(|(r, _)| r.responder.ticket().clone())
            .collect();
        if !self.inbox.register(tickets) {
            drop(ready); // the device was closed: each responder replies `DeviceLost`
            return Ok(());
        }
        if self.in_flight.is_empty() {
            self.health.note_progress(); // busy from here: the watchdog counts from now
        }
        let buffers = self.take_buffers(&plan);
        let (submitted, caught) = {
            let jobs = encode_steps(&ready, &plan);
            let target = Target {
                device: &self.device,
                queue: &self.queue,
                index: self.health.index,
                queries: self.queries.as_ref().filter(|_| timed),
            };
            scoped(&self.device, || {
                let cmd = batch::encode(&target, &plan, &jobs, &buffers)?;
                Ok::<_, Error>(self.queue.submit([cmd]))
            })
        };
        let index = match (submitted, caught) {
            (Ok(index), None) => index,
            (Err(e), _) => return Err(self.unlaunch(e, ready, buffers)),
            (Ok(_), Some(e)) => return Err(self.unlaunch(e.into(), ready, buffers)),
        };
        self.health.stats.record_batch(ready.len());
        let done = self.watch_completion(&buffers);
        let jobs = ready
            .into_iter()
            .zip(plan.jobs)
            .map(|((r, _), p)| {
                let kernel = r.job.last_kernel().clone();
                (r.responder, kernel, p)
            })
            .collect();
        self.in_flight.push_back(InFlight {
            index,
            jobs,
            buffers,
            done,
            timestamps: plan.timestamps,
            encoding_began,
        });
        Ok(())
    }

    /// Undoes the bookkeeping of a batch whose submit failed and hands its jobs back.
    fn unlaunch(&mut self, e: Error, ready: Vec<Ready>, buffers: Buffers) -> (Error, Vec<Ready>) {
        self.inbox.unregister_last();
        if self.in_flight.is_empty() {
            self.health.note_idle();
        }
        self.give_buffers(buffers);
        (e, ready)
    }

    /// The batch's buffers from the pool.
    fn take_buffers(&mut self, plan: &Plan) -> Buffers {
        let (device, pool) = (&self.device, &mut self.pool);
        let mut take = |role, size: u64| (size > 0).then(|| pool.take(device, role, size));
        Buffers {
            read: take(Role::Read, plan.read_size),
            rw: take(Role::ReadWrite, plan.rw_size),
            readback: take(Role::Readback, plan.readback_size),
            resolve: plan
                .timestamps
                .and_then(|_| take(Role::Resolve, 16 * plan.jobs.len() as u64)),
            scratch: plan
                .scratch
                .iter()
                .filter_map(|&size| take(Role::Scratch, size))
                .collect(),
        }
    }

    /// A channel that fires when the batch just submitted has its results on the host.
    fn watch_completion(
        &self,
        buffers: &Buffers,
    ) -> flume::Receiver<std::result::Result<(), String>> {
        let (tx, rx) = flume::bounded(1);
        match &buffers.readback {
            Some(readback) => readback.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r.map_err(|e| e.to_string()));
            }),
            None => self.queue.on_submitted_work_done(move || {
                let _ = tx.send(Ok(()));
            }),
        }
        rx
    }

    /// Polls until the oldest batch in flight has completed or `until` passes; true when it
    /// completed (or failed: `complete_oldest` then reports why).
    fn poll_oldest(&self, until: Instant) -> bool {
        let Some(batch) = self.in_flight.front() else {
            return false;
        };
        if !batch.done.is_empty() {
            return true;
        }
        let timeout = until.saturating_duration_since(Instant::now());
        let wait = wgpu::PollType::Wait {
            submission_index: Some(batch.index.clone()),
            timeout: Some(timeout),
        };
        match self.device.poll(wait) {
            Ok(_) => true,
            Err(wgpu::PollError::Timeout) => !batch.done.is_empty(),
            Err(_) => true,
        }
    }

    /// Waits for the oldest batch in flight and replies to its jobs.
    fn complete_oldest(&mut self) {
        let Some(batch) = self.in_flight.pop_front() else {
            return;
        };
        let result = self.wait_for(&batch);
        self.inbox.complete_oldest();
        if self.in_flight.is_empty() {
            self.health.note_idle();
        } else {
            self.health.note_progress();
        }
        match result {
            Ok(()) => {
                let now = Instant::now();
                let start = self
                    .last_done
                    .map_or(batch.encoding_began, |t| t.max(batch.encoding_began));
                self.health.stats.record_busy(now - start, batch.jobs.len());
                self.last_done = Some(now);
                self.reply(batch)
            }
            Err(reason) => {
                let err = self.failure(&Error::Wgpu(reason));
                for (responder, _, _) in batch.jobs {
                    responder.send(Err(err.clone()));
                }
            }
        }
    }

    /// Polls the device, in slices, until the batch's completion callback has run or the
    /// device is lost.
    fn wait_for(&self, batch: &InFlight) -> std::result::Result<(), String> {
        let mut settled = false;
        loop {
            if let Ok(result) = batch.done.try_recv() {
                return result;
            }
            if let Some(reason) = self.health.lost_reason() {
                return Err(reason.to_owned());
            }
            if settled {
                return Err("the batch's completion callback never ran".into());
            }
            let wait = wgpu::PollType::Wait {
                submission_index: Some(batch.index.clone()),
                timeout: Some(POLL_SLICE),
            };
            match self.device.poll(wait) {
                Ok(_) => settled = true,
                Err(wgpu::PollError::Timeout) => {}
                Err(e) => return Err(format!("poll failed: {e}")),
            }
        }
    }

    /// Copies each job's results out of the mapped readback, replies, and pools the buffers.
    fn reply(&mut self, batch: InFlight) {
        let InFlight {
            jobs,
            buffers,
            timestamps,
            ..
        } = batch;
        let mapped = buffers.readback.as_ref().map(|rb| rb.get_mapped_range(..));
        let device = self.health.index;
        for (j, (responder, kernel, placements)) in jobs.into_iter().enumerate() {
            let bytes = match &mapped {
                None => Ok(&[][..]),
                Some(Ok(view)) => Ok(&view[..]),
                Some(Err(e)) => Err(self.failure(&Error::Wgpu(e.to_string()))),
            };
            let reply = bytes.map(|b| {
                let gpu_time = timestamps.and_then(|at| batch::gpu_time(b, at, j, self.period_ns));
                if let Some(t) = gpu_time {
                    self.health.stats.record_gpu_time(t);
                }
                JobOutput {
                    device,
                    kernel,
                    buffers: batch::outputs(b, &placements),
                    gpu_time,
                }
            });
            responder.send(reply);
        }
        drop(mapped);
        if let Some(readback) = &buffers.readback {
            readback.unmap();
        }
        self.give_buffers(buffers);
    }

    fn give_buffers(&mut self, buffers: Buffers) {
        let pooled = [
            (Role::Read, buffers.read),
            (Role::ReadWrite, buffers.rw),
            (Role::Readback, buffers.readback),
            (Role::Resolve, buffers.resolve),
        ];
        let scratch = buffers
            .scratch
            .into_iter()
            .map(|b| (Role::Scratch, Some(b)));
        for (role, buffer) in pooled.into_iter().chain(scratch) {
            if let Some(b) = buffer {
                self.pool.give(role, b);
            }
        }
        self.health.stats.set_pool_bytes(self.pool.free_bytes());
    }
}

/// Each job's steps as the encoder sees them.
fn encode_steps<'a>(ready: &'a [Ready], plan: &'a Plan) -> Vec<Vec<EncodeStep<'a>>> {
    ready
        .iter()
        .zip(&plan.jobs)
        .map(|((r, pipelines), placements)| {
            let steps = r.job.steps.iter().zip(pipelines).zip(placements);
            steps
                .map(|((s, pipeline), placements)| EncodeStep {
                    args: &s.args,
                    placements,
                    pipeline,
                    workgroups: s.workgroups,
                })
                .collect()
        })
        .collect()
}

/// The offset alignment that satisfies both uniform and storage bindings.
pub(crate) fn binding_alignment(limits: &wgpu::Limits) -> u64 {
    u64::from(
        limits
            .min_storage_buffer_offset_alignment
            .max(limits.min_uniform_buffer_offset_alignment),
    )
}

/// A query set for timing `max_jobs` jobs a batch, if the device can write timestamps inside
/// compute passes.
fn timestamp_queries(device: &wgpu::Device, max_jobs: usize) -> Option<wgpu::QuerySet> {
    let needed = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
    let count = u32::try_from(2 * max_jobs.min(MAX_TIMED_JOBS)).ok()?;
    device.features().contains(needed).then(|| {
        device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("wgpu-batch timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        })
    })
}
