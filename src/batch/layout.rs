//! Where a job's data lives: plain data, computed without a device and unit-tested.
//!
//! A job's own [`Layout`] is computed on the submitting thread: every uniform and `input`
//! argument at an aligned offset of the job's **read block**, every `inout` of its **inout
//! block**, every `output` of its **output block**, and one scratch buffer per scratch id.
//! The read and inout blocks are written back to back into an upload buffer: by the caller
//! for a job of 32 KiB or more, else by the submitter with the rest of the batch (see
//! `device/mapped.rs`).
//!
//! A batch's plan (`plan.rs`) then places whole blocks.
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::compile::{Kernel, KernelSource};

    const ANY: &str = "
        @group(0) @binding(0) var<storage, read_write> a: array<u32>;
        @compute @workgroup_size(1) fn main() { a[0] = 1u; }";

    /// A job whose steps carry `args` (bindings are not checked here).
    pub(crate) fn job(steps: Vec<Vec<(u32, ArgData)>>) -> Job {
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

    pub(crate) fn bytes(n: usize) -> ArgData {
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
}
