//! The one place that submits to and polls a device: its queue, buffer pool, kept bind
//! groups and timestamp queries, behind the device's lock (`DeviceCore::submitter`).
//!
//! It holds the one batch runner, [`Submitter::launch`] then [`Submitter::complete`], and the
//! batches in flight between the two: the batch loop (`device/driver.rs`, run by a waiting
//! caller or the executor) takes the lock to launch a batch and, later, to complete it; a
//! caller of [`Engine::run`](crate::Engine::run) takes it when the device has nothing
//! outstanding and runs its one job through the same two calls as a batch of one (the idle
//! fast path). Either way one thread at a time submits and polls the device, so the timed
//! polls below never race a submit (wgpu 30.0.2 can panic when they do).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::plan::Plan;
use crate::batch::{Batch, BindGroups, Buffers, InFlight, Leftovers, Ready, Target};
use crate::config::BatchConfig;
use crate::device::health::Health;
use crate::device::mapped::HostPool;
use crate::device::poll::{notice_adopted_loss, poll_wait};
use crate::device::reply::Responder;
use crate::error::{Error, Result, scoped};
use crate::job::JobOutput;
use crate::kernel::pipelines::{Pipeline, PipelineCache};
use crate::memory::host::{Readback, Returned, Staged};
use crate::memory::pool::{BufferPool, Purpose};
use crate::observe::trace::BatchSpan;

/// How long one poll waits before checking for a loss again.
const POLL_SLICE: Duration = Duration::from_millis(50);
/// Most jobs a timed batch may hold: two timestamp queries each, within wgpu's 4096.
pub(crate) const MAX_TIMED_JOBS: usize = 2048;

/// A batch encoded and ready to submit.
pub(crate) struct Prepared {
    batch: Batch,
    cmd: wgpu::CommandBuffer,
    buffers: Buffers,
    began: Instant,
}

impl Submitter {
    /// The number the next batch submitted will have (batches submitted so far: only this
    /// submitter counts them, under its lock).
    pub(crate) fn batches_launched(&self) -> u64 {
        self.health.stats.batches()
    }
}

impl Prepared {
    /// The compute dispatches its command buffer records (for the batch's span).
    pub(crate) fn dispatches(&self) -> usize {
        self.batch.dispatches().0
    }
}

/// A batch submitted by the device's batch loop (`device/driver.rs`), with its jobs'
/// responders: whoever holds this lock next may complete it.
pub(crate) struct Flight {
    pub(crate) batch: InFlight,
    pub(crate) responders: Vec<Responder>,
    pub(crate) span: BatchSpan,
    /// When it was submitted (the executor completes a batch nobody waits on after a while).
    pub(crate) launched: Instant,
    /// It is one job that was running at a loss: nothing else is launched until it completes.
    pub(crate) alone: bool,
}

/// See the module docs.
pub(crate) struct Submitter {
    /// The batch loop's batches in flight, oldest first (the idle fast path's batch of one
    /// is never among them: it completes before the lock is released).
    pub(crate) flight: VecDeque<Flight>,
    device: wgpu::Device,
    queue: wgpu::Queue,
    health: Arc<Health>,
    pipelines: Arc<PipelineCache>,
    pool: BufferPool,
    /// The pools' drop counts when `groups` was last checked: kept bind groups must not keep
    /// dropped buffers alive.
    drops: (u64, u64),
    groups: BindGroups,
    /// The device's mapped host buffers (shared with submitting threads, which take from it).
    host: Arc<HostPool>,
    /// Read-back buffers (a batch's readback, a direct job's own set) come back here once
    /// every reply is done with them.
    readbacks: (flume::Sender<Returned>, flume::Receiver<Returned>),
    /// Two timestamp queries per job of a batch, where the device supports them in passes.
    queries: Option<wgpu::QuerySet>,
    /// Nanoseconds per timestamp tick.
    period_ns: f32,
    /// When the previous batch completed: where the next one's device time starts at the latest.
    last_done: Option<Instant>,
    /// Offset alignment of every binding in a batch: the stricter of uniform and storage.
    align: u64,
    /// Batches submitted and not finished.
    in_flight: usize,
    /// The device is shared with an application: poll without waiting (see [`poll_wait`]).
    shared: bool,
}

impl Submitter {
    pub(crate) fn new(
        device: wgpu::Device,
        queue: wgpu::Queue,
        health: Arc<Health>,
        pipelines: Arc<PipelineCache>,
        host: Arc<HostPool>,
        cfg: &BatchConfig,
        shared: bool,
    ) -> Submitter {
        let limits = device.limits();
        Submitter {
            flight: VecDeque::new(),
            pool: BufferPool::new(limits.max_buffer_size, cfg.pool_budget / 2),
            drops: (0, 0),
            groups: BindGroups::default(),
            readbacks: flume::unbounded(),
            queries: cfg
                .gpu_timing
                .then(|| timestamp_queries(&device, cfg.max_jobs))
                .flatten(),
            period_ns: queue.get_timestamp_period(),
            last_done: None,
            align: binding_alignment(&limits),
            in_flight: 0,
            shared,
            device,
            queue,
            health,
            pipelines,
            host,
        }
    }

    /// The pipelines of `job`'s steps: with dynamic offsets where the device allows them and
    /// `dynamic` is set.
    pub(crate) fn pipelines_for(
        &self,
        job: &crate::job::Job,
        dynamic: bool,
    ) -> Result<Vec<Pipeline>> {
        pipelines_for(&self.pipelines, job, dynamic)
    }

    /// `kernel`'s fused pipeline on this device, if it has one.
    pub(crate) fn fused_pipeline(
        &self,
        kernel: &crate::kernel::compile::Kernel,
    ) -> Option<Pipeline> {
        self.pipelines.fused(kernel)
    }

    /// Plans and encodes `jobs` as one batch; on a wgpu error gives them back.
    pub(crate) fn prepare(&mut self, jobs: Vec<Ready>) -> Result<Prepared, (Error, Vec<Ready>)> {
        let began = Instant::now();
        let timed = self.queries.is_some() && jobs.len() <= MAX_TIMED_JOBS;
        let max_binding = self.device.limits().max_storage_buffer_binding_size;
        let mut batch = Batch::plan(jobs, self.align, timed, max_binding);
        if let Err(e) = self.write_batch(&mut batch) {
            return Err((e, batch.jobs));
        }
        if batch.needs_plain_bindings() {
            for r in &mut batch.jobs {
                match pipelines_for(&self.pipelines, &r.job, false) {
                    Ok(p) => r.pipelines = p,
                    Err(e) => return Err((e, batch.jobs)),
                }
            }
        }
        let buffers = self.take_buffers(&batch.plan);
        let target = Target {
            device: &self.device,
            index: self.health.index,
            queries: self.queries.as_ref().filter(|_| timed),
        };
        let (cmd, caught) = scoped(&self.device, || {
            batch.encode(&target, &buffers, &mut self.groups)
        });
        self.groups.end_batch();
        match caught {
            None => Ok(Prepared {
                batch,
                cmd,
                buffers,
                began,
            }),
            Some(e) => {
                self.give_buffers(buffers);
                Err((e.into(), batch.jobs))
            }
        }
    }

    /// Ends the jobs' loans against the host pool (their data is in the batch now) and
    /// writes the data of the jobs nobody wrote yet (small ones, or any when the lend budget
    /// was full) into one upload buffer laid out like the batch.
    fn write_batch(&self, batch: &mut Batch) -> Result<()> {
        for r in &mut batch.jobs {
            r.lent = None;
        }
        let plan = &batch.plan;
        let mut parts = Vec::new();
        for (j, r) in batch.jobs.iter().enumerate() {
            if r.staged.is_some() || batch.member[j].is_some() {
                continue; // written by its caller, or with its fused group
            }
            let rw_at = plan.read_size + plan.inout_base[j];
            for (at, bytes) in r.layout.uploads(&r.job) {
                parts.push(match at.checked_sub(r.layout.read_len) {
                    None => (plan.read_base[j] + at, bytes),
                    Some(inout) => (rw_at + inout, bytes),
                });
            }
        }
        let (grouped, zeroes) = batch.group_uploads();
        parts.extend(grouped);
        let len = plan.read_size + plan.rw_upload_end;
        if parts.is_empty() || len == 0 {
            return Ok(());
        }
        let buffer = self
            .host
            .write_batch(len, &parts, &zeroes)
            .map_err(|e| Error::Wgpu(format!("could not write a batch's data: {e}")))?;
        drop(parts);
        batch.upload = Some(buffer);
        Ok(())
    }

    /// Gives back a prepared batch that will not be submitted (the device was closed).
    pub(crate) fn discard(&mut self, p: Prepared) -> Vec<Ready> {
        self.give_buffers(p.buffers);
        p.batch.jobs
    }

    /// Submits a prepared batch; on a wgpu error gives its jobs back.
    pub(crate) fn submit(&mut self, p: Prepared) -> Result<InFlight, (Error, Vec<Ready>)> {
        if self.in_flight == 0 {
            self.health.note_progress(); // busy from here: the watchdog counts from now
        }
        let Prepared {
            batch,
            cmd,
            buffers,
            began,
        } = p;
        let (index, caught) = scoped(&self.device, || self.queue.submit([cmd]));
        if let Some(e) = caught {
            if self.in_flight == 0 {
                self.health.note_idle();
            }
            self.give_buffers(buffers);
            return Err((e.into(), batch.jobs));
        }
        self.in_flight += 1;
        let (dispatches, fused) = batch.dispatches();
        self.health
            .stats
            .record_batch(batch.jobs.len(), dispatches, fused);
        Ok(batch.in_flight(&self.queue, index, buffers, began))
    }

    /// Polls until `batch` has completed or `until` passes; true when it completed (or
    /// failed: [`Submitter::wait`] then says why).
    pub(crate) fn poll_until(&self, batch: &InFlight, until: Instant) -> bool {
        if !batch.done.is_empty() {
            return true;
        }
        let timeout = until.saturating_duration_since(Instant::now());
        let done = || !batch.done.is_empty();
        match poll_wait(&self.device, Some(&batch.index), timeout, self.shared, done) {
            Err(wgpu::PollError::Timeout) => done(),
            _ => true,
        }
    }

    /// Polls the device, in slices, until the batch's completion callback has run or the
    /// device is lost.
    pub(crate) fn wait(&self, batch: &InFlight) -> std::result::Result<(), String> {
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
            let done = || !batch.done.is_empty();
            match poll_wait(
                &self.device,
                Some(&batch.index),
                POLL_SLICE,
                self.shared,
                done,
            ) {
                Ok(()) => settled = true,
                Err(wgpu::PollError::Timeout) => {}
                Err(e) => return Err(format!("poll failed: {e}")),
            }
        }
    }

    /// The batch runner's first half, shared by the batch loop and the idle fast path: plans,
    /// encodes and submits `ready` as one batch, recording it in `span`. `register` runs
    /// between encoding and submitting (the batch loop puts the batch's tickets on the board
    /// there, so the watchdog can fail them even if the submit never returns); when it says
    /// no (the device was closed) the batch is dropped unsubmitted and `Ok(None)` comes back.
    /// On a wgpu error the jobs come back.
    #[allow(clippy::type_complexity)] // the jobs come back as they went
    pub(crate) fn launch(
        &mut self,
        ready: Vec<Ready>,
        span: &BatchSpan,
        register: impl FnOnce() -> bool,
    ) -> Result<Option<InFlight>, (Error, Vec<Ready>)> {
        let prepared = self
            .prepare(ready)
            .inspect_err(|(e, _)| span.completed(Some(e)))?;
        span.encoded(|| prepared.dispatches());
        if !register() {
            drop(self.discard(prepared));
            return Ok(None);
        }
        let batch = self
            .submit(prepared)
            .inspect_err(|(e, _)| span.completed(Some(e)))?;
        span.submitted();
        Ok(Some(batch))
    }

    /// The batch runner's second half: waits for `batch` and gives one reply per job, in job
    /// order (the caller sends them, outside this lock).
    pub(crate) fn complete(&mut self, batch: InFlight, span: &BatchSpan) -> Vec<Result<JobOutput>> {
        let result = self.wait(&batch);
        let replies = self.finish(batch, result);
        span.finished(&replies);
        replies
    }

    /// Turns a completed (or failed) batch into one reply per job, in job order, and
    /// recycles its buffers.
    pub(crate) fn finish(
        &mut self,
        batch: InFlight,
        result: std::result::Result<(), String>,
    ) -> Vec<Result<JobOutput>> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.health.note_idle();
        } else {
            self.health.note_progress();
        }
        let readback = match result {
            Ok(()) => {
                let now = Instant::now();
                let start = self
                    .last_done
                    .map_or(batch.encoding_began, |t| t.max(batch.encoding_began));
                self.health
                    .stats
                    .record_busy(now - start, batch.batch.jobs.len());
                self.last_done = Some(now);
                self.mapped_readback(&batch)
            }
            Err(reason) => Err(self.failure(&Error::Wgpu(reason))),
        };
        let failed = readback.is_err();
        let back = self.readbacks.0.clone();
        let (replies, Leftovers { host, buffers }) =
            batch.finish(readback, &back, self.health.index, self.period_ns);
        for b in host {
            self.host.recycle(b);
        }
        if failed {
            drop(buffers); // the device is likely gone: pool nothing
        } else {
            self.give_buffers(buffers);
        }
        for t in replies.iter().flatten().filter_map(|f| f.gpu_time) {
            self.health.stats.record_gpu_time(t);
        }
        // A job's own readback can fail on its own (a device destroyed under it): classify
        // like any failure, once per batch.
        let mut lost: Option<Error> = None;
        replies
            .into_iter()
            .map(|r| match r {
                Err(e @ Error::Wgpu(_)) => {
                    Err(lost.get_or_insert_with(|| self.failure(&e)).clone())
                }
                other => other,
            })
            .collect()
    }

    /// The batch's mapped readback, shared by its replies.
    fn mapped_readback(&self, batch: &InFlight) -> Result<Option<Arc<Readback>>> {
        let Some(buffer) = batch.buffers.readback.clone() else {
            return Ok(None);
        };
        Readback::new(Returned::Readback(buffer), self.readbacks.0.clone())
            .map(|r| Some(Arc::new(r)))
            .map_err(|e| self.failure(&Error::Wgpu(e)))
    }

    /// The error to give a job that failed with `e`: device loss trumps what wgpu said.
    pub(crate) fn failure(&self, e: &Error) -> Error {
        // An adopted device's lost callback is the application's: ask the device itself.
        if self.shared {
            notice_adopted_loss(&self.device, &self.health);
        }
        // A lost device reports it through its callback, which wgpu runs inside poll once the
        // device's queue is idle: wait for that, boundedly (this is the error path only).
        for _ in 0..20 {
            if !self.health.usable() {
                break;
            }
            if poll_wait(&self.device, None, POLL_SLICE, self.shared, || false).is_ok() {
                break;
            }
        }
        match self.health.lost_reason() {
            Some(_) => self.health.drop_error(),
            None => e.clone(),
        }
    }

    /// The batch's buffers from the pool, after filing the read-back buffers that came back.
    fn take_buffers(&mut self, plan: &Plan) -> Buffers {
        while let Ok(r) = self.readbacks.1.try_recv() {
            match r {
                Returned::Readback(b) => {
                    b.unmap();
                    self.pool.give(Purpose::Readback, b);
                }
                Returned::Own(set) => {
                    if let Staged::Direct { rw: Some(rw), .. } = &set {
                        rw.unmap();
                    }
                    self.host.recycle(set); // mapped for writing again
                }
            }
        }
        let (device, pool) = (&self.device, &mut self.pool);
        let mut take = |role, size: u64| (size > 0).then(|| pool.take(device, role, size));
        let buffers = Buffers {
            read: take(Purpose::Read, plan.read_size),
            rw: take(Purpose::ReadWrite, plan.rw_size),
            readback: take(Purpose::Readback, plan.readback_size),
            resolve: plan
                .timestamps
                .and_then(|_| take(Purpose::Resolve, 16 * plan.read_base.len() as u64)),
            scratch: plan
                .scratch
                .iter()
                .filter_map(|&size| take(Purpose::Scratch, size))
                .collect(),
        };
        self.sync_groups();
        buffers
    }

    fn give_buffers(&mut self, buffers: Buffers) {
        let pooled = [
            (Purpose::Read, buffers.read),
            (Purpose::ReadWrite, buffers.rw),
            (Purpose::Readback, buffers.readback),
            (Purpose::Resolve, buffers.resolve),
        ];
        let scratch = buffers
            .scratch
            .into_iter()
            .map(|b| (Purpose::Scratch, Some(b)));
        for (role, buffer) in pooled.into_iter().chain(scratch) {
            if let Some(b) = buffer {
                self.pool.give(role, b);
            }
        }
        self.sync_groups();
        self.record_pool_bytes();
    }

    /// Forgets the kept bind groups once a pool has dropped buffers they may point into.
    fn sync_groups(&mut self) {
        let drops = (self.pool.drops(), self.host.drops());
        if drops != self.drops {
            self.drops = drops;
            self.groups.clear();
        }
    }

    /// Drops every free buffer (the device has been idle).
    pub(crate) fn trim(&mut self) {
        while let Ok(r) = self.readbacks.1.try_recv() {
            drop(r);
        }
        self.pool.trim();
        self.host.trim();
        self.sync_groups();
        self.record_pool_bytes();
    }

    fn record_pool_bytes(&self) {
        let bytes = self.pool.free_bytes() + self.host.free_bytes();
        self.health.stats.set_pool_bytes(bytes);
    }
}

/// The pipelines of `job`'s steps from `cache`: with dynamic offsets where the device allows
/// them and `dynamic` is set.
pub(crate) fn pipelines_for(
    cache: &PipelineCache,
    job: &crate::job::Job,
    dynamic: bool,
) -> Result<Vec<Pipeline>> {
    job.steps
        .iter()
        .map(|s| cache.get(&s.kernel, dynamic && cache.dynamic_for(&s.kernel)))
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
    let needed = crate::config::TIMING_FEATURES;
    let count = u32::try_from(2 * max_jobs.min(MAX_TIMED_JOBS)).ok()?;
    device.features().contains(needed).then(|| {
        device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("wgpu-batch timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        })
    })
}
