//! A device's local queue of jobs taken off its request channel, served by priority.
//!
//! The executor moves queued requests from the channel into this queue (up to the engine's
//! queue capacity, so memory stays bounded) and forms each batch from it.
//!
//! **Priorities as virtual deadlines.** A job's rank is its submission time plus a handicap
//! for its level: nothing for [`Priority::High`], one aging interval
//! ([`EngineBuilder::priority_aging`](crate::EngineBuilder::priority_aging)) for `Normal`,
//! two for `Low`. The queue serves the lowest rank first (ties: the higher level). So a new
//! `High` job goes before every `Low` job submitted less than two aging intervals before it,
//! and a `Low` job that has waited longer than that goes before new `High` jobs: priority
//! ages one level per interval, gradually, instead of letting every old job jump the queue at
//! once. **No starvation:** a job's rank never changes and every later job ranks at or after
//! its own submission, so a job waits only for the finitely many jobs that rank before it.
//! Within a level jobs are served in arrival order.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::job::Priority;

/// What the queue needs to know of an entry.
pub(crate) trait Queued {
    fn priority(&self) -> Priority;
    fn submitted(&self) -> Instant;
}

/// Entries by priority level, each level in arrival order.
pub(crate) struct Pending<T> {
    /// Index 0 = Low, 1 = Normal, 2 = High.
    levels: [VecDeque<T>; 3],
    aging: Duration,
}

/// Orders ranks, `None` (beyond any instant) last.
fn later(a: Option<Instant>, b: Option<Instant>) -> std::cmp::Ordering {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (None, None) => Equal,
        (None, Some(_)) => Greater,
        (Some(_), None) => Less,
    }
}

fn level(p: Priority) -> usize {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    }
}

impl<T: Queued> Pending<T> {
    pub(crate) fn new(aging: Duration) -> Self {
        Pending {
            levels: Default::default(),
            aging,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    /// Adds a newly arrived entry at the back of its level.
    pub(crate) fn push(&mut self, item: T) {
        self.levels[level(item.priority())].push_back(item);
    }

    /// Puts back an entry taken by [`pop`](Pending::pop) that did not fit a batch.
    pub(crate) fn push_front(&mut self, item: T) {
        self.levels[level(item.priority())].push_front(item);
    }

    /// The next entry to serve: the lowest rank (see the module docs).
    pub(crate) fn pop(&mut self) -> Option<T> {
        let best = (0..3)
            .rev()
            .filter_map(|l| self.levels[l].front().map(|f| (l, self.rank(l, f))))
            .min_by(|(_, a), (_, b)| later(*a, *b))?
            .0;
        self.levels[best].pop_front()
    }

    /// When the longest-waiting entry was submitted (each level is in arrival order, so it
    /// is one of the levels' fronts).
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.levels
            .iter()
            .filter_map(|l| l.front().map(Queued::submitted))
            .min()
    }

    /// Submission time plus the level's handicap; `None` is beyond any instant.
    fn rank(&self, level: usize, item: &T) -> Option<Instant> {
        let handicap = self.aging.saturating_mul(2 - level as u32);
        item.submitted().checked_add(handicap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct E(u32, Priority, Instant);

    impl Queued for E {
        fn priority(&self) -> Priority {
            self.1
        }
        fn submitted(&self) -> Instant {
            self.2
        }
    }

    fn order(q: &mut Pending<E>) -> Vec<u32> {
        std::iter::from_fn(|| q.pop().map(|e| e.0)).collect()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let t = Instant::now();
        let mut q = Pending::new(Duration::from_secs(1));
        q.push(E(1, Priority::Low, t));
        q.push(E(2, Priority::Normal, t));
        q.push(E(3, Priority::High, t));
        q.push(E(4, Priority::Normal, t));
        q.push(E(5, Priority::High, t));
        assert_eq!(order(&mut q), [3, 5, 2, 4, 1]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn priority_ages_one_level_per_interval() {
        let t = Instant::now();
        let mut q = Pending::new(10 * MS);
        q.push(E(1, Priority::Low, t)); // rank t + 20
        q.push(E(2, Priority::Normal, t + 5 * MS)); // rank t + 15
        q.push(E(3, Priority::High, t + 14 * MS)); // rank t + 14
        q.push(E(4, Priority::High, t + 25 * MS)); // rank t + 25
        assert_eq!(order(&mut q), [3, 2, 1, 4]);
    }

    #[test]
    fn a_new_high_job_is_not_served_after_a_backlog_of_low_ones() {
        // The inversion the old rule had: every job older than the aging interval went first,
        // Low before High, so with any backlog the queue became FIFO with Low first.
        let t = Instant::now();
        let mut q = Pending::new(100 * MS);
        for i in 0..1000 {
            q.push(E(i, Priority::Low, t + i * MS / 10));
        }
        let high_at = t + 150 * MS;
        q.push(E(1000, Priority::High, high_at));
        let served = order(&mut q);
        let rank = served.iter().position(|&i| i == 1000).unwrap();
        // Only the Low jobs submitted over two intervals before it go first: none here.
        assert_eq!(rank, 0, "the high job ran at rank {rank}");
    }

    #[test]
    fn push_front_restores_the_head() {
        let t = Instant::now();
        let mut q = Pending::new(Duration::from_secs(1));
        q.push(E(1, Priority::Normal, t));
        q.push(E(2, Priority::Normal, t));
        let first = q.pop().unwrap();
        q.push_front(first);
        assert_eq!(order(&mut q), [1, 2]);
    }

    #[test]
    fn an_unbounded_aging_never_overflows() {
        let t = Instant::now();
        let mut q = Pending::new(Duration::MAX);
        q.push(E(1, Priority::Low, t));
        q.push(E(2, Priority::High, t + Duration::from_secs(3600)));
        q.push(E(3, Priority::Normal, t));
        assert_eq!(order(&mut q), [2, 3, 1]);
    }

    fn priority() -> impl Strategy<Value = Priority> {
        prop_oneof![
            Just(Priority::Low),
            Just(Priority::Normal),
            Just(Priority::High)
        ]
    }

    proptest! {
        /// Against a model: the queue serves jobs in order of (rank, higher level first,
        /// arrival), and never serves a job after a lower-priority one that has not aged past it.
        #[test]
        fn serves_by_rank_without_inversion(
            jobs in proptest::collection::vec((priority(), 0u32..500), 1..200),
            aging_ms in 0u32..200,
        ) {
            let t = Instant::now();
            let aging = aging_ms * MS;
            let mut q = Pending::new(aging);
            let mut sorted = jobs.clone();
            sorted.sort_by_key(|&(_, at)| at); // arrival order is submission order
            let entries: Vec<E> = sorted.iter().enumerate()
                .map(|(i, &(p, at))| E(i as u32, p, t + at * MS)).collect();
            for e in &entries { q.push(e.clone()); }
            let served: Vec<E> = std::iter::from_fn(|| q.pop()).collect();
            let rank = |e: &E| (e.2 + aging * (2 - level(e.1) as u32), std::cmp::Reverse(e.1), e.0);
            let mut want = entries.clone();
            want.sort_by_key(rank);
            prop_assert_eq!(served.iter().map(|e| e.0).collect::<Vec<_>>(),
                            want.iter().map(|e| e.0).collect::<Vec<_>>());
            for (i, a) in served.iter().enumerate() {
                for b in &served[i + 1..] {
                    // b was served after a: if b has the higher priority, a must have aged
                    // past it (submitted at least one interval per level earlier).
                    if b.1 > a.1 {
                        let levels = (level(b.1) - level(a.1)) as u32;
                        prop_assert!(a.2 + aging * levels <= b.2,
                            "{:?} served before {:?}", a, b);
                    }
                }
            }
        }
    }
}
