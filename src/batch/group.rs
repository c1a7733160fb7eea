//! Fused groups: the jobs of one batch that run the same fusable kernels (see `kernel/fusion.rs`) go
//! as one dispatch per step. Plain data, unit-tested without a device.
//!
//! A job joins a group when every step's kernel is fused, it has no resident argument, its
//! data is written by the submitter (small jobs, see `device/mapped.rs` and [`small_enough`]), and
//! its steps match the group's: the same kernels, each binding of the same class (read-only,
//! inout, output, or the same scratch buffer). Per step and binding, the group's jobs' data is
//! laid out contiguously at element granularity in one region of the batch's read or
//! read-write buffer (no per-job alignment padding); each scratch buffer of the jobs becomes
//! one region of the read-write buffer, zeroed, which every step that binds it shares, each
//! job with its own part (scratch stays per job). Each step has its own job table after the
//! read regions. A step's fused grid is the jobs' workgroups end to end, flattened into x (and
//! y past 65,535), so it launches no more workgroups than the jobs need, but for the last row.

use std::collections::HashMap;

use crate::batch::layout::{Class, GroupAt, GroupNeeds, Layout, Region, Spot, Writer};
use crate::job::{ArgData, Job};
use crate::kernel::fusion::{Fused, Shape, TABLE_WORDS};

/// The largest workgroup count per dimension every adapter offers.
const MAX_DIM: u64 = 65_535;

/// Where a member's argument of one step lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Seat {
    /// In its own region of the step, of this class.
    Own(Class),
    /// In the group's region for the jobs' scratch buffer of this index.
    Scratch(usize),
}

/// One step of a group: one dispatch of its kernel's fused pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FusedStep {
    /// Per binding (binding order): number, shape, role.
    pub(crate) bindings: Vec<(u32, Shape, Seat)>,
    pub(crate) table_binding: u32,
    /// u32 words per job record.
    pub(crate) record: u32,
    /// u32 words of the table's header.
    pub(crate) header: u32,
    /// Per job, per binding: the job's bytes.
    pub(crate) sizes: Vec<Vec<u64>>,
    /// Per job: its own workgroups.
    pub(crate) workgroups: Vec<[u32; 3]>,
}

/// One fused group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    /// The batch indices of its jobs.
    pub(crate) jobs: Vec<usize>,
    pub(crate) steps: Vec<FusedStep>,
    /// Per scratch index: its element stride (the same in every step that binds it).
    pub(crate) scratch: Vec<u64>,
    /// Per job, per scratch index: the job's bytes (a whole number of elements).
    pub(crate) scratch_sizes: Vec<Vec<u64>>,
}

/// Where one placed step's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Per binding: (binding, role, where its region is, bytes).
    pub(crate) regions: Vec<(u32, Seat, Region, u64)>,
    /// The job table: its offset in the read buffer and its words.
    pub(crate) table: (u64, Vec<u32>),
    /// The fused dispatch's workgroups.
    pub(crate) dispatch: [u32; 3],
    /// Per job of the group, per binding: (offset in its buffer, bytes).
    pub(crate) jobs: Vec<Vec<(u64, u64)>>,
}

/// The most workgroups a member may have in a step: at least 8 such jobs fit one job table.
const MEMBER_WORKGROUPS: u64 = TABLE_WORDS as u64 / 16;

/// Whether a job is small enough to join a group (its kernels aside): its data is one the
/// submitter writes ([`Writer::Submitter`], the one policy), and no step has more
/// workgroups than a member may.
fn small_enough(job: &Job, layout: &Layout, align: u64) -> bool {
    let groups = job.steps.iter().map(|s| groups_of(s.workgroups)).max();
    layout.writer(align) == Writer::Submitter && groups.unwrap_or(0) <= MEMBER_WORKGROUPS
}

/// A member's shape: per step, per binding (binding order) its role and bytes; per scratch
/// index its stride and bytes. `None` when the job cannot join a group.
type Shaped = (Vec<Vec<(Seat, u64)>>, Vec<(u64, u64)>);

/// A job's shape as a group member, `fused` giving each step's fused kernel.
fn member(job: &Job, layout: &Layout, align: u64, fused: &[&Fused]) -> Option<Shaped> {
    if !small_enough(job, layout, align) || fused.len() != job.steps.len() {
        return None;
    }
    let mut scratch: Vec<Option<u64>> = vec![None; layout.scratch.len()];
    let mut steps = Vec::with_capacity(job.steps.len());
    for ((step, places), f) in job.steps.iter().zip(&layout.steps).zip(fused) {
        let mut by_binding = Vec::with_capacity(step.args.len());
        for (a, p) in step.args.iter().zip(places) {
            let role = match (&a.data, p.spot) {
                (ArgData::Uniform(_) | ArgData::Input(_), _) => Seat::Own(Class::Read),
                (ArgData::InOut(_), _) => Seat::Own(Class::InOut),
                (ArgData::Output(_), _) => Seat::Own(Class::Output),
                (ArgData::Scratch { .. }, Spot::Scratch(i)) => Seat::Scratch(i),
                _ => return None, // resident
            };
            by_binding.push((a.binding, role, p.size));
        }
        by_binding.sort_by_key(|b| b.0);
        if by_binding.len() != f.bindings.len() {
            return None;
        }
        let mut shaped = Vec::with_capacity(by_binding.len());
        for (&(b, role, size), fb) in by_binding.iter().zip(&f.bindings) {
            // An empty slice has no element to clamp to: such a job runs alone. A scratch
            // buffer is shared by steps as a slice of one element type.
            let fits = match (fb.shape, role) {
                (Shape::PerJob { stride }, Seat::Own(_)) => size <= stride,
                (Shape::PerJob { .. }, Seat::Scratch(_)) => false,
                (Shape::Slice { stride, .. }, Seat::Scratch(i)) => {
                    let same = *scratch[i].get_or_insert(stride) == stride;
                    same && size > 0 && size.is_multiple_of(stride)
                }
                (Shape::Slice { stride, .. }, Seat::Own(_)) => {
                    size > 0 && size.is_multiple_of(stride)
                }
            };
            if b != fb.binding || !fits {
                return None;
            }
            shaped.push((role, size));
        }
        steps.push(shaped);
    }
    let scratch = (scratch.iter().zip(&layout.scratch))
        .map(|(stride, &bytes)| {
            let stride = stride.unwrap_or(4);
            (stride, bytes.div_ceil(stride) * stride)
        })
        .collect();
    Some((steps, scratch))
}

/// Forms the groups of a batch: `jobs` gives, per batch index, the job, its layout and its
/// steps' fused kernels when the job may be fused; `align` is the batch's binding alignment. Jobs of the same kernels with the same
/// roles form a group while its regions stay within `max_binding` bytes and its tables and
/// grids within reach; groups of one job are not formed.
pub(crate) fn form<'a>(
    jobs: impl Iterator<Item = (usize, &'a Job, &'a Layout, Option<Vec<&'a Fused>>)>,
    max_binding: u64,
    align: u64,
) -> Vec<Group> {
    type Key = Vec<(u64, Vec<Seat>)>;
    let mut open: HashMap<Key, Group> = HashMap::new();
    let mut done = Vec::new();
    for (j, job, layout, fused) in jobs {
        let Some(fused) = fused else { continue };
        let Some((shape, scratch)) = member(job, layout, align, &fused) else {
            continue;
        };
        let key: Key = (job.steps.iter().zip(&shape))
            .map(|(s, b)| (s.kernel.id(), b.iter().map(|r| r.0).collect()))
            .collect();
        let g = open
            .entry(key)
            .or_insert_with(|| Group::new(&fused, &shape, &scratch));
        if !g.jobs.is_empty() && !g.fits(job, &shape, &scratch, max_binding) {
            let fresh = Group::new(&fused, &shape, &scratch);
            done.push(std::mem::replace(g, fresh)); // full: this job starts the next one
        }
        g.push(j, job, shape, scratch);
    }
    done.extend(open.into_values());
    done.retain(|g| g.jobs.len() > 1);
    done.sort_by_key(|g| g.jobs[0]);
    done
}

impl Group {
    /// An empty group for jobs shaped as `shape`, with `fused` kernels.
    fn new(fused: &[&Fused], shape: &[Vec<(Seat, u64)>], scratch: &[(u64, u64)]) -> Group {
        let steps = (fused.iter().zip(shape))
            .map(|(f, roles)| FusedStep {
                bindings: (f.bindings.iter().zip(roles))
                    .map(|(b, r)| (b.binding, b.shape, r.0))
                    .collect(),
                table_binding: f.table,
                record: f.record,
                header: f.header,
                sizes: Vec::new(),
                workgroups: Vec::new(),
            })
            .collect();
        Group {
            jobs: Vec::new(),
            steps,
            scratch: scratch.iter().map(|s| s.0).collect(),
            scratch_sizes: Vec::new(),
        }
    }

    fn push(
        &mut self,
        j: usize,
        job: &Job,
        shape: Vec<Vec<(Seat, u64)>>,
        scratch: Vec<(u64, u64)>,
    ) {
        self.jobs.push(j);
        for ((step, roles), s) in self.steps.iter_mut().zip(shape).zip(&job.steps) {
            step.sizes.push(roles.into_iter().map(|r| r.1).collect());
            step.workgroups.push(s.workgroups);
        }
        self.scratch_sizes
            .push(scratch.into_iter().map(|s| s.1).collect());
    }

    /// Whether one more job keeps every region within `max_binding` bytes, and every step's
    /// table and grid within reach.
    fn fits(
        &self,
        job: &Job,
        shape: &[Vec<(Seat, u64)>],
        scratch: &[(u64, u64)],
        max_binding: u64,
    ) -> bool {
        let n = self.jobs.len() as u64 + 1;
        let steps_fit = self
            .steps
            .iter()
            .zip(shape)
            .zip(&job.steps)
            .all(|((step, roles), s)| {
                let regions = (0..step.bindings.len())
                    .all(|b| step.region_bytes(b, roles[b].1, 1) <= max_binding);
                let grid = step.total() + groups_of(s.workgroups);
                let words = u64::from(step.header) + n * u64::from(step.record) + 2 * grid;
                regions && words <= u64::from(TABLE_WORDS)
            });
        let scratch_fits =
            (0..self.scratch.len()).all(|i| self.scratch_bytes(i) + scratch[i].1 <= max_binding);
        steps_fit && scratch_fits && n <= 1 << 16
    }

    /// Bytes of scratch index `i`'s region: the jobs' parts, a zero and a trash element.
    fn scratch_bytes(&self, i: usize) -> u64 {
        self.scratch_sizes.iter().map(|s| s[i]).sum::<u64>() + 2 * self.scratch[i]
    }

    /// What the group asks of the batch: each step's own regions (in binding order), each
    /// step's table, one scratch buffer per scratch index (a buffer of its own: a step may
    /// bind it read-only beside read-write bindings of the read-write buffer, which wgpu
    /// forbids within one buffer).
    pub(crate) fn needs(&self) -> GroupNeeds {
        let mut regions = Vec::new();
        for step in &self.steps {
            for (b, &(_, _, role)) in step.bindings.iter().enumerate() {
                if let Seat::Own(class) = role {
                    regions.push((class, step.region_bytes(b, 0, 0)));
                }
            }
        }
        GroupNeeds {
            regions,
            // A table's binding is its whole uniform array, whatever it holds.
            tables: vec![4 * u64::from(TABLE_WORDS); self.steps.len()],
            scratch: (0..self.scratch.len())
                .map(|i| self.scratch_bytes(i))
                .collect(),
        }
    }

    /// Where everything lives once the plan placed the group's [`needs`] at `at`: one
    /// [`Placed`] per step.
    ///
    /// [`needs`]: Group::needs
    pub(crate) fn place(&self, at: &GroupAt) -> Vec<Placed> {
        let needs = self.needs();
        // Per job, per scratch index: its offset in the region.
        let mut cursor = vec![0u64; self.scratch.len()];
        let scratch_offsets: Vec<Vec<u64>> = (self.scratch_sizes.iter())
            .map(|sizes| {
                let offsets = sizes.iter().zip(&mut cursor).map(|(&size, c)| {
                    let at = *c;
                    *c += size;
                    at
                });
                offsets.collect()
            })
            .collect();
        let mut next = 0;
        (self.steps.iter().zip(&at.tables))
            .map(|(step, &table_at)| {
                let regions: Vec<(Region, u64)> = (step.bindings.iter())
                    .map(|&(_, _, role)| match role {
                        Seat::Own(class) => {
                            next += 1;
                            let (offset, bytes) = (at.regions[next - 1], needs.regions[next - 1].1);
                            let region = match class {
                                Class::Read => Region::Read(offset),
                                Class::InOut | Class::Output => Region::ReadWrite(offset),
                            };
                            (region, bytes)
                        }
                        Seat::Scratch(i) => (Region::Scratch(at.scratch[i]), self.scratch_bytes(i)),
                    })
                    .collect();
                step.place(&regions, &scratch_offsets, table_at)
            })
            .collect()
    }
}

impl FusedStep {
    /// Bytes of binding `b`'s own region with `more` more jobs of `extra` bytes in it: the
    /// jobs' elements, then a zero element and a trash element (see `kernel/fusion/rebuild.rs`).
    fn region_bytes(&self, b: usize, extra: u64, more: u64) -> u64 {
        match self.bindings[b].1 {
            Shape::PerJob { stride } => (self.sizes.len() as u64 + more + 2) * stride,
            Shape::Slice { stride, .. } => {
                self.sizes.iter().map(|s| s[b]).sum::<u64>() + extra + 2 * stride
            }
        }
    }

    /// Workgroups of all the jobs.
    fn total(&self) -> u64 {
        self.workgroups.iter().map(|&w| groups_of(w)).sum()
    }

    /// Places the step: `regions` per binding (where, bytes), `scratch` per job and scratch
    /// index the job's offset in that buffer, the table at `table_at`.
    fn place(&self, regions: &[(Region, u64)], scratch: &[Vec<u64>], table_at: u64) -> Placed {
        let total = self.total();
        let mut words = vec![total as u32, self.sizes.len() as u32];
        for (b, &(_, shape, role)) in self.bindings.iter().enumerate() {
            if let Shape::Slice { stride, .. } = shape {
                // The zero element's index: just past the jobs' elements.
                let used = match role {
                    Seat::Own(_) => self.sizes.iter().map(|s| s[b]).sum::<u64>(),
                    Seat::Scratch(_) => regions[b].1 - 2 * stride,
                };
                words.push((used / stride) as u32);
            }
        }
        let mut jobs = Vec::with_capacity(self.sizes.len());
        let mut cursors = vec![0u64; self.bindings.len()];
        for (k, sizes) in self.sizes.iter().enumerate() {
            words.extend(self.workgroups[k]);
            let mut mine = Vec::with_capacity(sizes.len());
            for (b, &(_, shape, role)) in self.bindings.iter().enumerate() {
                let offset = match (shape, role) {
                    (Shape::PerJob { stride }, _) => k as u64 * stride,
                    (Shape::Slice { stride, .. }, role) => {
                        let base = match role {
                            Seat::Own(_) => {
                                let base = cursors[b];
                                cursors[b] += sizes[b];
                                base
                            }
                            Seat::Scratch(i) => scratch[k][i],
                        };
                        words.extend([(base / stride) as u32, (sizes[b] / stride) as u32]);
                        base
                    }
                };
                mine.push((regions[b].0.offset() + offset, sizes[b]));
            }
            jobs.push(mine);
        }
        // The workgroup map: per workgroup of the fused grid, its job and its own id there.
        for (k, &[x, y, z]) in self.workgroups.iter().enumerate() {
            for wz in 0..z {
                for wy in 0..y {
                    for wx in 0..x {
                        words.extend([k as u32 | wz << 16, wx | wy << 16]);
                    }
                }
            }
        }
        debug_assert!(words.len() as u64 <= u64::from(TABLE_WORDS));
        let gx = total.clamp(1, MAX_DIM);
        let regions = (self.bindings.iter().zip(regions))
            .map(|(&(binding, _, role), &(region, bytes))| (binding, role, region, bytes))
            .collect();
        Placed {
            regions,
            table: (table_at, words),
            dispatch: [gx as u32, total.div_ceil(gx).max(1) as u32, 1],
            jobs,
        }
    }
}

/// Workgroups of one dispatch of `w`.
fn groups_of(w: [u32; 3]) -> u64 {
    w.iter().map(|&d| u64::from(d)).product()
}

/// The offset of job `k`'s record in a step's table.
#[cfg(test)]
fn record_at(s: &FusedStep, k: usize) -> usize {
    s.header as usize + k * s.record as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::compile::{Kernel, KernelSource};

    const SAXPY: &str = "
        @group(0) @binding(0) var<uniform> a: f32;
        @group(0) @binding(1) var<storage, read> x: array<f32>;
        @group(0) @binding(2) var<storage, read_write> y: array<f32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&y) { y[id.x] = a * x[id.x] + y[id.x]; }
        }";

    /// The groups `jobs` form (laid out at 256-byte alignment, regions of at most
    /// `max_binding` bytes), each job with the fused kernels `fused` gives it.
    fn groups_of<'a>(
        jobs: &'a [Job],
        max_binding: u64,
        fused: impl Fn(&Job) -> Vec<&'a Fused>,
    ) -> Vec<Group> {
        let layouts: Vec<Layout> = jobs.iter().map(|j| Layout::of(j, 256)).collect();
        let candidates =
            (jobs.iter().zip(&layouts).enumerate()).map(|(i, (j, l))| (i, j, l, Some(fused(j))));
        form(candidates, max_binding, 256)
    }

    fn saxpy(k: &Kernel, n: usize) -> Job {
        Job::new(k)
            .uniform(0, &2.0f32)
            .input(1, &vec![1.0f32; n])
            .inout(2, &vec![1.0f32; n])
            .workgroups_for(n)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The one policy decides fusion too: a job whose caller writes its data (see
        /// `Layout::writer`) never joins a group, whatever sizes the batch mixes.
        #[test]
        fn jobs_their_callers_write_never_fuse(
            sizes in proptest::collection::vec(1usize..6_000, 1..12),
        ) {
            let k = Kernel::compile(KernelSource::wgsl("saxpy", SAXPY)).unwrap();
            let fused = k.inner().fused.as_ref().unwrap();
            let jobs: Vec<Job> = sizes.iter().map(|&n| saxpy(&k, n)).collect();
            let groups = groups_of(&jobs, u64::MAX, |j| vec![&**fused; j.steps.len()]);
            for j in groups.iter().flat_map(|g| g.jobs.iter()) {
                let writer = Layout::of(&jobs[*j], 256).writer(256);
                proptest::prop_assert_eq!(writer, Writer::Submitter, "job of {} elements", sizes[*j]);
            }
        }
    }

    #[test]
    fn jobs_of_one_kernel_form_a_group_with_contiguous_regions() {
        let k = Kernel::compile(KernelSource::wgsl("saxpy", SAXPY)).unwrap();
        let fused = k.inner().fused.as_ref().unwrap();
        let jobs = [saxpy(&k, 100), saxpy(&k, 1), saxpy(&k, 300)];
        let groups = groups_of(&jobs, u64::MAX, |j| vec![&**fused; j.steps.len()]);
        let [g] = groups.as_slice() else {
            panic!("{groups:?}")
        };
        assert_eq!(g.jobs, [0, 1, 2]);
        let needs = g.needs();
        // Each region ends with a zero and a trash element.
        assert_eq!(
            needs.regions,
            [(Class::Read, 20), (Class::Read, 1612), (Class::InOut, 1612)]
        );
        // The table's binding is the whole uniform array.
        assert_eq!(needs.tables, [4 * u64::from(TABLE_WORDS)]);
        let at = GroupAt {
            regions: vec![0, 256, 4096],
            tables: vec![8192],
            scratch: vec![],
        };
        let [placed] = g.place(&at).try_into().unwrap();
        // x: elements 0..100, 100..101, 101..401; a: one f32 per job.
        assert_eq!(placed.jobs[1], [(4, 4), (256 + 400, 4), (4096 + 400, 4)]);
        let w = &placed.table.1;
        // Workgroups in all (64 a group), jobs, the slices' zero elements.
        assert_eq!(&w[..4], [2 + 1 + 5, 3, 401, 401]);
        let r = record_at(&g.steps[0], 2);
        assert_eq!(&w[r..r + 7], [5, 1, 1, 101, 300, 101, 300]);
        let map = record_at(&g.steps[0], 3);
        // Two words per workgroup (2 + 1 + 5 of them): job | z << 16, x | y << 16.
        assert_eq!(w.len(), map + 2 * 8);
        assert_eq!(&w[map..map + 6], [0, 0, 0, 1, 1, 0]);
        assert_eq!(&w[w.len() - 2..], [2, 4]);
        assert_eq!(placed.dispatch, [8, 1, 1]);
    }

    #[test]
    fn jobs_that_cannot_share_a_dispatch_stay_alone() {
        let k = Kernel::compile(KernelSource::wgsl("saxpy", SAXPY)).unwrap();
        let fused = k.inner().fused.as_ref().unwrap();
        let output = Job::new(&k)
            .uniform(0, &2.0f32)
            .input(1, &[1.0f32; 8])
            .output::<f32>(2, 8)
            .workgroups(1, 1, 1);
        // A second step without arguments does not match the kernel's bindings.
        let jobs = [saxpy(&k, 8), output, saxpy(&k, 8).then(&k), saxpy(&k, 8)];
        let groups = groups_of(&jobs, u64::MAX, |j| vec![&**fused; j.steps.len()]);
        // The output job differs in class, the two-step job does not fit: 0 and 3 group.
        assert_eq!(
            groups.iter().map(|g| g.jobs.clone()).collect::<Vec<_>>(),
            [vec![0, 3]]
        );
        // A region over the binding limit closes the group.
        let capped = groups_of(&jobs, 40, |j| vec![&**fused; j.steps.len()]);
        assert!(capped.is_empty(), "{capped:?}");
    }

    const DOUBLE: &str = "
        @group(0) @binding(0) var<storage, read> x: array<f32>;
        @group(0) @binding(1) var<storage, read_write> t: array<f32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&t) { t[id.x] = 2.0 * x[id.x]; }
        }";
    const SUM: &str = "
        @group(0) @binding(0) var<storage, read_write> t: array<f32>;
        @group(0) @binding(1) var<storage, read_write> y: array<f32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&y) { y[id.x] = t[id.x] + 1.0; }
        }";

    #[test]
    fn multi_step_jobs_share_scratch_regions_per_job() {
        let double = Kernel::compile(KernelSource::wgsl("double", DOUBLE)).unwrap();
        let sum = Kernel::compile(KernelSource::wgsl("sum", SUM)).unwrap();
        let fused = vec![
            &**double.inner().fused.as_ref().unwrap(),
            &**sum.inner().fused.as_ref().unwrap(),
        ];
        let job = |n: usize| {
            Job::new(&double)
                .input(0, &vec![1.0f32; n])
                .scratch::<f32>(1, 7, n)
                .workgroups_for(n)
                .then(&sum)
                .scratch::<f32>(0, 7, n)
                .output::<f32>(1, n)
                .workgroups_for(n)
        };
        let jobs = [job(10), job(3)];
        let groups = groups_of(&jobs, u64::MAX, |_| fused.clone());
        let [g] = groups.as_slice() else {
            panic!("{groups:?}")
        };
        assert_eq!(g.steps.len(), 2);
        let needs = g.needs();
        // x, then the output; one scratch buffer (13 elements, zero, trash).
        assert_eq!(needs.regions, [(Class::Read, 60), (Class::Output, 60)]);
        assert_eq!(
            (needs.tables.len(), needs.scratch.as_slice()),
            (2, &[60][..])
        );
        let at = GroupAt {
            regions: vec![0, 1024],
            tables: vec![4096, 8192],
            scratch: vec![5],
        };
        let placed = g.place(&at);
        // Both steps bind the scratch buffer; job 1's part starts at element 10 in both.
        assert_eq!(placed[0].regions[1].2, Region::Scratch(5));
        assert_eq!(placed[0].jobs[1][1], (40, 12));
        assert_eq!(placed[1].jobs[1][0], (40, 12));
        let r = record_at(&g.steps[1], 1);
        assert_eq!(&placed[1].table.1[r..r + 7], [1, 1, 1, 10, 3, 10, 3]);
        // The scratch slice's zero element is past both jobs' parts.
        assert_eq!(placed[1].table.1[2], 13);
    }
}
