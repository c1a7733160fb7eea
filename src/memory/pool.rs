//! One device's buffer pool: the buffers a batch needs, reused so a steady load allocates
//! nothing, within a byte budget so a burst of large jobs does not keep its memory forever.
//!
//! Buffers are pooled by role and size class. Classes are log-linear (four per power of two,
//! at least [`MIN_CLASS`], so a buffer is at most 25% larger than asked) and capped at the
//! device's largest buffer, so there are few of them whatever sizes jobs ask for. Free
//! buffers are kept while their bytes fit the budget (`EngineBuilder::pool_budget`); past
//! it, the least recently returned are dropped. A device whose executor has been idle for a
//! second drops them all ([`BufferPool::trim`]).
//!
//! A pooled buffer still holds the data of the batch that used it last; the batch plan never
//! lets that reach a job: every byte a job can bind is uploaded or cleared in the same command
//! buffer before the dispatch (see `batch/mod.rs`).
//!
//! The pool belongs to its device's submitter and is used only under the submitter lock (by the
//! batch loop or the idle fast path), so it has no lock of its own.

use std::collections::HashMap;

/// What a pooled buffer is used for; each role has its own usage flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Purpose {
    /// Uniforms and read-only storage inputs (copied in from the upload buffer).
    Read,
    /// Read-write storage: in-out and output bindings.
    ReadWrite,
    /// Host-mappable copy of a batch's read-write buffer and timestamps.
    Readback,
    /// A multi-step job's GPU-only intermediate.
    Scratch,
    /// Resolved timestamp queries.
    Resolve,
}

impl Purpose {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            Purpose::Read => U::UNIFORM | U::STORAGE | U::COPY_DST,
            Purpose::ReadWrite => U::STORAGE | U::COPY_DST | U::COPY_SRC,
            Purpose::Readback => U::MAP_READ | U::COPY_DST,
            Purpose::Scratch => U::STORAGE | U::COPY_DST,
            Purpose::Resolve => U::QUERY_RESOLVE | U::COPY_SRC,
        }
    }
}

/// Smallest buffer the pool hands out: small jobs share a few size classes.
pub(crate) const MIN_CLASS: u64 = 64 * 1024;

/// The size class for a request: the next log-linear step (four per power of two), at least
/// [`MIN_CLASS`], at most `max` (a request over `max` gets its exact size and fails
/// validation where it is used).
pub(crate) fn size_class(size: u64, max: u64) -> u64 {
    if size > max {
        return size;
    }
    log_linear(size, MIN_CLASS).min(max)
}

/// The next log-linear step at or above `size` (four per power of two: at most 25% larger),
/// at least `min` (which must be 4 or more, so every step is a multiple of 4).
pub(crate) fn log_linear(size: u64, min: u64) -> u64 {
    let v = size.max(min);
    let e = 63 - v.leading_zeros(); // 2^e <= v < 2^(e+1)
    let step = 1u64 << (e - 2);
    v.div_ceil(step).saturating_mul(step)
}

/// Free buffers of one device.
pub(crate) struct BufferPool {
    /// Per (role, class), free buffers with the sequence number of their return.
    free: HashMap<(Purpose, u64), Vec<(u64, wgpu::Buffer)>>,
    /// Bytes of all free buffers.
    free_bytes: u64,
    /// Most bytes `free` may hold.
    budget: u64,
    /// The device's largest buffer: the cap on size classes.
    max_buffer_size: u64,
    /// Next return's sequence number (orders returns for eviction).
    seq: u64,
    /// Buffers dropped so far (evicted, over budget, trimmed): whoever caches references to
    /// pooled buffers forgets them when this changes.
    drops: u64,
}

impl BufferPool {
    pub(crate) fn new(max_buffer_size: u64, budget: u64) -> Self {
        BufferPool {
            free: HashMap::new(),
            free_bytes: 0,
            budget,
            max_buffer_size,
            seq: 0,
            drops: 0,
        }
    }

    /// A buffer of at least `size` bytes for `role`, reused when one is free.
    pub(crate) fn take(&mut self, device: &wgpu::Device, role: Purpose, size: u64) -> wgpu::Buffer {
        let class = size_class(size, self.max_buffer_size);
        if let Some((_, buf)) = self.free.get_mut(&(role, class)).and_then(Vec::pop) {
            self.free_bytes -= buf.size();
            return buf;
        }
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-batch pooled"),
            size: class,
            usage: role.usage(),
            mapped_at_creation: false,
        })
    }

    /// Returns a buffer that no submitted work uses any more; keeps it if the budget allows,
    /// dropping the least recently returned buffers to make room.
    pub(crate) fn give(&mut self, role: Purpose, buffer: wgpu::Buffer) {
        let size = buffer.size();
        if size > self.budget {
            self.drops += 1;
            return;
        }
        while self.free_bytes + size > self.budget && self.evict_oldest() {}
        self.seq += 1;
        self.free_bytes += size;
        self.free
            .entry((role, size))
            .or_default()
            .push((self.seq, buffer));
    }

    /// Drops the free buffer returned longest ago; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .free
            .iter()
            .filter_map(|(key, list)| list.first().map(|(seq, _)| (*seq, *key)))
            .min();
        let Some((_, key)) = oldest else {
            return false;
        };
        if let Some(list) = self.free.get_mut(&key) {
            let (_, buf) = list.remove(0);
            self.free_bytes -= buf.size();
            self.drops += 1;
            if list.is_empty() {
                self.free.remove(&key);
            }
        }
        true
    }

    /// Drops every free buffer (the device has been idle).
    pub(crate) fn trim(&mut self) {
        self.drops += self.free.values().map(|l| l.len() as u64).sum::<u64>();
        self.free.clear();
        self.free_bytes = 0;
    }

    /// Buffers dropped so far.
    pub(crate) fn drops(&self) -> u64 {
        self.drops
    }

    /// Bytes of the free buffers held.
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_log_linear_within_the_limit() {
        assert_eq!(size_class(1, 1 << 30), MIN_CLASS);
        assert_eq!(
            size_class(MIN_CLASS + 1, 1 << 30),
            MIN_CLASS + MIN_CLASS / 4
        );
        assert_eq!(size_class(3 << 20, 1 << 30), 3 << 20);
        assert_eq!(size_class((3 << 20) + 1, 1 << 30), 7 << 19);
        assert_eq!(size_class(600 << 20, 1 << 30), 640 << 20);
        assert_eq!(size_class(1000 << 20, 1000 << 20), 1000 << 20);
        assert_eq!(size_class(990 << 20, 1000 << 20), 1000 << 20);
        assert_eq!(size_class(2000 << 20, 1000 << 20), 2000 << 20);
    }

    #[test]
    fn host_classes_waste_at_most_a_quarter_and_are_word_multiples() {
        let min = 4096; // the host pool's (device/mapped.rs)
        assert_eq!(log_linear(1, min), min);
        assert_eq!(log_linear((4 << 20) + 256, min), 5 << 20); // a power of two gave 8 MiB
        for i in 0..20_000u64 {
            let size = 1 + i * i * 7919 % (1 << 34);
            let class = log_linear(size, min);
            assert!(
                class >= size && class.is_multiple_of(4),
                "{size} -> {class}"
            );
            assert!(size < min || class - size <= size / 4, "{size} -> {class}");
        }
    }

    #[test]
    fn classes_waste_at_most_a_quarter_and_stay_few() {
        let max = 3 << 30; // not a power of two: sizes near it share the capped class
        let mut classes = std::collections::HashSet::new();
        for i in 0..20_000u64 {
            let size = 1 + i * i * 7919 % max;
            let class = size_class(size, max);
            assert!(class >= size && class <= max, "{size} -> {class}");
            assert!(
                size < MIN_CLASS || class - size <= size / 4,
                "{size} -> {class}"
            );
            classes.insert(class);
        }
        assert!(classes.len() <= 4 * 32, "{} classes", classes.len());
    }
}
