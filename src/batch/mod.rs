//! A batch: many jobs, one command buffer, one `queue.submit`. This module owns its life:
//!
//! 1. **planned** ([`Batch::plan`]): the jobs, each already laid out and uploaded by the thread
//!    that submitted it (`batch/layout.rs`, `device/mapped.rs`), the fused groups that jobs of the same
//!    fusable kernels form (`batch/group.rs`: their data shares regions, laid out contiguously), and
//!    the plan that places the jobs' blocks and the groups' regions, tables and scratch;
//! 2. **encoded** ([`Batch::encode`]): one command buffer that copies each job's upload into
//!    place, clears the outputs and scratch, runs one compute pass with one dispatch per step
//!    of each fused group (its kernels rewritten by `kernel/fusion.rs`) and one per step of every
//!    other job, and copies the read-write buffer into the readback buffer;
//! 3. **in flight** ([`InFlight`]): submitted, waiting for its readback to be mapped;
//! 4. **finished** ([`InFlight::finish`]): one reply per job, each holding the shared mapped
//!    readback, from which the thread that takes the result copies its own bytes.
//!
//! # Why jobs cannot see each other's data
//! Each binding of a job that runs alone is bound at its exact range, and the device bounds
//! accesses to it (naga's checks, or the hardware's; `device/probe.rs` measures which: the GL
//! backend has none, and there an out-of-bounds access can reach past the binding). A fused
//! job's bindings cover its whole group, but the rewritten kernel keeps every access inside
//! the job's own elements (`kernel/fusion.rs`), and a group's regions hold only its members' data
//! and its zero and trash elements. Every byte a job can read was copied from an upload of
//! this batch or cleared in this command buffer before the pass, so nothing of an earlier
//! batch that used the pooled buffer is visible. A shared bind group is keyed by the buffers
//! it points into, not only by the kernel and sizes. A pooled buffer goes back to the pool
//! only after the batch that used it completed.
//!
//! Steps of a job are consecutive dispatches in the one compute pass; wgpu puts a barrier
//! between dispatches that share a written buffer, so each step sees the previous one's writes.
//!
//! With timestamp queries, a timestamp is written before each job's first dispatch and after
//! its last (a fused group's dispatches in its first member's query pair, each member then
//! getting an equal share), resolved into a pooled buffer and copied to the end of the
//! readback buffer.

pub(crate) mod group;
pub(crate) mod layout;
pub(crate) mod plan;

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::group::{Group, Placed, Seat};
use crate::batch::layout::{Class, Layout, Region};
use crate::batch::plan::Plan;
use crate::error::Error;
use crate::job::{ArgData, Job, JobOutput};
use crate::kernel::fusion::TABLE_WORDS;
use crate::kernel::pipelines::Pipeline;
use crate::memory::host::Loan;
use crate::memory::host::{Readback, Returned, Staged};

/// A job ready to batch: laid out, its uploads written, its pipelines at hand.
pub(crate) struct Ready {
    pub(crate) job: Job,
    pub(crate) layout: Layout,
    /// The job's data in host buffers (`device/mapped.rs`), written by the submitting thread, or by
    /// the submitter when the lend budget was full then; `None` until written, and for a job
    /// with no data to hold.
    pub(crate) staged: Option<Staged>,
    /// `staged`'s loan against the host pool's budget (given back as the batch forms).
    pub(crate) lent: Option<Loan>,
    /// One per step.
    pub(crate) pipelines: Vec<Pipeline>,
    /// Per step, its kernel's fused pipeline, when the job may join a fused group (see
    /// `batch/group.rs`).
    pub(crate) fused: Option<Vec<Pipeline>>,
}

/// Bytes to write at an offset of a batch's upload buffer.
pub(crate) type Part<'a> = (u64, &'a [u8]);

/// The pooled buffers of one batch; a role with nothing in it has no buffer.
#[derive(Default)]
pub(crate) struct Buffers {
    pub(crate) read: Option<wgpu::Buffer>,
    pub(crate) rw: Option<wgpu::Buffer>,
    pub(crate) readback: Option<wgpu::Buffer>,
    pub(crate) scratch: Vec<wgpu::Buffer>,
    /// Where the timestamp queries are resolved, if measured.
    pub(crate) resolve: Option<wgpu::Buffer>,
}

/// What encoding needs from the device besides the batch.
pub(crate) struct Target<'a> {
    pub(crate) device: &'a wgpu::Device,
    /// The engine's index of this device: which copy of a resident buffer to bind.
    pub(crate) index: usize,
    /// Two queries per job, when the batch is timed.
    pub(crate) queries: Option<&'a wgpu::QuerySet>,
}

/// A planned batch.
pub(crate) struct Batch {
    pub(crate) jobs: Vec<Ready>,
    pub(crate) plan: Plan,
    /// The data of the jobs nobody wrote before the batch formed, laid out like the batch:
    /// the read buffer's bytes, then the read-write buffer's uploaded prefix.
    pub(crate) upload: Option<wgpu::Buffer>,
    /// Fused groups: each runs as one dispatch per step of its kernels' fused pipelines.
    pub(crate) groups: Vec<(Group, Vec<Placed>, Vec<Pipeline>)>,
    /// Per job: its group and its place in it, if it is in one.
    pub(crate) member: Vec<Option<(usize, usize)>>,
}

impl Batch {
    /// Plans `jobs` with every block at a multiple of `align`, with room for timestamps when
    /// `timed`. A job whose data is in its own buffers (direct) takes no room in the batch's;
    /// jobs that fuse (see `batch/group.rs`, regions of at most `max_binding` bytes) share regions.
    pub(crate) fn plan(jobs: Vec<Ready>, align: u64, timed: bool, max_binding: u64) -> Batch {
        let layouts: Vec<&Layout> = jobs.iter().map(|r| &r.layout).collect();
        let candidates = jobs.iter().enumerate().map(|(j, r)| {
            let fused = (r.fused.is_some() && r.staged.is_none())
                .then(|| {
                    let steps = r.job.steps.iter();
                    steps
                        .map(|s| s.kernel.inner().fused.as_deref().ok())
                        .collect::<Option<Vec<_>>>()
                })
                .flatten();
            (j, &r.job, &r.layout, fused)
        });
        // A group has two jobs at least: a lone job (the idle fast path's) forms none.
        let formed = if jobs.len() < 2 {
            Vec::new()
        } else {
            group::form(candidates, max_binding, align)
        };
        let mut member = vec![None; jobs.len()];
        for (g, group) in formed.iter().enumerate() {
            for (k, &j) in group.jobs.iter().enumerate() {
                member[j] = Some((g, k));
            }
        }
        let own: Vec<Option<bool>> = jobs
            .iter()
            .zip(&member)
            .map(|(r, m)| match (&r.staged, m) {
                (_, Some(_)) => Some(false),
                (Some(Staged::Direct { .. }), None) => Some(true),
                _ => None,
            })
            .collect();
        let needs: Vec<_> = formed.iter().map(Group::needs).collect();
        let plan = Plan::new(&layouts, &own, &needs, align, timed);
        // Every member has its pipelines (they were asked for), the first's serve the group.
        let groups = (formed.into_iter().zip(&plan.group_at))
            .map(|(g, at)| {
                let pipelines = jobs[g.jobs[0]].fused.clone().unwrap_or_default();
                let placed = g.place(at);
                (g, placed, pipelines)
            })
            .collect();
        Batch {
            jobs,
            plan,
            upload: None,
            groups,
            member,
        }
    }

    /// The fused groups' data for the batch's upload buffer: (offset in it, bytes) for each
    /// member's read-only and inout arguments at their places in the group's regions and for
    /// each group's job table, and (offset, size) of what must be zero around them (padding
    /// after a per-job element, the zero and trash elements). (The read buffer's bytes come
    /// first in the upload, then the read-write buffer's.)
    pub(crate) fn group_uploads(&self) -> (Vec<Part<'_>>, Vec<(u64, u64)>) {
        let (mut parts, mut zeroes) = (Vec::new(), Vec::new());
        for (g, placed, _) in &self.groups {
            for (s, step) in placed.iter().enumerate() {
                for (b, &(binding, role, region, size)) in step.regions.iter().enumerate() {
                    let base = match role {
                        Seat::Own(Class::Read) => 0,
                        Seat::Own(Class::InOut) => self.plan.read_size,
                        Seat::Own(Class::Output) | Seat::Scratch(_) => continue, // zeroed on the device
                    };
                    let offset = region.offset();
                    let mut end = offset; // where the members' data has reached
                    for (k, &j) in g.jobs.iter().enumerate() {
                        let (at, _) = step.jobs[k][b];
                        if at > end {
                            zeroes.push((base + end, at - end));
                        }
                        let args = &self.jobs[j].job.steps[s].args;
                        let bytes = args.iter().find(|a| a.binding == binding);
                        let bytes = bytes.and_then(|a| a.data.bytes()).unwrap_or_default();
                        parts.push((base + at, bytes));
                        end = at + bytes.len() as u64;
                    }
                    zeroes.push((base + end, offset + size - end));
                }
                let words: &[u8] = bytemuck::cast_slice(&step.table.1);
                parts.push((step.table.0, words));
            }
        }
        (parts, zeroes)
    }

    /// The compute dispatches the batch records, and how many of its jobs are fused.
    pub(crate) fn dispatches(&self) -> (usize, usize) {
        let alone: usize = (self.jobs.iter().zip(&self.member))
            .filter(|(_, m)| m.is_none())
            .map(|(r, _)| r.job.steps.len())
            .sum();
        let fused = self.member.iter().filter(|m| m.is_some()).count();
        let grouped: usize = self.groups.iter().map(|g| g.1.len()).sum();
        (alone + grouped, fused)
    }

    /// Whether some binding lies past a dynamic offset's `u32` reach (only a lone job can:
    /// batches of several are capped at 4 GiB per buffer); it must then be bound plainly.
    pub(crate) fn needs_plain_bindings(&self) -> bool {
        let layouts: Vec<&Layout> = self.jobs.iter().map(|r| &r.layout).collect();
        self.plan.max_offset(&layouts) > u64::from(u32::MAX)
    }

    /// Records the whole batch into one command buffer (see the module docs).
    pub(crate) fn encode(
        &self,
        t: &Target<'_>,
        bufs: &Buffers,
        groups: &mut BindGroups,
    ) -> wgpu::CommandBuffer {
        let mut enc = t
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgpu-batch"),
            });
        self.copy_uploads(&mut enc, bufs);
        let p = &self.plan;
        if let Some(rw) = &bufs.rw
            && p.rw_size > p.rw_upload_end
        {
            enc.clear_buffer(rw, p.rw_upload_end, Some(p.rw_size - p.rw_upload_end));
        }
        for (buffer, size) in bufs.scratch.iter().zip(&p.scratch) {
            enc.clear_buffer(buffer, 0, Some(*size));
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            // Timed batches hold at most 2,048 jobs: `2 * j + 1` fits the query set's u32.
            // A group's dispatches are timed in its first job's query pair.
            for (g, placed, pipelines) in &self.groups {
                let j = g.jobs[0] as u32;
                if let Some(q) = t.queries {
                    pass.write_timestamp(q, 2 * j);
                }
                for ((step, placed), pipeline) in g.steps.iter().zip(placed).zip(pipelines) {
                    let table = step.table_binding;
                    Self::dispatch_step(t, bufs, groups, &mut pass, table, placed, pipeline);
                }
                if let Some(q) = t.queries {
                    pass.write_timestamp(q, 2 * j + 1);
                }
            }
            for (j, ready) in self.jobs.iter().enumerate() {
                if self.member[j].is_some() {
                    continue;
                }
                if let Some(q) = t.queries {
                    pass.write_timestamp(q, 2 * j as u32);
                }
                for (s, step) in ready.job.steps.iter().enumerate() {
                    let bound = self.bound(t, bufs, j, s);
                    pass.set_pipeline(&ready.pipelines[s].pipeline);
                    groups.bind(t.device, &mut pass, &ready.pipelines[s], &bound);
                    let [x, y, z] = step.workgroups;
                    pass.dispatch_workgroups(x, y, z);
                }
                if let Some(q) = t.queries {
                    pass.write_timestamp(q, 2 * j as u32 + 1);
                }
            }
        }
        let jobs = self.jobs.len() as u64;
        if let (Some(q), Some(resolve)) = (t.queries, &bufs.resolve) {
            enc.resolve_query_set(q, 0..2 * jobs as u32, resolve, 0);
        }
        if let Some(readback) = &bufs.readback {
            if let Some(rw) = &bufs.rw {
                enc.copy_buffer_to_buffer(rw, 0, readback, 0, p.rw_size);
            }
            if let (Some(at), Some(resolve)) = (p.timestamps, &bufs.resolve) {
                enc.copy_buffer_to_buffer(resolve, 0, readback, at, 16 * jobs);
            }
        }
        enc.finish()
    }

    /// Records one step of a fused group: each binding bound at its region, the job table
    /// (binding `table`).
    fn dispatch_step(
        t: &Target<'_>,
        bufs: &Buffers,
        groups: &mut BindGroups,
        pass: &mut wgpu::ComputePass<'_>,
        table: u32,
        placed: &Placed,
        pipeline: &Pipeline,
    ) {
        let (Some(read), rw) = (bufs.read.as_ref(), bufs.rw.as_ref()) else {
            return; // a group always has a table in the read buffer
        };
        let mut bound: Vec<Bound<'_>> = placed
            .regions
            .iter()
            .filter_map(|&(binding, _, region, size)| {
                let buffer = match region {
                    Region::Read(_) => Some(read),
                    Region::ReadWrite(_) => rw,
                    Region::Scratch(i) => bufs.scratch.get(i),
                    _ => None,
                }?;
                Some(Bound {
                    binding,
                    buffer: Cow::Borrowed(buffer),
                    offset: region.offset(),
                    size,
                    pooled: true,
                })
            })
            .collect();
        bound.push(Bound {
            binding: table,
            buffer: Cow::Borrowed(read),
            offset: placed.table.0,
            size: 4 * u64::from(TABLE_WORDS), // the whole uniform array
            pooled: true,
        });
        bound.sort_by_key(|b| b.binding);
        pass.set_pipeline(&pipeline.pipeline);
        groups.bind(t.device, pass, pipeline, &bound);
        let [x, y, z] = placed.dispatch;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Copies the batch's own upload into place (two copies, whole ranges), then each job's
    /// own upload (read block, then inout block) over its blocks.
    fn copy_uploads(&self, enc: &mut wgpu::CommandEncoder, bufs: &Buffers) {
        let p = &self.plan;
        if let Some(upload) = &self.upload {
            if let (Some(read), true) = (&bufs.read, p.read_size > 0) {
                enc.copy_buffer_to_buffer(upload, 0, read, 0, p.read_size);
            }
            if let (Some(rw), true) = (&bufs.rw, p.rw_upload_end > 0) {
                enc.copy_buffer_to_buffer(upload, p.read_size, rw, 0, p.rw_upload_end);
            }
        }
        for (j, ready) in self.jobs.iter().enumerate() {
            let (Some(Staged::Upload(upload)), l) = (&ready.staged, &ready.layout) else {
                continue;
            };
            if let (Some(read), true) = (&bufs.read, l.read_len > 0) {
                enc.copy_buffer_to_buffer(upload, 0, read, self.plan.read_base[j], l.read_len);
            }
            if let (Some(rw), true) = (&bufs.rw, l.inout_len > 0) {
                let at = self.plan.inout_base[j];
                enc.copy_buffer_to_buffer(upload, l.read_len, rw, at, l.inout_len);
            }
        }
    }

    /// Step `s` of job `j`'s bindings, resolved to buffers and ranges, in binding order.
    fn bound<'a>(
        &'a self,
        t: &Target<'_>,
        bufs: &'a Buffers,
        j: usize,
        s: usize,
    ) -> Vec<Bound<'a>> {
        let ready = &self.jobs[j];
        let args = ready.job.steps[s].args.iter();
        let mut bound: Vec<Bound<'_>> = args
            .zip(&ready.layout.steps[s])
            .filter_map(|(arg, p)| {
                let region = self.plan.region(j, p.spot);
                let own = match &ready.staged {
                    Some(Staged::Direct { read, rw }) => (read.as_ref(), rw.as_ref()),
                    _ => (None, None),
                };
                let buffer = match region {
                    Region::Read(_) => bufs.read.as_ref().map(Cow::Borrowed),
                    Region::ReadWrite(_) => bufs.rw.as_ref().map(Cow::Borrowed),
                    Region::OwnRead(_) => own.0.map(Cow::Borrowed),
                    Region::OwnReadWrite(_) => own.1.map(Cow::Borrowed),
                    Region::Scratch(i) => bufs.scratch.get(i).map(Cow::Borrowed),
                    Region::Resident => match &arg.data {
                        ArgData::Resident(b) => b.copy_on(t.index).map(Cow::Owned),
                        _ => None,
                    },
                }?;
                Some(Bound {
                    binding: p.binding,
                    buffer,
                    offset: region.offset(),
                    size: p.size,
                    pooled: region != Region::Resident,
                })
            })
            .collect();
        bound.sort_by_key(|b| b.binding);
        bound
    }

    /// The batch once submitted as `index`: in flight, its completion watched (its readback
    /// and its direct jobs' own read-write buffers mapped for reading).
    pub(crate) fn in_flight(
        self,
        queue: &wgpu::Queue,
        index: wgpu::SubmissionIndex,
        buffers: Buffers,
        encoding_began: Instant,
    ) -> InFlight {
        let own = self.jobs.iter().filter_map(|r| match &r.staged {
            Some(Staged::Direct { rw: Some(rw), .. }) => Some(rw),
            _ => None,
        });
        let to_map: Vec<&wgpu::Buffer> = buffers.readback.iter().chain(own).collect();
        let done = watch(queue, &to_map);
        InFlight {
            index,
            batch: self,
            buffers,
            done,
            encoding_began,
        }
    }
}

/// A channel that fires once every buffer of `to_map` is mapped for reading (or the first
/// mapping failed), or once the work is done when there is nothing to map.
fn watch(queue: &wgpu::Queue, to_map: &[&wgpu::Buffer]) -> flume::Receiver<Result<(), String>> {
    let (tx, done) = flume::bounded(1);
    if to_map.is_empty() {
        queue.on_submitted_work_done(move || {
            let _ = tx.send(Ok(()));
        });
        return done;
    }
    if let [buffer] = to_map {
        // One buffer (the common case): its mapping is the batch's completion.
        buffer.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.try_send(r.map_err(|e| e.to_string()));
        });
        return done;
    }
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(to_map.len()));
    for buffer in to_map {
        let (tx, left) = (tx.clone(), left.clone());
        buffer.map_async(wgpu::MapMode::Read, .., move |r| match r {
            Err(e) => {
                let _ = tx.try_send(Err(e.to_string()));
            }
            Ok(()) if left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 => {
                let _ = tx.try_send(Ok(()));
            }
            Ok(()) => {}
        });
    }
    done
}

/// One binding of one step, resolved to the buffer and range it binds.
pub(crate) struct Bound<'a> {
    binding: u32,
    /// Borrowed from the batch, or a resident buffer's handle (cloned: a reopened device may
    /// replace its copy meanwhile).
    buffer: Cow<'a, wgpu::Buffer>,
    offset: u64,
    size: u64,
    /// In a pooled buffer (not a resident one, which a cached bind group would keep alive).
    pooled: bool,
}

/// A shared bind group's identity: the kernel, and per binding (in binding order) the buffer
/// bound and the size of the range. The offsets are dynamic, so they are not part of it; the
/// buffers are: two steps that bind a binding in different buffers (the read buffer or the
/// read-write buffer, different scratch buffers) must never share a bind group. (`wgpu::Buffer`
/// hashes by its id, which never changes, whatever clippy's interior-mutability lint infers.)
type BindKey = (u64, Vec<(wgpu::Buffer, u64)>);

/// Bind groups shared through dynamic offsets: kept across batches for bindings that all lie
/// in pooled buffers (the same few buffers come back from the pool, so a steady load creates
/// none), per batch for steps that bind a resident buffer.
#[derive(Default)]
pub(crate) struct BindGroups {
    kept: HashMap<BindKey, wgpu::BindGroup>,
    this_batch: HashMap<BindKey, wgpu::BindGroup>,
}

/// Most bind groups kept across batches before the cache starts over.
const KEEP_BIND_GROUPS: usize = 1024;

impl BindGroups {
    /// Sets step `bound`'s bind group on `pass`: shared when the pipeline takes dynamic
    /// offsets, else its own.
    #[allow(clippy::mutable_key_type)] // BindKey hashes buffer ids, which are immutable
    fn bind(
        &mut self,
        device: &wgpu::Device,
        pass: &mut wgpu::ComputePass<'_>,
        pipeline: &Pipeline,
        bound: &[Bound<'_>],
    ) {
        let Some(layout) = &pipeline.layout else {
            return;
        };
        if !pipeline.dynamic {
            return pass.set_bind_group(0, &bind_group(device, layout, bound, true), &[]);
        }
        let key = (
            pipeline.kernel,
            bound
                .iter()
                .map(|b| (b.buffer.as_ref().clone(), b.size))
                .collect(),
        );
        let map = if bound.iter().all(|b| b.pooled) {
            &mut self.kept
        } else {
            &mut self.this_batch
        };
        let group = map
            .entry(key)
            .or_insert_with(|| bind_group(device, layout, bound, false));
        // The executor binds plainly any batch with an offset past `u32`; an offset that did
        // not fit would fail validation here (never alias another range).
        let offsets: Vec<u32> = bound
            .iter()
            .map(|b| u32::try_from(b.offset).unwrap_or(u32::MAX))
            .collect();
        pass.set_bind_group(0, &*group, &offsets);
    }

    /// Ends a batch: drops its own bind groups, and starts the kept ones over when they grew
    /// past their bound.
    pub(crate) fn end_batch(&mut self) {
        self.this_batch.clear();
        if self.kept.len() > KEEP_BIND_GROUPS {
            self.kept.clear();
        }
    }

    /// Forgets every kept bind group (the pool dropped buffers they point into).
    pub(crate) fn clear(&mut self) {
        self.kept.clear();
        self.this_batch.clear();
    }
}

/// A bind group for one step's bindings: at their offsets (`at_offsets`), or at offset zero
/// for a layout whose offsets are dynamic.
fn bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    bound: &[Bound<'_>],
    at_offsets: bool,
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = bound
        .iter()
        .map(|b| wgpu::BindGroupEntry {
            binding: b.binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &b.buffer,
                offset: if at_offsets { b.offset } else { 0 },
                size: NonZeroU64::new(b.size),
            }),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout,
        entries: &entries,
    })
}

/// A submitted batch waiting for its results.
pub(crate) struct InFlight {
    pub(crate) index: wgpu::SubmissionIndex,
    pub(crate) batch: Batch,
    pub(crate) buffers: Buffers,
    /// Fires when the readback is mapped (or the work is done, for a batch with no readback).
    pub(crate) done: flume::Receiver<Result<(), String>>,
    /// When its encoding began: the start of its device time, for the cost per job. (Not when
    /// `submit` returned: the GL backend runs the whole batch inside `submit`.)
    pub(crate) encoding_began: Instant,
}

/// What finishing a batch gives back besides the replies: host sets to map for writing
/// again, and the batch's pooled buffers (its readback excepted: the replies hold it).
pub(crate) struct Leftovers {
    pub(crate) host: Vec<Staged>,
    pub(crate) buffers: Buffers,
}

impl InFlight {
    /// One reply per job, in job order: its bytes in `readback` (the batch's mapped readback)
    /// or in its own mapped read-write buffer (direct jobs), or `readback`'s error. `back` is
    /// where a direct job's buffer goes once its reply is done with it.
    pub(crate) fn finish(
        self,
        readback: Result<Option<Arc<Readback>>, Error>,
        back: &flume::Sender<Returned>,
        device: usize,
        period_ns: f32,
    ) -> (Vec<Result<JobOutput, Error>>, Leftovers) {
        let InFlight {
            batch, mut buffers, ..
        } = self;
        let Batch {
            jobs,
            plan,
            upload,
            groups,
            member,
        } = batch;
        let mut replies = Vec::with_capacity(jobs.len());
        let mut host: Vec<Staged> = upload.into_iter().map(Staged::Upload).collect();
        let timestamps = readback.as_ref().ok().cloned().flatten();
        for (j, ready) in jobs.into_iter().enumerate() {
            let mine = match (ready.staged, &readback) {
                (Some(set @ Staged::Upload(_)), _) => {
                    host.push(set);
                    readback.clone()
                }
                // Its own read-back buffer carries its read buffer along, back to the pool.
                (Some(set @ Staged::Direct { rw: Some(_), .. }), Ok(_)) => {
                    Readback::new(Returned::Own(set), back.clone())
                        .map(|r| Some(Arc::new(r)))
                        .map_err(Error::Wgpu)
                }
                (Some(set @ Staged::Direct { rw: None, .. }), Ok(_)) => {
                    host.push(set);
                    Ok(None)
                }
                (Some(Staged::Direct { .. }), Err(e)) => Err(e.clone()), // buffers dropped
                (None, _) => readback.clone(),
            };
            // A fused job's time is its share of its group's dispatch.
            let (query, share) = match member[j] {
                Some((g, _)) => (groups[g].0.jobs[0], groups[g].0.jobs.len() as u32),
                None => (j, 1),
            };
            let gpu_time = match (&timestamps, plan.timestamps) {
                (Some(rb), Some(at)) => {
                    gpu_time(rb.bytes(), at, query, period_ns).map(|t| t / share)
                }
                _ => None,
            };
            let ranges = match member[j] {
                Some((g, k)) => group_read_back(&groups[g].0, &groups[g].1, k),
                None => plan.read_back(j, &ready.layout),
            };
            replies.push(mine.map(|mapped| JobOutput {
                device,
                kernel: ready.job.last_kernel().clone(),
                ranges,
                mapped,
                gpu_time,
            }));
        }
        buffers.readback = None; // in the replies' `Readback`, or unusable after a failure
        (replies, Leftovers { host, buffers })
    }
}

/// Job `k` of a fused group's read-back ranges: (step, binding, offset, size).
fn group_read_back(g: &Group, placed: &[Placed], k: usize) -> Vec<(usize, u32, u64, u64)> {
    let mut ranges = Vec::new();
    for (s, (step, placed)) in g.steps.iter().zip(placed).enumerate() {
        for (&(binding, _, role), &(at, size)) in step.bindings.iter().zip(&placed.jobs[k]) {
            if let Seat::Own(Class::InOut | Class::Output) = role {
                ranges.push((s, binding, at, size));
            }
        }
    }
    ranges
}

/// The GPU time of job `j`, from the timestamps at offset `timestamps` of the mapped readback.
fn gpu_time(mapped: &[u8], timestamps: u64, j: usize, period_ns: f32) -> Option<Duration> {
    let at = usize::try_from(timestamps)
        .ok()?
        .checked_add(j.checked_mul(16)?)?;
    let ticks: [u64; 2] = bytemuck::pod_read_unaligned(mapped.get(at..at + 16)?);
    let ns = ticks[1].checked_sub(ticks[0])? as f64 * period_ns as f64;
    Some(Duration::from_nanos(ns as u64))
}
