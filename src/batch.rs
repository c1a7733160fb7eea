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

use std::collections::HashMap;
use std::num::NonZeroU64;

use crate::buffer::Role;
use crate::error::Error;
use crate::job::{Arg, ArgData};

/// Where one argument of one job lives within the batch's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The `@binding` number.
    pub(crate) binding: u32,
    /// [`Role::Read`] or [`Role::ReadWrite`].
    pub(crate) role: Role,
    /// Byte offset within that buffer (and, for read-write data, within the readback buffer).
    pub(crate) offset: u64,
    /// Byte size of the binding.
    pub(crate) size: u64,
}

impl Placement {
    /// Read-write data is read back; read-only data is not.
    pub(crate) fn read_back(&self) -> bool {
        self.role == Role::ReadWrite
    }
}

/// The layout of a whole batch: per job, where each argument lives; and the buffer sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Per job, its arguments' placements in argument order.
    pub(crate) jobs: Vec<Vec<Placement>>,
    /// Bytes of the read buffer in use.
    pub(crate) read_size: u64,
    /// End of the uploaded (`inout`) prefix of the read-write buffer.
    pub(crate) rw_upload_end: u64,
    /// Bytes of the read-write buffer in use; `[rw_upload_end, rw_size)` is cleared.
    pub(crate) rw_size: u64,
}

/// Rounds `v` up to a multiple of `align` (a power of two).
fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

impl Plan {
    /// Lays out `jobs` with every binding offset a multiple of `align`: read-only arguments in the
    /// read buffer; `inout` arguments, then `output` arguments, in the read-write buffer.
    pub(crate) fn new<'a>(jobs: impl Iterator<Item = &'a [Arg]> + Clone, align: u64) -> Plan {
        let (mut read, mut rw) = (0u64, 0u64);
        let mut placed: Vec<Vec<Option<Placement>>> = Vec::new();
        // First pass: everything uploaded. Second pass: zeroed outputs, after all inouts.
        for args in jobs.clone() {
            let row = args.iter().map(|a| {
                let (role, cursor) = match a.data {
                    ArgData::Uniform(_) | ArgData::Input(_) => (Role::Read, &mut read),
                    ArgData::InOut(_) => (Role::ReadWrite, &mut rw),
                    ArgData::Output(_) => return None,
                };
                Some(place(a, role, cursor, align))
            });
            placed.push(row.collect());
        }
        let rw_upload_end = rw;
        for (row, args) in placed.iter_mut().zip(jobs) {
            for (slot, a) in row.iter_mut().zip(args) {
                if slot.is_none() {
                    *slot = Some(place(a, Role::ReadWrite, &mut rw, align));
                }
            }
        }
        let jobs = placed
            .into_iter()
            .map(|row| row.into_iter().flatten().collect())
            .collect();
        Plan {
            jobs,
            read_size: align_up(read, 4),
            rw_upload_end: align_up(rw_upload_end, 4),
            rw_size: align_up(rw, 4),
        }
    }
}

/// Places `arg` at the next aligned offset of `cursor` and advances it.
fn place(arg: &Arg, role: Role, cursor: &mut u64, align: u64) -> Placement {
    let offset = align_up(*cursor, align);
    *cursor = offset + arg.data.size();
    Placement {
        binding: arg.binding,
        role,
        offset,
        size: arg.data.size(),
    }
}

/// The pooled buffers of one batch; a role with nothing in it has no buffer.
#[derive(Default)]
pub(crate) struct Buffers {
    pub(crate) read: Option<wgpu::Buffer>,
    pub(crate) rw: Option<wgpu::Buffer>,
    pub(crate) readback: Option<wgpu::Buffer>,
}

impl Buffers {
    fn get(&self, role: Role) -> Option<&wgpu::Buffer> {
        match role {
            Role::Read => self.read.as_ref(),
            Role::ReadWrite => self.rw.as_ref(),
            Role::Readback => self.readback.as_ref(),
        }
    }
}

/// A pipeline ready to bind: what encoding one job needs from the device's cache.
#[derive(Clone)]
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    /// `None` for a kernel without bindings.
    pub(crate) layout: Option<wgpu::BindGroupLayout>,
    /// Every binding takes a dynamic offset: jobs whose bindings have the same sizes share one
    /// bind group per batch instead of creating one each (a few microseconds per job in wgpu).
    pub(crate) dynamic: bool,
    /// The kernel's id: with the binding sizes, the key of a shared bind group.
    pub(crate) kernel: u64,
}

/// One job as the encoder sees it.
pub(crate) struct EncodeJob<'a> {
    pub(crate) args: &'a [Arg],
    pub(crate) placements: &'a [Placement],
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) workgroups: [u32; 3],
}

/// Queues the uploads and records the whole batch: clear outputs, one compute pass with every
/// dispatch, one copy into the readback buffer.
pub(crate) fn encode(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    plan: &Plan,
    jobs: &[EncodeJob<'_>],
    bufs: &Buffers,
) -> Result<wgpu::CommandBuffer, Error> {
    upload(queue, bufs.read.as_ref(), plan.read_size, jobs, Role::Read)?;
    upload(
        queue,
        bufs.rw.as_ref(),
        plan.rw_upload_end,
        jobs,
        Role::ReadWrite,
    )?;
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
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
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        let mut shared: HashMap<(u64, Vec<u64>), wgpu::BindGroup> = HashMap::new();
        for job in jobs {
            pass.set_pipeline(&job.pipeline.pipeline);
            match &job.pipeline.layout {
                Some(layout) if job.pipeline.dynamic => {
                    let mut sorted = job.placements.to_vec();
                    sorted.sort_by_key(|p| p.binding);
                    let key = (job.pipeline.kernel, sorted.iter().map(|p| p.size).collect());
                    let group = shared
                        .entry(key)
                        .or_insert_with(|| bind_group(device, layout, &sorted, bufs, false));
                    let offsets: Vec<u32> = sorted.iter().map(|p| p.offset as u32).collect();
                    pass.set_bind_group(0, &*group, &offsets);
                }
                Some(layout) => pass.set_bind_group(
                    0,
                    &bind_group(device, layout, job.placements, bufs, true),
                    &[],
                ),
                None => {}
            }
            let [x, y, z] = job.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }
    if let (Some(rw), Some(readback)) = (&bufs.rw, &bufs.readback) {
        enc.copy_buffer_to_buffer(rw, 0, readback, 0, plan.rw_size);
    }
    Ok(enc.finish())
}

/// Writes every uploaded argument of `role` into `buffer` through one staging view.
fn upload(
    queue: &wgpu::Queue,
    buffer: Option<&wgpu::Buffer>,
    len: u64,
    jobs: &[EncodeJob<'_>],
    role: Role,
) -> Result<(), Error> {
    let (Some(buffer), Some(len)) = (buffer, NonZeroU64::new(len)) else {
        return Ok(());
    };
    let mut view = queue
        .write_buffer_with(buffer, 0, len)
        .ok_or_else(|| Error::Wgpu(format!("could not stage {len} bytes of uploads")))?;
    for job in jobs {
        for (arg, p) in job.args.iter().zip(job.placements) {
            let bytes = match &arg.data {
                ArgData::Uniform(b) | ArgData::Input(b) | ArgData::InOut(b) if p.role == role => b,
                _ => continue,
            };
            let start = p.offset as usize;
            view.slice(start..start + bytes.len())
                .copy_from_slice(bytes);
        }
    }
    Ok(())
}

/// A bind group for `placements`, at their offsets (`at_offsets`) or at offset zero, for a
/// layout whose offsets are dynamic.
fn bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    placements: &[Placement],
    bufs: &Buffers,
    at_offsets: bool,
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = placements
        .iter()
        .filter_map(|p| {
            let buffer = bufs.get(p.role)?;
            let offset = if at_offsets { p.offset } else { 0 };
            let binding = wgpu::BufferBinding {
                buffer,
                offset,
                size: NonZeroU64::new(p.size),
            };
            Some(wgpu::BindGroupEntry {
                binding: p.binding,
                resource: wgpu::BindingResource::Buffer(binding),
            })
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout,
        entries: &entries,
    })
}

/// Copies each job's read-back bindings out of the mapped readback bytes.
pub(crate) fn outputs(mapped: &[u8], placements: &[Placement]) -> Vec<(u32, Vec<u8>)> {
    placements
        .iter()
        .filter(|p| p.read_back())
        .map(|p| {
            (
                p.binding,
                mapped[p.offset as usize..(p.offset + p.size) as usize].to_vec(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(binding: u32, data: ArgData) -> Arg {
        Arg { binding, data }
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
        let jobs = [a.as_slice(), b.as_slice()];
        let plan = Plan::new(jobs.iter().copied(), 256);
        let p = &plan.jobs;
        assert_eq!(
            p[0][0],
            Placement {
                binding: 0,
                role: Role::Read,
                offset: 0,
                size: 8
            }
        );
        assert_eq!(
            p[0][1],
            Placement {
                binding: 1,
                role: Role::Read,
                offset: 256,
                size: 12
            }
        );
        // inouts come first in the read-write buffer, outputs after all of them
        assert_eq!(
            p[0][3],
            Placement {
                binding: 3,
                role: Role::ReadWrite,
                offset: 0,
                size: 4
            }
        );
        assert_eq!(
            p[1][0],
            Placement {
                binding: 0,
                role: Role::ReadWrite,
                offset: 256,
                size: 300
            }
        );
        assert_eq!(plan.rw_upload_end, 556);
        assert_eq!(
            p[0][2],
            Placement {
                binding: 2,
                role: Role::ReadWrite,
                offset: 768,
                size: 40
            }
        );
        assert_eq!(
            p[1][1],
            Placement {
                binding: 1,
                role: Role::ReadWrite,
                offset: 1024,
                size: 4
            }
        );
        assert_eq!(plan.read_size, 268);
        assert_eq!(plan.rw_size, 1028);
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
        let plan = Plan::new(jobs.iter().map(Vec::as_slice), 64);
        let mut ranges: Vec<(Role, u64, u64)> = plan
            .jobs
            .iter()
            .flatten()
            .map(|p| (p.role, p.offset, p.offset + p.size))
            .collect();
        ranges.sort_by_key(|r| (r.0 == Role::Read, r.1));
        for w in ranges.windows(2) {
            assert!(w[0].0 != w[1].0 || w[0].2 <= w[1].1, "{w:?} overlap");
        }
        assert!(plan.jobs.iter().flatten().all(|p| p.offset % 64 == 0));
    }

    #[test]
    fn outputs_slice_only_read_back_bindings() {
        let mapped: Vec<u8> = (0..=255).collect();
        let placements = [
            Placement {
                binding: 0,
                role: Role::Read,
                offset: 0,
                size: 4,
            },
            Placement {
                binding: 1,
                role: Role::ReadWrite,
                offset: 8,
                size: 4,
            },
        ];
        assert_eq!(outputs(&mapped, &placements), vec![(1, vec![8, 9, 10, 11])]);
    }
}
