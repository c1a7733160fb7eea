//! The per-device buffer pool. A batch takes three buffers (uploads, read-write data, readback)
//! and gives them back when its results are read, so a steady load allocates nothing.
//!
//! Buffers are pooled by role and power-of-two size class. A pooled buffer still holds the data
//! of the batch that used it last; the batch plan never lets that reach a job: every byte a job
//! can bind is either uploaded or cleared in the same command buffer before the dispatch.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::engine::EngineInner;

/// What a pooled buffer is used for; each role has its own usage flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Uniforms and read-only storage inputs (written with `queue.write_buffer`).
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

impl Role {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            Role::Read => U::UNIFORM | U::STORAGE | U::COPY_DST,
            Role::ReadWrite => U::STORAGE | U::COPY_DST | U::COPY_SRC,
            Role::Readback => U::MAP_READ | U::COPY_DST,
            Role::Scratch => U::STORAGE | U::COPY_DST,
            Role::Resolve => U::QUERY_RESOLVE | U::COPY_SRC,
        }
    }
}

/// Smallest buffer the pool hands out: small jobs share a few size classes.
const MIN_CLASS: u64 = 64 * 1024;
/// Free buffers kept per (role, class); more are dropped so memory stays bounded.
const KEEP_PER_CLASS: usize = 4;

/// Free buffers of one device. Lives in the device's state, under the device lock.
pub(crate) struct BufferPool {
    free: HashMap<(Role, u64), Vec<wgpu::Buffer>>,
    /// The device's largest buffer: the cap on size classes.
    max_buffer_size: u64,
}

/// The size class for a request: the next power of two, at least [`MIN_CLASS`], at most `max`
/// (a request over the device's largest buffer gets its exact size and fails validation there).
pub(crate) fn size_class(size: u64, max: u64) -> u64 {
    let class = size.max(MIN_CLASS).next_power_of_two();
    if class > max { size.max(4) } else { class }
}

impl BufferPool {
    pub(crate) fn new(max_buffer_size: u64) -> Self {
        BufferPool {
            free: HashMap::new(),
            max_buffer_size,
        }
    }

    /// A buffer of at least `size` bytes for `role`, reused when one is free.
    pub(crate) fn take(&mut self, device: &wgpu::Device, role: Role, size: u64) -> wgpu::Buffer {
        let class = size_class(size, self.max_buffer_size);
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

/// Data that stays on the GPU between jobs: on one device ([`Engine::upload_to`]), or one copy
/// on every device ([`Engine::replicate`]). Bind it with [`Job::buffer`]; read it with
/// [`DeviceBuffer::read`]. Cheap to clone; the GPU memory is freed when the last clone is
/// dropped and no submitted job uses it any more.
///
/// [`Engine::upload_to`]: crate::Engine::upload_to
/// [`Engine::replicate`]: crate::Engine::replicate
/// [`Job::buffer`]: crate::Job::buffer
#[derive(Clone)]
pub struct DeviceBuffer {
    inner: Arc<Resident>,
}

struct Resident {
    /// Per device index, that device's copy.
    copies: Vec<Option<wgpu::Buffer>>,
    size: u64,
    /// For [`DeviceBuffer::read`]; weak, so buffers do not keep a dropped engine alive.
    engine: Weak<EngineInner>,
}

impl DeviceBuffer {
    pub(crate) fn new(
        copies: Vec<Option<wgpu::Buffer>>,
        size: u64,
        engine: Weak<EngineInner>,
    ) -> Self {
        DeviceBuffer {
            inner: Arc::new(Resident {
                copies,
                size,
                engine,
            }),
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// The devices that hold a copy.
    pub fn devices(&self) -> Vec<usize> {
        (0..self.inner.copies.len())
            .filter(|&i| self.inner.copies[i].is_some())
            .collect()
    }

    /// Device `index`'s copy, if it has one.
    pub(crate) fn copy_on(&self, index: usize) -> Option<&wgpu::Buffer> {
        self.inner.copies.get(index).and_then(Option::as_ref)
    }

    /// Whether `engine` made this buffer.
    pub(crate) fn is_from(&self, engine: &Arc<EngineInner>) -> bool {
        std::ptr::eq(self.inner.engine.as_ptr(), Arc::as_ptr(engine))
    }

    /// The engine that made the buffer, while it is alive.
    pub(crate) fn engine(&self) -> Option<Arc<EngineInner>> {
        self.inner.engine.upgrade()
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("size", &self.size())
            .field("devices", &self.devices())
            .finish()
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
