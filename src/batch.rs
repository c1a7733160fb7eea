//! Batches: many jobs, one command buffer, one `queue.submit`.
//!
//! A batch is first a plain [`Plan`] (where every argument of every job lives) that unit tests
//! check without a device; [`encode`] then turns a plan into one command buffer.
//!
//! # Memory layout of one batch
//! Each batch uses three pooled buffers:
//! - **read**: every uniform and `input` argument, each at its own aligned offset. Filled with
//!   `queue.write_buffer_with`, whose copies run at the start of this batch's submit.
//! - **read-write**: first every `inout` argument (uploaded the same way), then every `output`
//!   argument (cleared by `clear_buffer` inside the command buffer, so it starts zeroed).
//! - **readback**: the read-write buffer is copied here in one copy after the last dispatch.
//!
//! Read-only and read-write data live in different buffers because wgpu forbids one buffer
//! bound both as uniform/read-only storage and as read-write storage in one dispatch. Each
//! binding is bound with its exact offset and size, and user WGSL always runs with runtime
//! bounds checks, so a job can reach only its own bytes; every one of them was uploaded or
//! zeroed in this batch, so nothing of an earlier batch that used the pooled buffer is visible.
//!
//! Because the uploads are queue writes, a pooled buffer is never reused by two batches in
//! flight: buffers go back to the pool only after the batch's readback is mapped.
//!
//! Two more kinds of binding are not in those buffers:
//! - **scratch** (multi-step jobs): each scratch buffer of each job is its own pooled buffer,
//!   cleared in the command buffer and never read back. Its own buffer, because a step may
//!   read it (`var<storage, read>`) while writing another binding, and wgpu forbids one buffer
//!   being read-only and read-write in the same dispatch.
//! - **resident** ([`DeviceBuffer`](crate::DeviceBuffer)): bound whole, as the caller made it.
//!
//! Steps of a job are consecutive dispatches in the one compute pass; wgpu puts a barrier
//! between dispatches that share a written buffer, so each step sees the previous one's writes.
//!
//! With timestamp queries, a timestamp is written before each job's first dispatch and after
//! its last, resolved into a pooled buffer and copied to the end of the readback buffer.

use std::collections::HashMap;
use std::num::NonZeroU64;

use crate::error::Error;
use crate::job::{Arg, ArgData};
use crate::pipelines::Pipeline;

/// Where one argument lives within the batch's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// At this offset of the read buffer.
    Read(u64),
    /// At this offset of the read-write buffer, read back or not.
    ReadWrite { offset: u64, read_back: bool },
    /// The whole of the batch's scratch buffer with this index.
    Scratch(usize),
    /// The argument's own resident buffer, whole.
    Resident,
}

/// One argument of one step of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The `@binding` number.
    pub(crate) binding: u32,
    pub(crate) region: Region,
    /// Byte size of the binding.
    pub(crate) size: u64,
}

impl Placement {
    /// The offset to bind at within its buffer.
    fn offset(&self) -> u64 {
        match self.region {
            Region::Read(o) | Region::ReadWrite { offset: o, .. } => o,
            Region::Scratch(_) | Region::Resident => 0,
        }
    }
}

/// The layout of a whole batch: where every argument lives, and the buffer sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Per job, per step, its arguments' placements in argument order.
    pub(crate) jobs: Vec<Vec<Vec<Placement>>>,
    /// Bytes of the read buffer in use.
    pub(crate) read_size: u64,
    /// End of the uploaded (`inout`) prefix of the read-write buffer.
    pub(crate) rw_upload_end: u64,
    /// Bytes of the read-write buffer in use; `[rw_upload_end, rw_size)` is cleared.
    pub(crate) rw_size: u64,
    /// Sizes of the scratch buffers.
    pub(crate) scratch: Vec<u64>,
    /// Offset of the timestamps (two `u64` per job) in the readback buffer, if measured.
    pub(crate) timestamps: Option<u64>,
    /// Bytes of the readback buffer: the read-write buffer, then the timestamps.
    pub(crate) readback_size: u64,
}

/// Rounds `v` up to a multiple of `align` (a power of two), saturating.
pub(crate) fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align).saturating_mul(align)
}

/// Offset alignment of resolved query results and of the copy that moves them.
const QUERY_ALIGN: u64 = 256;

impl Plan {
    /// Lays out `jobs` (per job, the arguments of each step) with every binding offset a
    /// multiple of `align`: read-only arguments in the read buffer; `inout`, then `output`
    /// arguments in the read-write buffer; one scratch buffer per scratch id of a job.
    pub(crate) fn new(jobs: &[Vec<&[Arg]>], align: u64, timestamps: bool) -> Plan {
        let (mut read, mut rw) = (0u64, 0u64);
        let place = |size: u64, cursor: &mut u64| {
            let offset = align_up(*cursor, align);
            *cursor = offset + size;
            offset
        };
        // First pass: everything uploaded, in job order.
        let mut placed: Vec<Vec<Vec<Option<Placement>>>> = jobs
            .iter()
            .map(|steps| {
                steps
                    .iter()
                    .map(|args| {
                        args.iter()
                            .map(|a| {
                                let region = match a.data {
                                    ArgData::Uniform(_) | ArgData::Input(_) => {
                                        Region::Read(place(a.data.size(), &mut read))
                                    }
                                    ArgData::InOut(_) => Region::ReadWrite {
                                        offset: place(a.data.size(), &mut rw),
                                        read_back: true,
                                    },
                                    _ => return None,
                                };
                                Some(Placement {
                                    binding: a.binding,
                                    region,
                                    size: a.data.size(),
                                })
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let rw_upload_end = rw;
        // Second pass: zeroed outputs after every upload, then scratch and resident bindings.
        let mut scratch = Vec::new();
        for (job, steps) in placed.iter_mut().zip(jobs) {
            let mut ids: HashMap<u32, usize> = HashMap::new();
            for (row, args) in job.iter_mut().zip(steps) {
                for (slot, a) in row.iter_mut().zip(args.iter()) {
                    let region = match a.data {
                        ArgData::Output(n) => Region::ReadWrite {
                            offset: place(n, &mut rw),
                            read_back: true,
                        },
                        ArgData::Scratch { id, size } => {
                            let index = *ids.entry(id).or_insert_with(|| {
                                scratch.push(0);
                                scratch.len() - 1
                            });
                            scratch[index] = scratch[index].max(align_up(size, 4));
                            Region::Scratch(index)
                        }
                        ArgData::Resident(_) => Region::Resident,
                        _ => continue,
                    };
                    *slot = Some(Placement {
                        binding: a.binding,
                        region,
                        size: a.data.size(),
                    });
                }
            }
        }
        let jobs = placed
            .into_iter()
            .map(|j| {
                j.into_iter()
                    .map(|s| s.into_iter().flatten().collect())
                    .collect()
            })
            .collect();
        let jobs: Vec<Vec<Vec<Placement>>> = jobs;
        let rw_size = align_up(rw, 4);
        let timestamps = (timestamps && !jobs.is_empty()).then(|| align_up(rw_size, QUERY_ALIGN));
        let readback_size = match timestamps {
            Some(at) => at + 16 * jobs.len() as u64,
            None => rw_size,
        };
        Plan {
            jobs,
            read_size: align_up(read, 4),
            rw_upload_end: align_up(rw_upload_end, 4),
            rw_size,
            scratch,
            timestamps,
            readback_size,
        }
    }
}

impl Plan {
    /// The largest binding offset in the plan: a dynamic offset must fit in a `u32`.
    pub(crate) fn max_offset(&self) -> u64 {
        self.jobs
            .iter()
            .flatten()
            .flatten()
            .map(Placement::offset)
            .max()
            .unwrap_or(0)
    }
}

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

/// One step of one job as the encoder sees it.
pub(crate) struct EncodeStep<'a> {
    pub(crate) args: &'a [Arg],
    pub(crate) placements: &'a [Placement],
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) workgroups: [u32; 3],
}

/// What [`encode`] works with besides the plan.
pub(crate) struct Target<'a> {
    pub(crate) device: &'a wgpu::Device,
    pub(crate) queue: &'a wgpu::Queue,
    /// The engine's index of this device: which copy of a resident buffer to bind.
    pub(crate) index: usize,
    /// Two queries per job, when the batch is timed.
    pub(crate) queries: Option<&'a wgpu::QuerySet>,
}

/// Queues the uploads and records the whole batch: clear outputs and scratch, one compute
/// pass with every step of every job, one copy into the readback buffer.
#[allow(clippy::mutable_key_type)] // BindKey hashes buffer ids, which are immutable
pub(crate) fn encode(
    t: &Target<'_>,
    plan: &Plan,
    jobs: &[Vec<EncodeStep<'_>>],
    bufs: &Buffers,
) -> Result<wgpu::CommandBuffer, Error> {
    upload(t.queue, bufs.read.as_ref(), plan.read_size, jobs, true)?;
    upload(t.queue, bufs.rw.as_ref(), plan.rw_upload_end, jobs, false)?;
    let mut enc = t
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-batch"),
        });
    if let Some(rw) = &bufs.rw
        && plan.rw_size > plan.rw_upload_end
    {
        enc.clear_buffer(
            rw,
            plan.rw_upload_end,
            Some(plan.rw_size - plan.rw_upload_end),
        );
    }
    for (buffer, size) in bufs.scratch.iter().zip(&plan.scratch) {
        enc.clear_buffer(buffer, 0, Some(*size));
    }
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        let mut shared: HashMap<BindKey, wgpu::BindGroup> = HashMap::new();
        // Timed batches hold at most 2,048 jobs: `2 * j + 1` fits the query set's u32.
        for (j, steps) in jobs.iter().enumerate() {
            if let Some(q) = t.queries {
                pass.write_timestamp(q, 2 * j as u32);
            }
            for step in steps {
                dispatch(t, &mut pass, step, bufs, &mut shared);
            }
            if let Some(q) = t.queries {
                pass.write_timestamp(q, 2 * j as u32 + 1);
            }
        }
    }
    if let (Some(q), Some(resolve)) = (t.queries, &bufs.resolve) {
        enc.resolve_query_set(q, 0..2 * jobs.len() as u32, resolve, 0);
    }
    if let Some(readback) = &bufs.readback {
        if let Some(rw) = &bufs.rw {
            enc.copy_buffer_to_buffer(rw, 0, readback, 0, plan.rw_size);
        }
        if let (Some(at), Some(resolve)) = (plan.timestamps, &bufs.resolve) {
            enc.copy_buffer_to_buffer(resolve, 0, readback, at, 16 * jobs.len() as u64);
        }
    }
    Ok(enc.finish())
}

/// A shared bind group's identity: the kernel, and per binding (in binding order) the buffer
/// bound and the size of the range. The offsets are dynamic, so they are not part of it; the
/// buffers are: two steps that bind a binding in different buffers (the read buffer or the
/// read-write buffer, different scratch buffers, different resident buffers) must never share
/// a bind group. (`wgpu::Buffer` hashes by its id, which never changes, whatever clippy's
/// interior-mutability lint infers.)
type BindKey = (u64, Vec<(wgpu::Buffer, u64)>);

/// One binding of one step, resolved to the buffer and range it binds.
struct Bound<'a> {
    binding: u32,
    buffer: &'a wgpu::Buffer,
    offset: u64,
    size: u64,
}

/// Records one step: pipeline, bind group (shared when the layout allows), dispatch.
#[allow(clippy::mutable_key_type)] // BindKey hashes buffer ids, which are immutable
fn dispatch(
    t: &Target<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    step: &EncodeStep<'_>,
    bufs: &Buffers,
    shared: &mut HashMap<BindKey, wgpu::BindGroup>,
) {
    pass.set_pipeline(&step.pipeline.pipeline);
    let mut bound: Vec<Bound<'_>> = step
        .args
        .iter()
        .zip(step.placements)
        .filter_map(|(arg, p)| {
            let buffer = match p.region {
                Region::Read(_) => bufs.read.as_ref(),
                Region::ReadWrite { .. } => bufs.rw.as_ref(),
                Region::Scratch(i) => bufs.scratch.get(i),
                Region::Resident => resident(arg, t.index),
            }?;
            Some(Bound {
                binding: p.binding,
                buffer,
                offset: p.offset(),
                size: p.size,
            })
        })
        .collect();
    bound.sort_by_key(|b| b.binding);
    match &step.pipeline.layout {
        Some(layout) if step.pipeline.dynamic => {
            let key = (
                step.pipeline.kernel,
                bound.iter().map(|b| (b.buffer.clone(), b.size)).collect(),
            );
            let group = shared
                .entry(key)
                .or_insert_with(|| bind_group(t.device, layout, &bound, false));
            // The executor binds plainly any plan with an offset past `u32`; an offset that
            // did not fit would fail validation here (never alias another range).
            let offsets: Vec<u32> = bound
                .iter()
                .map(|b| u32::try_from(b.offset).unwrap_or(u32::MAX))
                .collect();
            pass.set_bind_group(0, &*group, &offsets);
        }
        Some(layout) => pass.set_bind_group(0, &bind_group(t.device, layout, &bound, true), &[]),
        None => {}
    }
    let [x, y, z] = step.workgroups;
    pass.dispatch_workgroups(x, y, z);
}

/// This device's copy of a resident argument's buffer.
fn resident(arg: &Arg, index: usize) -> Option<&wgpu::Buffer> {
    match &arg.data {
        ArgData::Resident(b) => b.copy_on(index),
        _ => None,
    }
}

/// Writes every uploaded argument of the read buffer (`read`) or the read-write buffer into
/// `buffer` through one staging view.
fn upload(
    queue: &wgpu::Queue,
    buffer: Option<&wgpu::Buffer>,
    len: u64,
    jobs: &[Vec<EncodeStep<'_>>],
    read: bool,
) -> Result<(), Error> {
    let (Some(buffer), Some(len)) = (buffer, NonZeroU64::new(len)) else {
        return Ok(());
    };
    let mut view = queue
        .write_buffer_with(buffer, 0, len)
        .ok_or_else(|| Error::Wgpu(format!("could not stage {len} bytes of uploads")))?;
    for step in jobs.iter().flatten() {
        for (arg, p) in step.args.iter().zip(step.placements) {
            let bytes = match (&arg.data, p.region) {
                (ArgData::Uniform(b) | ArgData::Input(b), Region::Read(_)) if read => b,
                (ArgData::InOut(b), Region::ReadWrite { .. }) if !read => b,
                _ => continue,
            };
            let start = usize::try_from(p.offset())
                .map_err(|_| Error::Wgpu("an upload offset exceeds this host's memory".into()))?;
            view.slice(start..start + bytes.len())
                .copy_from_slice(bytes);
        }
    }
    Ok(())
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
                buffer: b.buffer,
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

/// Copies one job's read-back bindings out of the mapped readback bytes, as (step, binding,
/// bytes).
pub(crate) fn outputs(mapped: &[u8], steps: &[Vec<Placement>]) -> Vec<(usize, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for (s, placements) in steps.iter().enumerate() {
        for p in placements {
            if let Region::ReadWrite {
                offset,
                read_back: true,
            } = p.region
            {
                // The plan fits every range inside the readback buffer, so `get` always finds it.
                let range = usize::try_from(offset)
                    .and_then(|a| Ok(a..a + usize::try_from(p.size)?))
                    .ok();
                let bytes = range.and_then(|r| mapped.get(r)).unwrap_or_default();
                out.push((s, p.binding, bytes.to_vec()));
            }
        }
    }
    out
}

/// The GPU time of job `j`, from the timestamps at offset `timestamps` of the mapped readback.
pub(crate) fn gpu_time(
    mapped: &[u8],
    timestamps: u64,
    j: usize,
    period_ns: f32,
) -> Option<std::time::Duration> {
    let at = usize::try_from(timestamps)
        .ok()?
        .checked_add(j.checked_mul(16)?)?;
    let ticks: [u64; 2] = bytemuck::pod_read_unaligned(mapped.get(at..at + 16)?);
    let ns = ticks[1].checked_sub(ticks[0])? as f64 * period_ns as f64;
    Some(std::time::Duration::from_nanos(ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(binding: u32, data: ArgData) -> Arg {
        Arg { binding, data }
    }

    fn at(binding: u32, region: Region, size: u64) -> Placement {
        Placement {
            binding,
            region,
            size,
        }
    }

    fn rw(offset: u64) -> Region {
        Region::ReadWrite {
            offset,
            read_back: true,
        }
    }

    #[test]
    fn plan_separates_roles_and_aligns_offsets() {
        let a = vec![
            arg(0, ArgData::Uniform(vec![0; 8].into())),
            arg(1, ArgData::Input(vec![0; 12].into())),
            arg(2, ArgData::Output(40)),
            arg(3, ArgData::InOut(vec![0; 4].into())),
        ];
        let b = vec![
            arg(0, ArgData::InOut(vec![0; 300].into())),
            arg(1, ArgData::Output(4)),
        ];
        let plan = Plan::new(&[vec![a.as_slice()], vec![b.as_slice()]], 256, false);
        let p = &plan.jobs;
        assert_eq!(p[0][0][0], at(0, Region::Read(0), 8));
        assert_eq!(p[0][0][1], at(1, Region::Read(256), 12));
        // inouts come first in the read-write buffer, outputs after all of them
        assert_eq!(p[0][0][3], at(3, rw(0), 4));
        assert_eq!(p[1][0][0], at(0, rw(256), 300));
        assert_eq!(plan.rw_upload_end, 556);
        assert_eq!(p[0][0][2], at(2, rw(768), 40));
        assert_eq!(p[1][0][1], at(1, rw(1024), 4));
        assert_eq!(
            (plan.read_size, plan.rw_size, plan.readback_size),
            (268, 1028, 1028)
        );
        assert_eq!(plan.timestamps, None);
    }

    #[test]
    fn plan_never_overlaps_bindings() {
        let jobs: Vec<Vec<Arg>> = (0..50u64)
            .map(|i| {
                vec![
                    arg(0, ArgData::Input(vec![0; 4 * (i as usize + 1)].into())),
                    arg(1, ArgData::Output(4 * i + 4)),
                ]
            })
            .collect();
        let steps: Vec<Vec<&[Arg]>> = jobs.iter().map(|j| vec![j.as_slice()]).collect();
        let plan = Plan::new(&steps, 64, false);
        let mut ranges: Vec<(bool, u64, u64)> = plan
            .jobs
            .iter()
            .flatten()
            .flatten()
            .map(|p| {
                (
                    matches!(p.region, Region::Read(_)),
                    p.offset(),
                    p.offset() + p.size,
                )
            })
            .collect();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].0 != w[1].0 || w[0].2 <= w[1].1, "{w:?} overlap");
        }
        assert!(
            plan.jobs
                .iter()
                .flatten()
                .flatten()
                .all(|p| p.offset() % 64 == 0)
        );
    }

    #[test]
    fn scratch_is_shared_across_a_jobs_steps_but_not_between_jobs() {
        let step1 = vec![
            arg(0, ArgData::Input(vec![0; 16].into())),
            arg(1, ArgData::Scratch { id: 7, size: 16 }),
        ];
        let step2 = vec![
            arg(0, ArgData::Scratch { id: 7, size: 10 }),
            arg(1, ArgData::Output(16)),
        ];
        let job = vec![step1.as_slice(), step2.as_slice()];
        let plan = Plan::new(&[job.clone(), job], 256, true);
        assert_eq!(plan.scratch, [16, 16]);
        assert_eq!(plan.jobs[0][0][1].region, Region::Scratch(0));
        assert_eq!(plan.jobs[0][1][0].region, Region::Scratch(0));
        assert_eq!(plan.jobs[1][1][0].region, Region::Scratch(1));
        // Timestamps follow the read-back data, aligned for query resolution.
        assert_eq!(plan.rw_size, 256 + 16);
        assert_eq!(plan.timestamps, Some(512));
        assert_eq!(plan.readback_size, 512 + 32);
    }

    #[test]
    fn a_batch_never_places_a_binding_past_a_dynamic_offsets_reach() {
        use crate::job::{Footprint, footprint};
        // Jobs of about 1.5 GiB of outputs (and a small input), gathered as the executor does
        // with a 4 GiB buffer cap: two fit a batch, a third does not, and every offset of
        // every batch's plan fits the u32 of a dynamic offset.
        let cap = 1u64 << 32;
        let align = 256;
        let jobs: Vec<Vec<Arg>> = (0..7u64)
            .map(|i| {
                vec![
                    arg(0, ArgData::Input(vec![0; 4].into())),
                    arg(1, ArgData::Output((3 << 29) + 4 * i)),
                    arg(2, ArgData::Output(4 + 252 * i)),
                ]
            })
            .collect();
        let mut batches: Vec<Vec<&Vec<Arg>>> = vec![Vec::new()];
        let mut used = Footprint::default();
        for job in &jobs {
            let add = footprint(job.iter(), align);
            let current = batches.last_mut().unwrap();
            if !current.is_empty() && !used.fits(add, cap, u64::MAX) {
                batches.push(Vec::new());
                used = Footprint::default();
            }
            used = used.plus(add);
            batches.last_mut().unwrap().push(job);
        }
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 2, 2, 1]
        );
        for batch in batches {
            let steps: Vec<Vec<&[Arg]>> = batch.iter().map(|j| vec![j.as_slice()]).collect();
            let plan = Plan::new(&steps, align, false);
            assert!(plan.rw_size <= cap, "{} bytes", plan.rw_size);
            assert!(
                plan.max_offset() <= u64::from(u32::MAX),
                "{}",
                plan.max_offset()
            );
        }
        // A lone job past the range is planned as it is: the executor binds it plainly.
        let huge = [arg(0, ArgData::Output(3 << 31)), arg(1, ArgData::Output(4))];
        let plan = Plan::new(&[vec![&huge[..]]], align, false);
        assert!(plan.max_offset() > u64::from(u32::MAX));
    }

    #[test]
    fn outputs_slice_only_read_back_bindings() {
        let mapped: Vec<u8> = (0..=255).collect();
        let steps = vec![
            vec![at(0, Region::Read(0), 4), at(1, rw(8), 4)],
            vec![at(2, Region::Scratch(0), 4), at(1, rw(16), 4)],
        ];
        assert_eq!(
            outputs(&mapped, &steps),
            vec![(0, 1, vec![8, 9, 10, 11]), (1, 1, vec![16, 17, 18, 19])]
        );
    }
}
