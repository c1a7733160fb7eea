//! Fused groups: the jobs of one batch that run one fusable kernel (see `fusion.rs`) go as one
//! dispatch. Plain data, unit-tested without a device.
//!
//! A job joins a group when its kernel is fused, it has one step, no resident or scratch
//! argument, its data is written by the submitter (small jobs, see `mapped.rs` and
//! [`small_enough`]), and each of its
//! bindings is of the same class (read-only, inout, output) as the group's. Per binding, the
//! group's jobs' data is laid out contiguously at element granularity in one region of the
//! batch's read or read-write buffer (no per-job alignment padding); the job table follows the
//! read regions. The fused grid is the jobs' workgroups end to end, flattened into x (and y past
//! 65,535), so it launches no more workgroups than the jobs need, but for the last row.

use std::collections::HashMap;

use crate::fusion::{Fused, Shape, TABLE_WORDS};
use crate::job::{ArgData, Job};
use crate::layout::{Class, Layout};
use crate::mapped::DIRECT_MIN_BYTES;

/// The largest workgroup count per dimension every adapter offers.
const MAX_DIM: u64 = 65_535;

/// One fused group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    /// The batch indices of its jobs.
    pub(crate) jobs: Vec<usize>,
    /// Per binding (binding order): number, shape, class.
    pub(crate) bindings: Vec<(u32, Shape, Class)>,
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

/// Where a placed group's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Per binding: (binding, class, offset in its buffer, bytes).
    pub(crate) regions: Vec<(u32, Class, u64, u64)>,
    /// The job table: its offset in the read buffer and its words.
    pub(crate) table: (u64, Vec<u32>),
    /// The fused dispatch's workgroups.
    pub(crate) dispatch: [u32; 3],
    /// Per job of the group, per binding: (offset in its buffer, bytes).
    pub(crate) jobs: Vec<Vec<(u64, u64)>>,
}

/// The most workgroups a member may have: at least 8 such jobs fit one job table.
const MEMBER_WORKGROUPS: u64 = TABLE_WORDS as u64 / 16;
/// Whether a job is small enough to join a group (its kernel and steps aside): its data is
/// one the submitter writes anyway (under [`DIRECT_MIN_BYTES`]; a larger job's caller writes
/// its own, in parallel with other callers, and fusing it would move that copy onto the
/// submitter's one thread: measured on noop, fusing 32 KiB SAXPY jobs cut the best host
/// throughput from 1.46x plain wgpu to 1.07x, and on lavapipe it gained nothing at that size).
fn small_enough(job: &Job, layout: &Layout) -> bool {
    let bytes = layout.read_len + layout.inout_len + layout.output_len;
    let groups = job.steps.iter().map(|s| groups_of(s.workgroups)).max();
    bytes < DIRECT_MIN_BYTES && groups.unwrap_or(0) <= MEMBER_WORKGROUPS
}

/// A job's shape as a group member: its kernel, and per binding its class and bytes; `None`
/// when it cannot join a group.
fn member(job: &Job, layout: &Layout, fused: &Fused) -> Option<Vec<(Class, u64)>> {
    let [step] = job.steps.as_slice() else {
        return None;
    };
    if !small_enough(job, layout) {
        return None;
    }
    let mut by_binding: Vec<(u32, Class, u64)> = step
        .args
        .iter()
        .zip(&layout.steps[0])
        .map(|(a, p)| {
            let class = match a.data {
                ArgData::Uniform(_) | ArgData::Input(_) => Class::Read,
                ArgData::InOut(_) => Class::InOut,
                ArgData::Output(_) => Class::Output,
                ArgData::Scratch { .. } | ArgData::Resident(_) => return None,
            };
            Some((a.binding, class, p.size))
        })
        .collect::<Option<_>>()?;
    by_binding.sort_by_key(|b| b.0);
    if by_binding.len() != fused.bindings.len() {
        return None;
    }
    by_binding
        .iter()
        .zip(&fused.bindings)
        .map(|(&(b, class, size), f)| {
            // An empty slice has no element to clamp to: such a job runs alone.
            let fits = match f.shape {
                Shape::PerJob { stride } => size <= stride,
                Shape::Slice { stride, .. } => size > 0 && size.is_multiple_of(stride),
            };
            (b == f.binding && fits).then_some((class, size))
        })
        .collect()
}

/// Forms the groups of a batch: `jobs` gives, per batch index, the job, its layout and its
/// kernel's fused form when the job may be fused. Jobs of one kernel with the same classes
/// form a group while its regions stay within `max_binding` bytes and its grid within reach;
/// groups of one job are not formed.
pub(crate) fn form<'a>(
    jobs: impl Iterator<Item = (usize, &'a Job, &'a Layout, Option<&'a Fused>)>,
    max_binding: u64,
) -> Vec<Group> {
    let mut open: HashMap<(u64, Vec<Class>), Group> = HashMap::new();
    let mut done = Vec::new();
    for (j, job, layout, fused) in jobs {
        let Some(fused) = fused else { continue };
        let Some(shape) = member(job, layout, fused) else {
            continue;
        };
        let classes: Vec<Class> = shape.iter().map(|s| s.0).collect();
        let key = (job.kernel().id(), classes.clone());
        let g = open.entry(key.clone()).or_insert_with(|| Group {
            jobs: Vec::new(),
            bindings: fused
                .bindings
                .iter()
                .zip(&classes)
                .map(|(b, c)| (b.binding, b.shape, *c))
                .collect(),
            table_binding: fused.table,
            record: fused.record,
            header: fused.header,
            sizes: Vec::new(),
            workgroups: Vec::new(),
        });
        let sizes: Vec<u64> = shape.iter().map(|s| s.1).collect();
        let wg = job.steps[0].workgroups;
        if !g.jobs.is_empty() && !g.fits(&sizes, wg, max_binding) {
            let fresh = Group {
                jobs: Vec::new(),
                sizes: Vec::new(),
                workgroups: Vec::new(),
                ..g.clone()
            };
            done.push(std::mem::replace(g, fresh)); // full: this job starts the next one
        }
        g.jobs.push(j);
        g.sizes.push(sizes);
        g.workgroups.push(wg);
    }
    done.extend(open.into_values());
    done.retain(|g| g.jobs.len() > 1);
    done.sort_by_key(|g| g.jobs[0]);
    done
}

impl Group {
    /// Whether one more job of `sizes` and `wg` keeps every region within `max_binding`
    /// bytes and the fused grid within reach.
    fn fits(&self, sizes: &[u64], wg: [u32; 3], max_binding: u64) -> bool {
        let regions_fit =
            (0..self.bindings.len()).all(|b| self.region_bytes(b, sizes[b], 1) <= max_binding);
        let grid = self.total() + groups_of(wg);
        let n = self.jobs.len() as u64 + 1;
        let words = u64::from(self.header) + n * u64::from(self.record) + 2 * grid;
        regions_fit && n <= 1 << 16 && words <= u64::from(TABLE_WORDS)
    }

    /// Bytes of binding `b`'s region with `more` more jobs of `extra` bytes in it: the jobs'
    /// elements, then a zero element and a trash element (see `fusion/rebuild.rs`).
    fn region_bytes(&self, b: usize, extra: u64, more: u64) -> u64 {
        match self.bindings[b].1 {
            Shape::PerJob { stride } => (self.jobs.len() as u64 + more + 2) * stride,
            Shape::Slice { stride, .. } => {
                self.sizes.iter().map(|s| s[b]).sum::<u64>() + extra + 2 * stride
            }
        }
    }

    /// Workgroups of all the group's jobs.
    fn total(&self) -> u64 {
        self.workgroups.iter().map(|&w| groups_of(w)).sum()
    }

    /// What the group asks of the batch: per binding its class and bytes, and the table's.
    pub(crate) fn needs(&self) -> (Vec<(Class, u64)>, u64) {
        let regions = (self.bindings.iter().enumerate())
            .map(|(b, (_, _, class))| (*class, self.region_bytes(b, 0, 0)))
            .collect();
        // The table's binding is its whole uniform array, whatever it holds.
        (regions, 4 * u64::from(TABLE_WORDS))
    }

    /// Where everything lives once the plan placed the regions at `at` (in [`needs`] order)
    /// and the table at `table_at`.
    ///
    /// [`needs`]: Group::needs
    pub(crate) fn place(&self, at: &[u64], table_at: u64) -> Placed {
        let (needs, _) = self.needs();
        let regions = self
            .bindings
            .iter()
            .zip(at)
            .zip(&needs)
            .map(|(((b, _, class), &offset), &(_, bytes))| (*b, *class, offset, bytes))
            .collect();
        let total = self.total();
        let mut words = Vec::new();
        words.extend([total as u32, self.jobs.len() as u32]);
        for (b, (_, shape, _)) in self.bindings.iter().enumerate() {
            if let Shape::Slice { stride, .. } = shape {
                // The zero element's index: just past the jobs' elements.
                words.push((self.sizes.iter().map(|s| s[b]).sum::<u64>() / stride) as u32);
            }
        }
        let mut jobs = Vec::with_capacity(self.jobs.len());
        let mut cursors = vec![0u64; self.bindings.len()];
        for (k, sizes) in self.sizes.iter().enumerate() {
            words.extend(self.workgroups[k]);
            let mut mine = Vec::with_capacity(sizes.len());
            for (b, (_, shape, _)) in self.bindings.iter().enumerate() {
                let offset = match shape {
                    Shape::PerJob { stride } => k as u64 * stride,
                    Shape::Slice { stride, .. } => {
                        let base = cursors[b];
                        cursors[b] += sizes[b];
                        words.extend([(base / stride) as u32, (sizes[b] / stride) as u32]);
                        base
                    }
                };
                mine.push((at[b] + offset, sizes[b]));
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
        debug_assert!(words.len() as u64 <= self.needs().1 / 4);
        let gx = total.clamp(1, MAX_DIM);
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

/// The offset of job `k`'s record in a group's table.
#[cfg(test)]
fn record_at(g: &Group, k: usize) -> usize {
    g.header as usize + k * g.record as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Kernel, KernelSource};

    const SAXPY: &str = "
        @group(0) @binding(0) var<uniform> a: f32;
        @group(0) @binding(1) var<storage, read> x: array<f32>;
        @group(0) @binding(2) var<storage, read_write> y: array<f32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&y) { y[id.x] = a * x[id.x] + y[id.x]; }
        }";

    fn saxpy(k: &Kernel, n: usize) -> Job {
        Job::new(k)
            .uniform(0, &2.0f32)
            .input(1, &vec![1.0f32; n])
            .inout(2, &vec![1.0f32; n])
            .workgroups_for(n)
    }

    #[test]
    fn jobs_of_one_kernel_form_a_group_with_contiguous_regions() {
        let k = Kernel::compile(KernelSource::wgsl("saxpy", SAXPY)).unwrap();
        let fused = k.inner().fused.as_ref().unwrap();
        let jobs = [saxpy(&k, 100), saxpy(&k, 1), saxpy(&k, 300)];
        let layouts: Vec<Layout> = jobs.iter().map(|j| Layout::of(j, 256)).collect();
        let groups = form(
            jobs.iter()
                .zip(&layouts)
                .enumerate()
                .map(|(i, (j, l))| (i, j, l, Some(&**fused))),
            u64::MAX,
        );
        let [g] = groups.as_slice() else {
            panic!("{groups:?}")
        };
        assert_eq!(g.jobs, [0, 1, 2]);
        let (needs, table) = g.needs();
        // Each region ends with a zero and a trash element.
        assert_eq!(
            needs,
            [(Class::Read, 20), (Class::Read, 1612), (Class::InOut, 1612)]
        );
        // The table's binding is the whole uniform array.
        assert_eq!(table, 4 * u64::from(TABLE_WORDS));
        let placed = g.place(&[0, 256, 4096], 8192);
        // x: elements 0..100, 100..101, 101..401; a: one f32 per job.
        assert_eq!(placed.jobs[1], [(4, 4), (256 + 400, 4), (4096 + 400, 4)]);
        let w = &placed.table.1;
        // Workgroups in all (64 a group), jobs, the slices' zero elements.
        assert_eq!(&w[..4], [2 + 1 + 5, 3, 401, 401]);
        let r = record_at(g, 2);
        assert_eq!(&w[r..r + 7], [5, 1, 1, 101, 300, 101, 300]);
        let map = record_at(g, 3);
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
        let jobs = [saxpy(&k, 8), output, saxpy(&k, 8).then(&k), saxpy(&k, 8)];
        let layouts: Vec<Layout> = jobs.iter().map(|j| Layout::of(j, 256)).collect();
        let groups = form(
            jobs.iter()
                .zip(&layouts)
                .enumerate()
                .map(|(i, (j, l))| (i, j, l, Some(&**fused))),
            u64::MAX,
        );
        // The output job differs in class, the two-step job is not fusable: 0 and 3 group.
        assert_eq!(
            groups.iter().map(|g| g.jobs.clone()).collect::<Vec<_>>(),
            [vec![0, 3]]
        );
        // A region over the binding limit closes the group.
        let capped = form(
            jobs.iter()
                .zip(&layouts)
                .enumerate()
                .map(|(i, (j, l))| (i, j, l, Some(&**fused))),
            40,
        );
        assert!(capped.is_empty(), "{capped:?}");
    }
}
