//! A device's local queue of jobs taken off its request channel, served by priority.
//!
//! The executor moves queued requests from the channel into this queue (up to the engine's
//! queue capacity, so memory stays bounded) and forms each batch from it: highest priority
//! first, first-come first-served within a priority.
//!
//! **No starvation (aging):** a lower-priority job that has waited longer than the aging limit
//! ([`EngineBuilder::priority_aging`](crate::EngineBuilder::priority_aging), default 100 ms) is
//! served before everything else, oldest level first. So a steady stream of high-priority
//! work delays a low-priority job by at most the aging limit plus the batches already ahead.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How urgent a job is. Higher priorities are taken into the next batch first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Bulk work: runs when nothing more urgent is waiting (or once it has aged).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Latency-sensitive work: ahead of everything that has not aged.
    High,
}

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

    pub(crate) fn is_empty(&self) -> bool {
        self.levels.iter().all(VecDeque::is_empty)
    }

    /// Adds a newly arrived entry at the back of its level.
    pub(crate) fn push(&mut self, item: T) {
        self.levels[level(item.priority())].push_back(item);
    }

    /// Puts back an entry taken by [`pop`](Pending::pop) that did not fit a batch.
    pub(crate) fn push_front(&mut self, item: T) {
        self.levels[level(item.priority())].push_front(item);
    }

    /// The next entry to serve at time `now`: an aged lower-priority entry (oldest level
    /// first), else the front of the highest non-empty level.
    pub(crate) fn pop(&mut self, now: Instant) -> Option<T> {
        let aged = (0..2).find(|&l| {
            self.levels[l]
                .front()
                .is_some_and(|f| now.saturating_duration_since(f.submitted()) > self.aging)
        });
        let l = aged.or_else(|| (0..3).rev().find(|&l| !self.levels[l].is_empty()))?;
        self.levels[l].pop_front()
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) {
        self.levels.iter_mut().for_each(VecDeque::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(u32, Priority, Instant);

    impl Queued for E {
        fn priority(&self) -> Priority {
            self.1
        }
        fn submitted(&self) -> Instant {
            self.2
        }
    }

    fn order(q: &mut Pending<E>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| q.pop(now).map(|e| e.0)).collect()
    }

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let t = Instant::now();
        let mut q = Pending::new(Duration::from_secs(1));
        q.push(E(1, Priority::Low, t));
        q.push(E(2, Priority::Normal, t));
        q.push(E(3, Priority::High, t));
        q.push(E(4, Priority::Normal, t));
        q.push(E(5, Priority::High, t));
        assert_eq!(order(&mut q, t), [3, 5, 2, 4, 1]);
        assert!(q.is_empty());
    }

    #[test]
    fn aged_low_priority_jobs_go_first() {
        let t = Instant::now();
        let mut q = Pending::new(Duration::from_millis(10));
        q.push(E(1, Priority::Low, t));
        q.push(E(2, Priority::Normal, t + Duration::from_millis(5)));
        q.push(E(3, Priority::High, t + Duration::from_millis(14)));
        // At t+12ms only the low job has waited over 10 ms.
        assert_eq!(q.pop(t + Duration::from_millis(12)).unwrap().0, 1);
        assert_eq!(q.pop(t + Duration::from_millis(12)).unwrap().0, 3);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn push_front_restores_the_head() {
        let t = Instant::now();
        let mut q = Pending::new(Duration::from_secs(1));
        q.push(E(1, Priority::Normal, t));
        q.push(E(2, Priority::Normal, t));
        let first = q.pop(t).unwrap();
        q.push_front(first);
        assert_eq!(order(&mut q, t), [1, 2]);
    }
}
