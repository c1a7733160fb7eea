//! The per-device buffer pool. A batch takes three buffers (uploads, read-write data, readback)
//! and gives them back when its results are read, so a steady load allocates nothing.
//!
//! Buffers are pooled by role and power-of-two size class. A pooled buffer still holds the data
//! of the batch that used it last; the batch plan never lets that reach a job: every byte a job
//! can bind is either uploaded or cleared in the same command buffer before the dispatch.

use std::collections::HashMap;

/// What a pooled buffer is used for; each role has its own usage flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Uniforms and read-only storage inputs (written with `queue.write_buffer`).
    Read,
    /// Read-write storage: in-out and output bindings.
    ReadWrite,
    /// Host-mappable copy of a batch's read-write buffer.
    Readback,
}

impl Role {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            Role::Read => U::UNIFORM | U::STORAGE | U::COPY_DST,
            Role::ReadWrite => U::STORAGE | U::COPY_DST | U::COPY_SRC,
            Role::Readback => U::MAP_READ | U::COPY_DST,
        }
    }
}

/// Smallest buffer the pool hands out: small jobs share a few size classes.
const MIN_CLASS: u64 = 64 * 1024;
/// Free buffers kept per (role, class); more are dropped so memory stays bounded.
const KEEP_PER_CLASS: usize = 4;

/// Free buffers of one device. Lives in the device's state, under the device lock.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<(Role, u64), Vec<wgpu::Buffer>>,
}

/// The size class for a request: the next power of two, at least [`MIN_CLASS`], at most `max`
/// (a request over the device's largest buffer gets its exact size and fails validation there).
pub(crate) fn size_class(size: u64, max: u64) -> u64 {
    let class = size.max(MIN_CLASS).next_power_of_two();
    if class > max { size.max(4) } else { class }
}

impl BufferPool {
    /// A buffer of at least `size` bytes for `role`, reused when one is free.
    pub(crate) fn take(&mut self, device: &wgpu::Device, role: Role, size: u64) -> wgpu::Buffer {
        let class = size_class(size, device.limits().max_buffer_size);
        if let Some(buf) = self.free.get_mut(&(role, class)).and_then(Vec::pop) {
            return buf;
        }
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-batch pooled"),
            size: class,
            usage: role.usage(),
            mapped_at_creation: false,
        })
    }

    /// Returns a buffer that no submitted work uses any more.
    pub(crate) fn give(&mut self, role: Role, buffer: wgpu::Buffer) {
        let list = self.free.entry((role, buffer.size())).or_default();
        if list.len() < KEEP_PER_CLASS {
            list.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_powers_of_two_within_the_limit() {
        assert_eq!(size_class(1, 1 << 30), MIN_CLASS);
        assert_eq!(size_class(MIN_CLASS + 1, 1 << 30), 2 * MIN_CLASS);
        assert_eq!(size_class(3 << 20, 1 << 30), 4 << 20);
        assert_eq!(size_class(600 << 20, 1 << 30), 1 << 30);
        assert_eq!(size_class(700 << 20, 1000 << 20), 700 << 20);
    }
}
