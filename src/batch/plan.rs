//! The batch plan: where every job's blocks live in a batch's buffers, and the buffers'
//! sizes. Plain data, computed from the jobs' [`Layout`]s and the fused groups' needs
//! without a device, never changed by the session that encodes it, and unit-tested here.
//!
//! The plan only places whole blocks: the jobs' read blocks one after another in the batch's
//! **read** buffer; their inout blocks, then all their output blocks, in its **read-write**
//! buffer (so the outputs are one range to clear). Every block starts at a multiple of the
//! binding alignment, and every argument sits at an aligned offset within its block, so every
//! binding offset is aligned.

use crate::batch::layout::{Class, GroupAt, GroupNeeds, Layout, Region, Spot, align_up};

/// The batch's scratch buffers: each job's own (but a group member's, whose scratch lives in
/// its group's), then each group's, whose indices go into `group_at`. Returns, per job, the
/// index of its first scratch buffer, and every scratch buffer's size.
fn scratch_buffers(
    jobs: &[&Layout],
    own: &[Option<bool>],
    groups: &[GroupNeeds],
    group_at: &mut [GroupAt],
) -> (Vec<usize>, Vec<u64>) {
    let mut scratch_first = Vec::with_capacity(jobs.len());
    let mut scratch = Vec::new();
    for (j, l) in jobs.iter().enumerate() {
        scratch_first.push(scratch.len());
        if own.get(j).copied().flatten() != Some(false) {
            scratch.extend_from_slice(&l.scratch);
        }
    }
    for (g, at) in groups.iter().zip(group_at) {
        at.scratch = (scratch.len()..scratch.len() + g.scratch.len()).collect();
        scratch.extend_from_slice(&g.scratch);
    }
    (scratch_first, scratch)
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
        let places = [group_read, group_inout, group_output];
        let mut group_at: Vec<GroupAt> = (0..groups.len())
            .map(|g| GroupAt {
                regions: (0..groups[g].regions.len())
                    .map(|r| places.iter().find_map(|p| p[g][r]).unwrap_or(0))
                    .collect(),
                tables: tables[g].clone(),
                scratch: Vec::new(),
            })
            .collect();
        let (scratch_first, scratch) = scratch_buffers(jobs, own, groups, &mut group_at);
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
    use crate::batch::layout::tests::{bytes, job};
    use crate::batch::layout::{Footprint, Spot};
    use crate::job::{ArgData, Job};

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

    /// One random job's arguments: (kind 0..5, bytes).
    fn arbitrary_job(args: &[(u8, u16)]) -> Job {
        let step = args
            .iter()
            .enumerate()
            .map(|(b, &(kind, n))| {
                let n = usize::from(n) * 4 + 4;
                let data = match kind {
                    0 => ArgData::Uniform(vec![0; n.min(256)].into()),
                    1 => bytes(n),
                    2 => ArgData::InOut(vec![0; n].into()),
                    3 => ArgData::Output(n as u64),
                    _ => ArgData::Scratch {
                        id: u32::from(kind % 2),
                        size: n as u64,
                    },
                };
                (b as u32, data)
            })
            .collect();
        job(vec![step])
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever the jobs, where their data lives and what fused groups ask: every offset
        /// is aligned, every byte lies inside its buffer, no two pieces of data share a byte,
        /// inouts lie before the cleared range and outputs in it, and the timestamps after
        /// the read-write buffer.
        #[test]
        fn a_plan_keeps_every_byte_apart_aligned_and_inside(
            jobs in proptest::collection::vec(
                (proptest::collection::vec((0u8..6, 0u16..300), 0..6), proptest::option::of(proptest::bool::ANY)),
                0..10,
            ),
            groups in proptest::collection::vec(
                (proptest::collection::vec((0u8..3, 1u64..5000), 0..4), 0usize..3, 0usize..2),
                0..3,
            ),
            align in proptest::sample::select(vec![4u64, 64, 256]),
            timestamps in proptest::bool::ANY,
        ) {
            let built: Vec<Job> = jobs.iter().map(|(args, _)| arbitrary_job(args)).collect();
            let layouts: Vec<Layout> = built.iter().map(|j| Layout::of(j, align)).collect();
            let own: Vec<Option<bool>> = jobs.iter().map(|(_, o)| *o).collect();
            let classes = [Class::Read, Class::InOut, Class::Output];
            let needs: Vec<GroupNeeds> = groups
                .iter()
                .map(|(regions, tables, scratch)| GroupNeeds {
                    regions: regions.iter().map(|&(c, n)| (classes[c as usize], n * 4)).collect(),
                    tables: vec![4096; *tables],
                    scratch: vec![64; *scratch],
                })
                .collect();
            let refs: Vec<&Layout> = layouts.iter().collect();
            let plan = Plan::new(&refs, &own, &needs, align, timestamps);
            // (buffer: 0 read, 1 read-write; start; end; what)
            let mut pieces: Vec<(u8, u64, u64, String)> = Vec::new();
            for (j, l) in layouts.iter().enumerate() {
                if own[j] == Some(false) {
                    continue; // a group member: its data lives in its group's regions
                }
                for p in l.steps.iter().flatten() {
                    let (buffer, at) = match plan.region(j, p.spot) {
                        Region::Read(at) => (0, at),
                        Region::ReadWrite(at) => (1, at),
                        _ => continue, // its own buffers, a scratch buffer, a resident one
                    };
                    proptest::prop_assert_eq!(own[j], None, "job {} has its own buffers", j);
                    proptest::prop_assert_eq!(at % align, 0);
                    match p.spot {
                        Spot::InOut(_) => proptest::prop_assert!(at + p.size <= plan.rw_upload_end),
                        Spot::Output(_) => proptest::prop_assert!(at >= plan.rw_upload_end),
                        _ => {}
                    }
                    pieces.push((buffer, at, at + p.size, format!("job {j} binding {}", p.binding)));
                }
            }
            for (g, (need, at)) in needs.iter().zip(&plan.group_at).enumerate() {
                for (r, (&(class, n), &offset)) in need.regions.iter().zip(&at.regions).enumerate() {
                    proptest::prop_assert_eq!(offset % align, 0);
                    let buffer = u8::from(class != Class::Read);
                    pieces.push((buffer, offset, offset + n, format!("group {g} region {r}")));
                }
                for (t, &offset) in at.tables.iter().enumerate() {
                    proptest::prop_assert_eq!(offset % align, 0);
                    pieces.push((0, offset, offset + need.tables[t], format!("group {g} table {t}")));
                }
                proptest::prop_assert_eq!(at.scratch.len(), need.scratch.len());
                for &i in &at.scratch {
                    proptest::prop_assert_eq!(plan.scratch[i], 64);
                }
            }
            for &(buffer, _, end, ref what) in &pieces {
                let size = if buffer == 0 { plan.read_size } else { plan.rw_size };
                proptest::prop_assert!(end <= size, "{} ends at {} past {}", what, end, size);
            }
            pieces.sort();
            for w in pieces.windows(2) {
                let empty = w[0].1 == w[0].2 || w[1].1 == w[1].2;
                proptest::prop_assert!(
                    empty || w[0].0 != w[1].0 || w[0].2 <= w[1].1,
                    "{} and {} overlap", w[0].3, w[1].3
                );
            }
            if let Some(at) = plan.timestamps {
                proptest::prop_assert!(at >= plan.rw_size && at % 256 == 0);
                proptest::prop_assert!(plan.readback_size >= at + 16 * layouts.len() as u64);
            }
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
