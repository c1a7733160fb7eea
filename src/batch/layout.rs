//! Where a batch's data lives: plain data, computed without a device and unit-tested.
//!
//! A job's own [`Layout`] is computed on the submitting thread: every uniform and `input`
//! argument at an aligned offset of the job's **read block**, every `inout` of its **inout
//! block**, every `output` of its **output block**, and one scratch buffer per scratch id.
//! The read and inout blocks are written back to back into an upload buffer: by the caller
//! for a job of 32 KiB or more, else by the submitter with the rest of the batch (see
//! `device/mapped.rs`).
//!
//! A batch's [`Plan`] then only places whole blocks: the jobs' read blocks one after another
//! in the batch's **read** buffer; their inout blocks, then all their output blocks, in its
//! **read-write** buffer (so the outputs are one range to clear). Every block starts at a
//! multiple of the binding alignment, and every argument sits at an aligned offset within its
//! block, so every binding offset is aligned.
//!
//! Read-only and read-write data live in different buffers because wgpu forbids one buffer
//! bound both as uniform/read-only storage and as read-write storage in one dispatch.

use crate::job::{ArgData, Job};

/// The smallest job whose submitting thread writes its data itself (see [`Layout::writer`]).
/// Measured on the noop backend, 8 threads x 32 SAXPY jobs in flight, a job's own buffers
/// against an upload buffer per job, alternating runs
/// (`HOT_ELEMENTS=n cargo bench --bench throughput -- hot`): 3 KiB of data per job 0.74x,
/// 12 KiB 0.85x, 24 KiB 0.95x, 48 KiB 1.30x; below the crossover even per-job upload buffers
/// cost more than one shared buffer per batch.
pub(crate) const CALLER_WRITES_FROM: u64 = 32 << 10;

/// Who writes a job's data into mapped memory, and so whether it may fuse: the one policy
/// ([`Layout::writer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The thread that submits it, in parallel with other submitters (a job of
    /// [`CALLER_WRITES_FROM`] bytes or more). Such a job never fuses: fusing it would move
    /// that copy onto the submitter's one thread (measured on noop, fusing 32 KiB SAXPY jobs
    /// cut the best host throughput from 1.46x plain wgpu to 1.07x, and on lavapipe it
    /// gained nothing at that size).
    Caller,
    /// The submitter, with the rest of its batch, into one upload buffer; only these jobs
    /// may fuse, since where their data goes is known only once the batch forms.
    Submitter,
}

/// Where a binding's data lives in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Class {
    /// Uploaded into the read buffer (uniform and input arguments).
    Read,
    /// Uploaded into the read-write buffer and read back (inout).
    InOut,
    /// Zeroed in the read-write buffer and read back (output).
    Output,
}

/// What a fused group (see `batch/group.rs`) asks of a batch's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupNeeds {
    /// Regions of the read or read-write buffer: (class, bytes).
    pub(crate) regions: Vec<(Class, u64)>,
    /// Bytes of each job table (in the read buffer).
    pub(crate) tables: Vec<u64>,
    /// Bytes of each scratch buffer (zeroed).
    pub(crate) scratch: Vec<u64>,
}

/// Where a plan put a fused group's needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupAt {
    /// Per region, its offset in its buffer.
    pub(crate) regions: Vec<u64>,
    /// Per table, its offset in the read buffer.
    pub(crate) tables: Vec<u64>,
    /// Per scratch buffer, its index among the batch's.
    pub(crate) scratch: Vec<usize>,
}

/// Where one argument of one step lives, relative to its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spot {
    /// At this offset of the job's read block.
    Read(u64),
    /// At this offset of the job's inout block (uploaded, read back).
    InOut(u64),
    /// At this offset of the job's output block (zeroed, read back).
    Output(u64),
    /// The job's scratch buffer with this index.
    Scratch(usize),
    /// The argument's own resident buffer, whole.
    Resident,
}

/// One argument: its binding, where it lives, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) binding: u32,
    pub(crate) spot: Spot,
    pub(crate) size: u64,
}

/// A job's own layout (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Per step, its arguments in argument order.
    pub(crate) steps: Vec<Vec<Placement>>,
    pub(crate) read_len: u64,
    pub(crate) inout_len: u64,
    pub(crate) output_len: u64,
    /// Sizes of the job's scratch buffers (one per scratch id, first use first).
    pub(crate) scratch: Vec<u64>,
}

/// Rounds `v` up to a multiple of `align` (a power of two), saturating.
pub(crate) fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align).saturating_mul(align)
}

impl Layout {
    /// The job's data: its read, read-write and output bytes (alignment padding included).
    pub(crate) fn bytes(&self) -> u64 {
        (self.read_len)
            .saturating_add(self.inout_len)
            .saturating_add(self.output_len)
    }

    /// Lays out `job` with every offset a multiple of `align`.
    pub(crate) fn of(job: &Job, align: u64) -> Layout {
        let (mut read, mut inout, mut output) = (0u64, 0u64, 0u64);
        let place = |size: u64, cursor: &mut u64| {
            let at = align_up(*cursor, align);
            *cursor = at.saturating_add(size);
            at
        };
        let mut ids: Vec<u32> = Vec::new();
        let mut scratch: Vec<u64> = Vec::new();
        let steps = job
            .steps
            .iter()
            .map(|step| {
                step.args
                    .iter()
                    .map(|a| {
                        let size = a.data.size();
                        let spot = match a.data {
                            ArgData::Uniform(_) | ArgData::Input(_) => {
                                Spot::Read(place(size, &mut read))
                            }
                            ArgData::InOut(_) => Spot::InOut(place(size, &mut inout)),
                            ArgData::Output(_) => Spot::Output(place(size, &mut output)),
                            ArgData::Scratch { id, .. } => {
                                let i = ids.iter().position(|&x| x == id).unwrap_or_else(|| {
                                    ids.push(id);
                                    scratch.push(0);
                                    ids.len() - 1
                                });
                                scratch[i] = scratch[i].max(align_up(size, 4));
                                Spot::Scratch(i)
                            }
                            ArgData::Resident(_) => Spot::Resident,
                        };
                        Placement {
                            binding: a.binding,
                            spot,
                            size,
                        }
                    })
                    .collect()
            })
            .collect();
        Layout {
            steps,
            read_len: read,
            inout_len: inout,
            output_len: output,
            scratch,
        }
    }

    /// Who writes this job's data (see [`Writer`]): its caller when its upload buffer, or its
    /// own buffers in direct mode (offsets a multiple of `align`), would hold
    /// [`CALLER_WRITES_FROM`] bytes or more.
    pub(crate) fn writer(&self, align: u64) -> Writer {
        let bytes = self
            .upload_len()
            .max(self.read_len + self.own_rw_len(align));
        if bytes >= CALLER_WRITES_FROM {
            Writer::Caller
        } else {
            Writer::Submitter
        }
    }

    /// Bytes of the job's upload buffer: its read block, then its inout block.
    pub(crate) fn upload_len(&self) -> u64 {
        self.read_len + self.inout_len
    }

    /// Where the output block starts in the job's own read-write buffer (direct mode): after
    /// the inout block, aligned.
    pub(crate) fn own_output_at(&self, align: u64) -> u64 {
        align_up(self.inout_len, align)
    }

    /// Bytes of the job's own read-write buffer (direct mode): inout block, output block.
    pub(crate) fn own_rw_len(&self, align: u64) -> u64 {
        match self.output_len {
            0 => self.inout_len,
            n => self.own_output_at(align) + n,
        }
    }

    /// The job's uniforms and inputs as (offset in its read block, bytes).
    pub(crate) fn read_parts<'a>(&self, job: &'a Job) -> Vec<(u64, &'a [u8])> {
        self.parts(job, |spot| match spot {
            Spot::Read(at) => Some(at),
            _ => None,
        })
    }

    /// The job's inouts as (offset in its own read-write buffer, bytes).
    pub(crate) fn own_rw_parts<'a>(&self, job: &'a Job) -> Vec<(u64, &'a [u8])> {
        self.parts(job, |spot| match spot {
            Spot::InOut(at) => Some(at),
            _ => None,
        })
    }

    /// The job's outputs as (offset in its own read-write buffer, size): zeroed before use.
    pub(crate) fn own_zeroes(&self, align: u64) -> Vec<(u64, u64)> {
        let base = self.own_output_at(align);
        self.steps
            .iter()
            .flatten()
            .filter_map(|p| match p.spot {
                Spot::Output(at) => Some((base + at, p.size)),
                _ => None,
            })
            .collect()
    }

    /// The uploaded arguments whose spot `at` places, as (offset, bytes).
    fn parts<'a>(&self, job: &'a Job, at: impl Fn(Spot) -> Option<u64>) -> Vec<(u64, &'a [u8])> {
        let args = job.steps.iter().flat_map(|s| s.args.iter());
        args.zip(self.steps.iter().flatten())
            .filter_map(|(a, p)| match &a.data {
                ArgData::Uniform(b) | ArgData::Input(b) | ArgData::InOut(b) => {
                    Some((at(p.spot)?, &b[..]))
                }
                _ => None,
            })
            .collect()
    }

    /// Every uploaded argument of `job` as (offset in the upload buffer, bytes).
    pub(crate) fn uploads<'a>(&self, job: &'a Job) -> Vec<(u64, &'a [u8])> {
        let args = job.steps.iter().flat_map(|s| s.args.iter());
        let places = self.steps.iter().flatten();
        args.zip(places)
            .filter_map(|(a, p)| match (&a.data, p.spot) {
                (ArgData::Uniform(b) | ArgData::Input(b), Spot::Read(at)) => Some((at, &b[..])),
                (ArgData::InOut(b), Spot::InOut(at)) => Some((self.read_len + at, &b[..])),
                _ => None,
            })
            .collect()
    }
}

impl Footprint {
    /// What `job` adds to a batch's buffers when every binding offset is a multiple of
    /// `align` (an upper bound of where the batch plan puts it).
    pub(crate) fn of(job: &Job, align: u64) -> Footprint {
        job.args().fold(Footprint::default(), |f, a| {
            let room = align_up(a.data.size(), align);
            let (read, rw) = match a.data {
                ArgData::Uniform(_) | ArgData::Input(_) => (room, 0),
                ArgData::InOut(_) | ArgData::Output(_) => (0, room),
                ArgData::Scratch { .. } | ArgData::Resident(_) => (0, 0),
            };
            f.plus(Footprint {
                read,
                rw,
                bytes: a.data.batch_bytes(),
            })
        })
    }
}

/// The bytes a job takes in a batch: in its read buffer, in its read-write buffer (each
/// binding padded to the batch's offset alignment), and in all (scratch included, padding not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    pub(crate) read: u64,
    pub(crate) rw: u64,
    pub(crate) bytes: u64,
}

impl Footprint {
    /// Checks that the job's arguments fit the device's buffers (a job is never split).
    pub(crate) fn check(&self, limits: &wgpu::Limits) -> crate::error::Result<()> {
        for (what, bytes) in [
            ("bytes of one job's uniform and input arguments", self.read),
            ("bytes of one job's inout and output arguments", self.rw),
        ] {
            if bytes > limits.max_buffer_size {
                return Err(crate::error::Error::Limit {
                    what,
                    requested: bytes,
                    limit: limits.max_buffer_size,
                });
            }
        }
        Ok(())
    }

    /// Both together, saturating.
    pub(crate) fn plus(self, o: Footprint) -> Footprint {
        Footprint {
            read: self.read.saturating_add(o.read),
            rw: self.rw.saturating_add(o.rw),
            bytes: self.bytes.saturating_add(o.bytes),
        }
    }

    /// Whether `add` joins a batch that uses `self` without a read or read-write buffer over
    /// `buffer_cap` or more than `max_bytes` in all.
    pub(crate) fn fits(self, add: Footprint, buffer_cap: u64, max_bytes: u64) -> bool {
        let sum = self.plus(add);
        sum.read <= buffer_cap && sum.rw <= buffer_cap && sum.bytes <= max_bytes
    }
}

/// Where a placed argument ended up in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// At this offset of the read buffer.
    Read(u64),
    /// At this offset of the read-write buffer (every such range is read back).
    ReadWrite(u64),
    /// The batch's scratch buffer with this index.
    Scratch(usize),
    /// The argument's own resident buffer.
    Resident,
    /// At this offset of the job's own read buffer (direct mode).
    OwnRead(u64),
    /// At this offset of the job's own read-write buffer (direct mode; read back in place).
    OwnReadWrite(u64),
}

impl Region {
    /// The offset to bind at within its buffer.
    pub(crate) fn offset(self) -> u64 {
        match self {
            Region::Read(o)
            | Region::ReadWrite(o)
            | Region::OwnRead(o)
            | Region::OwnReadWrite(o) => o,
            Region::Scratch(_) | Region::Resident => 0,
        }
    }
}

/// Offset alignment of resolved query results and of the copy that moves them.
const QUERY_ALIGN: u64 = 256;

/// Where every job's blocks live in a batch, and the batch's buffer sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Per job, the offset of its read block in the read buffer.
    pub(crate) read_base: Vec<u64>,
    /// Per job, the offset of its inout block in the read-write buffer.
    pub(crate) inout_base: Vec<u64>,
    /// Per job, the offset of its output block in the read-write buffer.
    pub(crate) output_base: Vec<u64>,
    /// Per job, the index of its first scratch buffer.
    pub(crate) scratch_first: Vec<usize>,
    /// Per direct job (its data in its own buffers), where its outputs start in its own
    /// read-write buffer; `None` for a job whose data is in the batch's buffers.
    pub(crate) own_output_at: Vec<Option<u64>>,
    /// Per fused group (see `batch/group.rs`): where its regions and tables are.
    pub(crate) group_at: Vec<GroupAt>,
    /// Sizes of the batch's scratch buffers.
    pub(crate) scratch: Vec<u64>,
    /// Bytes of the read buffer in use.
    pub(crate) read_size: u64,
    /// End of the inout blocks in the read-write buffer; `[rw_upload_end, rw_size)` is cleared.
    pub(crate) rw_upload_end: u64,
    /// Bytes of the read-write buffer in use.
    pub(crate) rw_size: u64,
    /// Offset of the timestamps (two `u64` per job) in the readback buffer, if measured.
    pub(crate) timestamps: Option<u64>,
    /// Bytes of the readback buffer: the read-write buffer, then the timestamps.
    pub(crate) readback_size: u64,
}

impl Plan {
    /// Places the blocks of `jobs` (their layouts), each block at a multiple of `align`.
    /// `own` says, per job, that its data lives elsewhere: in its own buffers (`Some(true)`,
    /// direct) or in a fused group's regions (`Some(false)`). `groups` asks, per fused group,
    /// for regions, job tables and scratch buffers (see `batch/group.rs`); a job in a group has no
    /// scratch buffers of its own.
    pub(crate) fn new(
        jobs: &[&Layout],
        own: &[Option<bool>],
        groups: &[GroupNeeds],
        align: u64,
        timestamps: bool,
    ) -> Plan {
        let elsewhere = |j: usize| own.get(j).copied().flatten().is_some();
        let blocks = |len: fn(&Layout) -> u64, cursor: &mut u64| -> Vec<u64> {
            jobs.iter()
                .enumerate()
                .map(|(j, l)| {
                    if elsewhere(j) || len(l) == 0 {
                        return *cursor; // an empty block takes no room
                    }
                    let at = align_up(*cursor, align);
                    *cursor = at.saturating_add(len(l));
                    at
                })
                .collect()
        };
        let place = |bytes: u64, cursor: &mut u64| {
            let at = align_up(*cursor, align);
            *cursor = at.saturating_add(bytes);
            at
        };
        let regions = |class: Class, cursor: &mut u64| -> Vec<Vec<Option<u64>>> {
            groups
                .iter()
                .map(|GroupNeeds { regions: rs, .. }| {
                    rs.iter()
                        .map(|&(c, bytes)| (c == class).then(|| place(bytes, cursor)))
                        .collect()
                })
                .collect()
        };
        let (mut read, mut rw) = (0u64, 0u64);
        let read_base = blocks(|l| l.read_len, &mut read);
        let group_read = regions(Class::Read, &mut read);
        let tables: Vec<Vec<u64>> = (groups.iter())
            .map(|g| g.tables.iter().map(|t| place(*t, &mut read)).collect())
            .collect();
        let inout_base = blocks(|l| l.inout_len, &mut rw);
        let group_inout = regions(Class::InOut, &mut rw);
        let rw_upload_end = align_up(rw, 4);
        let output_base = blocks(|l| l.output_len, &mut rw);
        let group_output = regions(Class::Output, &mut rw);
        let mut group_at: Vec<GroupAt> = (0..groups.len())
            .map(|g| {
                let at = (0..groups[g].regions.len())
                    .map(|r| {
                        group_read[g][r]
                            .or(group_inout[g][r])
                            .or(group_output[g][r])
                            .unwrap_or(0)
                    })
                    .collect();
                GroupAt {
                    regions: at,
                    tables: tables[g].clone(),
                    scratch: Vec::new(),
                }
            })
            .collect();
        let mut scratch_first = Vec::with_capacity(jobs.len());
        let mut scratch = Vec::new();
        for (j, l) in jobs.iter().enumerate() {
            scratch_first.push(scratch.len());
            if own.get(j).copied().flatten() != Some(false) {
                scratch.extend_from_slice(&l.scratch);
            }
        }
        for (g, at) in groups.iter().zip(&mut group_at) {
            at.scratch = (scratch.len()..scratch.len() + g.scratch.len()).collect();
            scratch.extend_from_slice(&g.scratch);
        }
        let rw_size = align_up(rw, 4);
        let timestamps = (timestamps && !jobs.is_empty()).then(|| align_up(rw_size, QUERY_ALIGN));
        let readback_size = match timestamps {
            Some(at) => at + 16 * jobs.len() as u64,
            None => rw_size,
        };
        let own_output_at = jobs
            .iter()
            .enumerate()
            .map(|(j, l)| {
                (own.get(j).copied().flatten() == Some(true)).then(|| l.own_output_at(align))
            })
            .collect();
        Plan {
            read_base,
            inout_base,
            output_base,
            scratch_first,
            own_output_at,
            group_at,
            scratch,
            read_size: align_up(read, 4),
            rw_upload_end,
            rw_size,
            timestamps,
            readback_size,
        }
    }

    /// Where job `j`'s argument in `spot` lives in the batch.
    pub(crate) fn region(&self, j: usize, spot: Spot) -> Region {
        if let Some(out) = self.own_output_at[j] {
            match spot {
                Spot::Read(o) => return Region::OwnRead(o),
                Spot::InOut(o) => return Region::OwnReadWrite(o),
                Spot::Output(o) => return Region::OwnReadWrite(out + o),
                Spot::Scratch(_) | Spot::Resident => {}
            }
        }
        match spot {
            Spot::Read(o) => Region::Read(self.read_base[j] + o),
            Spot::InOut(o) => Region::ReadWrite(self.inout_base[j] + o),
            Spot::Output(o) => Region::ReadWrite(self.output_base[j] + o),
            Spot::Scratch(i) => Region::Scratch(self.scratch_first[j] + i),
            Spot::Resident => Region::Resident,
        }
    }

    /// The largest binding offset of the batch: a dynamic offset must fit in a `u32`.
    pub(crate) fn max_offset(&self, jobs: &[&Layout]) -> u64 {
        jobs.iter()
            .enumerate()
            .flat_map(|(j, l)| l.steps.iter().flatten().map(move |p| (j, p.spot)))
            .map(|(j, spot)| self.region(j, spot).offset())
            .max()
            .unwrap_or(0)
    }

    /// Job `j`'s read-back ranges in the readback buffer: (step, binding, offset, size).
    pub(crate) fn read_back(&self, j: usize, layout: &Layout) -> Vec<(usize, u32, u64, u64)> {
        let mut out = Vec::new();
        for (s, step) in layout.steps.iter().enumerate() {
            for p in step {
                if let (
                    Spot::InOut(_) | Spot::Output(_),
                    Region::ReadWrite(at) | Region::OwnReadWrite(at),
                ) = (p.spot, self.region(j, p.spot))
                {
                    out.push((s, p.binding, at, p.size));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::compile::{Kernel, KernelSource};

    const ANY: &str = "
        @group(0) @binding(0) var<storage, read_write> a: array<u32>;
        @compute @workgroup_size(1) fn main() { a[0] = 1u; }";

    /// A job whose steps carry `args` (bindings are not checked here).
    fn job(steps: Vec<Vec<(u32, ArgData)>>) -> Job {
        let k = Kernel::compile(KernelSource::wgsl("any", ANY)).unwrap();
        let mut j = Job::new(&k);
        j.steps.clear();
        for args in steps {
            let mut step = Job::new(&k).steps.remove(0);
            step.args = args
                .into_iter()
                .map(|(binding, data)| crate::job::Arg { binding, data })
                .collect();
            j.steps.push(step);
        }
        j
    }

    fn bytes(n: usize) -> ArgData {
        ArgData::Input(vec![0; n].into())
    }

    proptest::proptest! {
        /// The one policy: a job's caller writes its data exactly when its upload buffer or
        /// its own buffers would hold 32 KiB or more, whatever mix of arguments it has.
        #[test]
        fn the_caller_writes_exactly_the_jobs_of_32_kib_or_more(
            input in 0usize..40_000,
            inout in 0usize..40_000,
            output in 0u64..40_000,
            align in proptest::sample::select(vec![4u64, 64, 256]),
        ) {
            let mut args = vec![(0, ArgData::Uniform(vec![0; 16].into()))];
            args.extend((input > 0).then(|| (1, bytes(input))));
            args.extend((inout > 0).then(|| (2, ArgData::InOut(vec![0; inout].into()))));
            args.extend((output > 0).then_some((3, ArgData::Output(output))));
            let l = Layout::of(&job(vec![args]), align);
            let biggest = l.upload_len().max(l.read_len + l.own_rw_len(align));
            let want = if biggest >= CALLER_WRITES_FROM { Writer::Caller } else { Writer::Submitter };
            proptest::prop_assert_eq!(l.writer(align), want);
        }
    }

    #[test]
    fn a_layout_separates_roles_and_aligns_offsets() {
        let j = job(vec![vec![
            (0, ArgData::Uniform(vec![0; 8].into())),
            (1, bytes(12)),
            (2, ArgData::Output(40)),
            (3, ArgData::InOut(vec![0; 4].into())),
            (4, ArgData::InOut(vec![0; 300].into())),
        ]]);
        let l = Layout::of(&j, 256);
        let spots: Vec<Spot> = l.steps[0].iter().map(|p| p.spot).collect();
        assert_eq!(
            spots,
            [
                Spot::Read(0),
                Spot::Read(256),
                Spot::Output(0),
                Spot::InOut(0),
                Spot::InOut(256)
            ]
        );
        assert_eq!((l.read_len, l.inout_len, l.output_len), (268, 556, 40));
        let uploads: Vec<(u64, usize)> = l.uploads(&j).iter().map(|(o, b)| (*o, b.len())).collect();
        assert_eq!(uploads, [(0, 8), (256, 12), (268, 4), (268 + 256, 300)]);
    }

    #[test]
    fn a_plan_places_whole_blocks_with_outputs_after_every_inout() {
        let a = Layout::of(
            &job(vec![vec![(0, bytes(12)), (1, ArgData::Output(40))]]),
            256,
        );
        let b = Layout::of(
            &job(vec![vec![
                (0, ArgData::InOut(vec![0; 300].into())),
                (1, ArgData::Output(4)),
            ]]),
            256,
        );
        let plan = Plan::new(&[&a, &b], &[], &[], 256, false);
        assert_eq!(plan.read_base, [0, 12]);
        assert_eq!(plan.inout_base, [0, 0]);
        assert_eq!(plan.rw_upload_end, 300);
        assert_eq!(plan.output_base, [512, 768]);
        assert_eq!((plan.read_size, plan.rw_size), (12, 772));
        assert_eq!(plan.region(1, b.steps[0][1].spot), Region::ReadWrite(768));
        assert_eq!(plan.read_back(0, &a), [(0, 1, 512, 40)]);
        assert_eq!(plan.read_back(1, &b), [(0, 0, 0, 300), (0, 1, 768, 4)]);
    }

    #[test]
    fn a_plan_never_overlaps_bindings_and_aligns_every_offset() {
        let layouts: Vec<Layout> = (0..50u64)
            .map(|i| {
                let args = vec![
                    (0, bytes(4 * (i as usize + 1))),
                    (1, ArgData::Output(4 * i + 4)),
                    (2, ArgData::InOut(vec![0; 8 * (i as usize % 3 + 1)].into())),
                ];
                Layout::of(&job(vec![args.clone(), args]), 64)
            })
            .collect();
        let refs: Vec<&Layout> = layouts.iter().collect();
        let plan = Plan::new(&refs, &[], &[], 64, false);
        let mut ranges = Vec::new();
        for (j, l) in layouts.iter().enumerate() {
            for p in l.steps.iter().flatten() {
                let r = plan.region(j, p.spot);
                assert_eq!(r.offset() % 64, 0, "{r:?}");
                ranges.push((
                    matches!(r, Region::Read(_)),
                    r.offset(),
                    r.offset() + p.size,
                ));
            }
        }
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].0 != w[1].0 || w[0].2 <= w[1].1, "{w:?} overlap");
        }
    }

    #[test]
    fn a_direct_job_keeps_its_data_in_its_own_buffers() {
        let staged = Layout::of(
            &job(vec![vec![(0, bytes(12)), (1, ArgData::Output(40))]]),
            256,
        );
        let own = Layout::of(
            &job(vec![vec![
                (0, bytes(8)),
                (1, ArgData::InOut(vec![0; 20].into())),
                (2, ArgData::Output(4)),
            ]]),
            256,
        );
        assert_eq!((own.own_output_at(256), own.own_rw_len(256)), (256, 260));
        assert_eq!(own.own_zeroes(256), [(256, 4)]);
        let plan = Plan::new(&[&staged, &own], &[None, Some(true)], &[], 256, false);
        // The direct job takes no room in the batch's buffers.
        assert_eq!((plan.read_size, plan.rw_size), (12, 40));
        let at = |p: usize| plan.region(1, own.steps[0][p].spot);
        assert_eq!(
            [at(0), at(1), at(2)],
            [
                Region::OwnRead(0),
                Region::OwnReadWrite(0),
                Region::OwnReadWrite(256)
            ]
        );
        assert_eq!(plan.read_back(1, &own), [(0, 1, 0, 20), (0, 2, 256, 4)]);
        assert_eq!(plan.read_back(0, &staged), [(0, 1, 0, 40)]);
    }

    #[test]
    fn scratch_is_shared_across_a_jobs_steps_but_not_between_jobs() {
        let one = job(vec![
            vec![(0, bytes(16)), (1, ArgData::Scratch { id: 7, size: 16 })],
            vec![
                (0, ArgData::Scratch { id: 7, size: 10 }),
                (1, ArgData::Output(16)),
            ],
        ]);
        let l = Layout::of(&one, 256);
        assert_eq!(l.scratch, [16]);
        let plan = Plan::new(&[&l, &l], &[], &[], 256, true);
        assert_eq!(plan.scratch, [16, 16]);
        assert_eq!(plan.region(0, l.steps[1][0].spot), Region::Scratch(0));
        assert_eq!(plan.region(1, l.steps[1][0].spot), Region::Scratch(1));
        // Timestamps follow the read-back data, aligned for query resolution.
        assert_eq!(plan.rw_size, 256 + 16);
        assert_eq!(plan.timestamps, Some(512));
        assert_eq!(plan.readback_size, 512 + 32);
    }

    #[test]
    fn a_batch_never_places_a_binding_past_a_dynamic_offsets_reach() {
        // Jobs of about 1.5 GiB of outputs (and a small input), gathered as the executor does
        // with a 4 GiB buffer cap: two fit a batch, a third does not, and every offset of
        // every batch's plan fits the u32 of a dynamic offset.
        let cap = 1u64 << 32;
        let align = 256;
        let jobs: Vec<Job> = (0..7u64)
            .map(|i| {
                job(vec![vec![
                    (0, bytes(4)),
                    (1, ArgData::Output((3 << 29) + 4 * i)),
                    (2, ArgData::Output(4 + 252 * i)),
                ]])
            })
            .collect();
        let mut batches: Vec<Vec<&Job>> = vec![Vec::new()];
        let mut used = Footprint::default();
        for j in &jobs {
            let add = Footprint::of(j, align);
            if !batches.last().unwrap().is_empty() && !used.fits(add, cap, u64::MAX) {
                batches.push(Vec::new());
                used = Footprint::default();
            }
            used = used.plus(add);
            batches.last_mut().unwrap().push(j);
        }
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 2, 2, 1]
        );
        for batch in batches {
            let layouts: Vec<Layout> = batch.iter().map(|j| Layout::of(j, align)).collect();
            let refs: Vec<&Layout> = layouts.iter().collect();
            let plan = Plan::new(&refs, &[], &[], align, false);
            assert!(plan.rw_size <= cap, "{} bytes", plan.rw_size);
            assert!(plan.max_offset(&refs) <= u64::from(u32::MAX));
        }
        // A lone job past the range is planned as it is: the executor binds it plainly.
        let huge = Layout::of(
            &job(vec![vec![
                (0, ArgData::Output(3 << 31)),
                (1, ArgData::Output(4)),
            ]]),
            align,
        );
        let plan = Plan::new(&[&huge], &[], &[], align, false);
        assert!(plan.max_offset(&[&huge]) > u64::from(u32::MAX));
    }
}
