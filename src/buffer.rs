//! Resident buffers: data that stays on the GPU between jobs.

use std::sync::{Arc, Weak};

use crate::engine::EngineInner;
use crate::error::{Error, Result, scoped};

/// A buffer on `device` holding `bytes`, for a [`DeviceBuffer`]. Written through a mapping at
/// creation, so no submit is involved.
pub(crate) fn create_resident(device: &wgpu::Device, bytes: &[u8]) -> Result<wgpu::Buffer> {
    use wgpu::BufferUsages as U;
    let (buffer, caught) = scoped(device, || {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-batch resident"),
            size: bytes.len() as u64,
            usage: U::STORAGE | U::UNIFORM | U::COPY_SRC | U::COPY_DST,
            mapped_at_creation: true,
        });
        if let Ok(mut view) = buffer.slice(..).get_mapped_range_mut() {
            view.copy_from_slice(bytes);
        }
        buffer.unmap();
        buffer
    });
    match caught {
        Some(e) => Err(Error::from(e)),
        None => Ok(buffer),
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
    /// Made by `replicate`: read-only on the GPU, so the copies never drift apart.
    replicated: bool,
    /// For [`DeviceBuffer::read`]; weak, so buffers do not keep a dropped engine alive.
    engine: Weak<EngineInner>,
}

impl DeviceBuffer {
    pub(crate) fn new(
        copies: Vec<Option<wgpu::Buffer>>,
        size: u64,
        replicated: bool,
        engine: Weak<EngineInner>,
    ) -> Self {
        DeviceBuffer {
            inner: Arc::new(Resident {
                copies,
                size,
                replicated,
                engine,
            }),
        }
    }

    /// Whether [`Engine::replicate`](crate::Engine::replicate) made it: such a buffer binds as
    /// uniform or read-only storage only, so every device's copy stays the same.
    pub fn is_replicated(&self) -> bool {
        self.inner.replicated
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
