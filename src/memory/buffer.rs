//! Resident buffers: data that stays on the GPU between jobs. A [`DeviceBuffer`] is made on
//! one device or copied to every device, identified by the id of the engine that made it
//! (no link back to the engine: a buffer never keeps an engine alive), and read back with a
//! built-in copy kernel ([`COPY_WGSL`]) through the device's queue like any job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result, scoped};

/// A process-unique engine id: what a buffer remembers of the engine that made it.
pub(crate) fn next_engine_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Copies a resident buffer (any size, as `u32` words) into an output, over a 2D grid so
/// large buffers stay within the workgroup count limit (see [`read_grid`]).
pub(crate) const COPY_WGSL: &str = "
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.y * groups.x * 256u + id.x;
    if i < arrayLength(&dst) { dst[i] = src[i]; }
}";

/// The words to copy and the workgroups of [`COPY_WGSL`] that read back `bytes` bytes, or a
/// `Limit` error past what one read can address.
pub(crate) fn read_grid(bytes: u64) -> Result<(usize, [u32; 3])> {
    let too_big = || Error::Limit {
        what: "bytes of a resident buffer to read back",
        requested: bytes,
        limit: u64::from(u32::MAX),
    };
    let words = usize::try_from(bytes / 4).map_err(|_| too_big())?;
    let groups = u32::try_from(words.div_ceil(256)).map_err(|_| too_big())?;
    let x = groups.clamp(1, 65_535);
    Ok((words, [x, groups.div_ceil(x), 1]))
}

/// Data that stays on the GPU between jobs: on one device ([`Engine::upload_to`]), or one copy
/// on every device ([`Engine::replicate`]). Bind it with [`Job::buffer`]; read it with
/// [`Engine::read`]. Cheap to clone; the GPU memory is freed when the last clone is dropped
/// and no submitted job uses it any more.
///
/// [`Engine::upload_to`]: crate::Engine::upload_to
/// [`Engine::replicate`]: crate::Engine::replicate
/// [`Engine::read`]: crate::Engine::read
/// [`Job::buffer`]: crate::Job::buffer
#[derive(Clone)]
pub struct DeviceBuffer {
    inner: Arc<Resident>,
}

struct Resident {
    /// Per device index, that device's copy.
    copies: Vec<Option<wgpu::Buffer>>,
    /// Per device index, the generation of the device its copy was made on (see
    /// `EngineBuilder::reopen_lost_devices`): a copy of an older generation is lost.
    generations: Vec<u32>,
    size: u64,
    /// Made by `replicate`: read-only on the GPU, so the copies never drift apart.
    replicated: bool,
    /// The id of the engine that made it.
    engine: u64,
}

impl DeviceBuffer {
    /// Copies `bytes` to each device of `on` (device index, its wgpu device, its largest
    /// buffer, its generation) of an engine (`engine`) with `devices` devices. `bytes` must be a non-zero
    /// multiple of 4.
    pub(crate) fn place(
        engine: u64,
        devices: usize,
        on: &[(usize, &wgpu::Device, u64, u32)],
        bytes: &[u8],
        (replicated, usage): (bool, wgpu::BufferUsages),
    ) -> Result<DeviceBuffer> {
        let size = bytes.len() as u64;
        if size == 0 {
            return Err(Error::buffer(
                "cannot upload empty data: a resident buffer needs a non-zero multiple of 4 bytes",
            ));
        }
        if !size.is_multiple_of(4) {
            return Err(Error::buffer(format!(
                "cannot upload {size} bytes: a resident buffer needs a multiple of 4 bytes"
            )));
        }
        let mut copies = vec![None; devices];
        let mut generations = vec![0; devices];
        for &(index, device, max, generation) in on {
            if size > max {
                return Err(Error::Limit {
                    what: "buffer size",
                    requested: size,
                    limit: max,
                });
            }
            copies[index] = Some(create(device, bytes, usage)?);
            generations[index] = generation;
        }
        Ok(DeviceBuffer {
            inner: Arc::new(Resident {
                copies,
                generations,
                size,
                replicated,
                engine,
            }),
        })
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

    /// Whether [`Engine::replicate`](crate::Engine::replicate) made it: such a buffer binds as
    /// uniform or read-only storage only, so every device's copy stays the same.
    pub fn is_replicated(&self) -> bool {
        self.inner.replicated
    }

    /// Device `device`'s copy as a wgpu buffer, to bind in an application's own passes on a
    /// device it shares with the engine (see
    /// [`EngineBuilder::with_device`](crate::EngineBuilder::with_device) for the ordering of
    /// the engine's writes and the application's reads); `None` where it has no copy.
    pub fn wgpu_buffer(&self, device: usize) -> Option<&wgpu::Buffer> {
        self.copy_on(device)
    }

    /// Whether its copy on device `index` exists and was made on that device's `generation`
    /// (`Some(false)`: the copy was lost with an earlier device; `None`: there is none).
    pub(crate) fn current_on(&self, index: usize, generation: u32) -> Option<bool> {
        self.copy_on(index)?;
        Some(self.inner.generations.get(index) == Some(&generation))
    }

    /// Device `index`'s copy, if it has one.
    pub(crate) fn copy_on(&self, index: usize) -> Option<&wgpu::Buffer> {
        self.inner.copies.get(index).and_then(Option::as_ref)
    }

    /// Whether `other` is this buffer (a clone of it), not just one with the same contents.
    pub(crate) fn is_same(&self, other: &DeviceBuffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether the engine with id `engine` made this buffer.
    pub(crate) fn is_from(&self, engine: u64) -> bool {
        self.inner.engine == engine
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("size", &self.size())
            .field("devices", &self.devices())
            .field("replicated", &self.is_replicated())
            .finish()
    }
}

/// A buffer on `device` holding `bytes`, written through a mapping at creation, so no submit
/// is involved; `usage` adds to what the engine needs.
fn create(device: &wgpu::Device, bytes: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
    use wgpu::BufferUsages as U;
    let (buffer, caught) = scoped(device, || {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-batch resident"),
            size: bytes.len() as u64,
            usage: U::STORAGE | U::UNIFORM | U::COPY_SRC | U::COPY_DST | usage,
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
