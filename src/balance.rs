//! Device choice: which device a job goes to. Reads atomics (and each channel's length), so
//! it never blocks.
//!
//! Whatever the rule, devices whose request queue has room come first: the rule chooses
//! among them, and among all only when every one is full (then `submit` blocks on the one
//! it prefers and `try_submit` answers `QueueFull`).
//!
//! [`Balance::LeastOutstanding`] (the default) sends a job to the device with the fewest jobs
//! submitted and not yet resolved. Under load this already adapts to speed: a slower device
//! resolves fewer jobs, keeps more outstanding, and is chosen less.
//!
//! [`Balance::Weighted`] also weighs each device by its measured cost per job: the device
//! records, per batch, the time the device spent on it (from the later of the start of its
//! encoding and the previous batch's completion, to its completion) divided by its jobs, as a
//! moving average. A job goes where it would finish soonest: the least
//! `(outstanding jobs + 1) x cost per job`. A device with no measurement yet counts as the
//! cheapest measured one, so it gets work and gets measured. This helps most when few jobs are
//! outstanding and the adapters differ a lot in speed (an integrated GPU beside a discrete one).
//!
//! Why least-outstanding is the default: on the development machine (lavapipe Vulkan and
//! llvmpipe GL sharing 2 cores, so nearly equal in speed and contending with each other), a
//! mixed load ran at 0.81-1.01x (five runs) with `Weighted` of what it did with `LeastOutstanding`, because
//! each adapter's measured cost includes the time the other one takes from it
//! (`cargo bench --bench throughput -- balance`). `RoundRobin` is worst (0.67-0.98x).

/// How the engine spreads jobs over devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Least `(outstanding + 1) x measured cost per job`: weighs devices by their speed.
    Weighted,
    /// Fewest outstanding jobs (which, under load, follows each device's speed).
    #[default]
    LeastOutstanding,
    /// Each device in turn.
    RoundRobin,
}

/// What choice needs to know of one eligible device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) index: usize,
    pub(crate) outstanding: u64,
    /// Measured nanoseconds per job; 0 when not measured yet.
    pub(crate) cost_ns: u64,
    /// Whether its request queue has room now.
    pub(crate) room: bool,
}

impl Balance {
    /// The chosen device among `candidates` (eligible and usable, in device order): by the
    /// rule among those whose queue has room, and among all only when none has (a full
    /// device would block `submit` and refuse `try_submit` while another could take the job).
    /// `turn` is a counter that rotates ties and round-robin.
    pub(crate) fn pick(self, candidates: &[Candidate], turn: usize) -> Option<usize> {
        if candidates.iter().any(|c| c.room) && candidates.iter().any(|c| !c.room) {
            let roomy: Vec<Candidate> = candidates.iter().copied().filter(|c| c.room).collect();
            return self.pick_among(&roomy, turn);
        }
        self.pick_among(candidates, turn)
    }

    fn pick_among(self, candidates: &[Candidate], turn: usize) -> Option<usize> {
        let n = candidates.len();
        let rotated = (0..n).map(|k| &candidates[(turn + k) % n.max(1)]);
        let chosen = match self {
            Balance::RoundRobin => candidates.get(turn % n.max(1)),
            Balance::LeastOutstanding => rotated.min_by_key(|c| c.outstanding),
            Balance::Weighted => {
                let floor = candidates
                    .iter()
                    .map(|c| c.cost_ns)
                    .filter(|&c| c > 0)
                    .min()
                    .unwrap_or(1);
                rotated.min_by_key(|c| {
                    (c.outstanding + 1).saturating_mul(if c.cost_ns == 0 {
                        floor
                    } else {
                        c.cost_ns
                    })
                })
            }
        };
        chosen.map(|c| c.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, outstanding: u64, cost_ns: u64) -> Candidate {
        Candidate {
            index,
            outstanding,
            cost_ns,
            room: true,
        }
    }

    proptest::proptest! {
        /// Whatever the rule and the load, a device with room is chosen while there is one.
        #[test]
        fn a_full_device_is_chosen_only_when_every_one_is_full(
            devices in proptest::collection::vec((0u64..50, 0u64..1000, proptest::bool::ANY), 1..6),
            turn in 0usize..100,
        ) {
            let candidates: Vec<Candidate> = devices
                .iter()
                .enumerate()
                .map(|(index, &(outstanding, cost_ns, room))| Candidate { index, outstanding, cost_ns, room })
                .collect();
            for rule in [Balance::Weighted, Balance::LeastOutstanding, Balance::RoundRobin] {
                let chosen = rule.pick(&candidates, turn).expect("one is chosen");
                let any_room = candidates.iter().any(|c| c.room);
                proptest::prop_assert!(!any_room || candidates[chosen].room, "{:?}", rule);
            }
        }
    }

    #[test]
    fn weighted_prefers_the_device_that_finishes_first() {
        // Device 1 is four times slower: it should get a job only once device 0 has 4x its queue.
        let fast_busy = [c(0, 6, 100), c(1, 1, 400)];
        assert_eq!(Balance::Weighted.pick(&fast_busy, 0), Some(0));
        let fast_busier = [c(0, 9, 100), c(1, 1, 400)];
        assert_eq!(Balance::Weighted.pick(&fast_busier, 0), Some(1));
        assert_eq!(Balance::LeastOutstanding.pick(&fast_busy, 0), Some(1));
    }

    #[test]
    fn unmeasured_devices_count_as_the_cheapest() {
        assert_eq!(
            Balance::Weighted.pick(&[c(0, 3, 100), c(1, 1, 0)], 0),
            Some(1)
        );
        assert_eq!(
            Balance::Weighted.pick(&[c(0, 0, 0), c(1, 0, 0)], 1),
            Some(1)
        );
    }

    #[test]
    fn round_robin_takes_turns_and_nothing_gives_none() {
        let all = [c(0, 9, 1), c(2, 0, 1)];
        assert_eq!(Balance::RoundRobin.pick(&all, 0), Some(0));
        assert_eq!(Balance::RoundRobin.pick(&all, 1), Some(2));
        assert_eq!(Balance::Weighted.pick(&[], 3), None);
    }
}
