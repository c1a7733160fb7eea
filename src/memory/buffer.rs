//! Resident buffers: data that stays on the GPU between jobs. A [`DeviceBuffer`] is made on
//! one device or copied to every device, identified by the id of the engine that made it
//! (no link back to the engine: a buffer never keeps an engine alive), and read back with a
//! built-in copy kernel ([`COPY_WGSL`]) through the device's queue like any job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

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
/// After a device loss (see
/// [`EngineBuilder::reopen_lost_devices`](crate::EngineBuilder::reopen_lost_devices)) a
/// read-only buffer ([`Engine::replicate`], [`Engine::upload_read_only_to`]) comes back on
/// the new device, from the copy the engine keeps in host memory or from another device's
/// copy; a writable one is lost there ([`Error::BufferLost`]).
///
/// [`Engine::upload_to`]: crate::Engine::upload_to
/// [`Engine::upload_read_only_to`]: crate::Engine::upload_read_only_to
/// [`Engine::replicate`]: crate::Engine::replicate
/// [`Engine::read`]: crate::Engine::read
/// [`Job::buffer`]: crate::Job::buffer
#[derive(Clone)]
pub struct DeviceBuffer {
    inner: Arc<Resident>,
}

struct Resident {
    /// Per device index, that device's copy; written only when a reopened device gets a
    /// read-only buffer back. A leaf lock, held for a clone or a store.
    copies: RwLock<Vec<Copy>>,
    size: u64,
    /// Made by `replicate`: on every device at once.
    replicated: bool,
    /// No job may write it (replicated, or uploaded read-only), so it can come back after a
    /// loss.
    read_only: bool,
    /// The bytes as uploaded, kept in host memory to restore it (read-only buffers, unless
    /// `EngineBuilder::keep_read_only_copies` is off), and the engine's count of such bytes.
    kept: Option<(Box<[u8]>, Arc<AtomicU64>)>,
    /// The id of the engine that made it.
    engine: u64,
}

/// One device's copy of a resident buffer.
#[derive(Clone, Default)]
struct Copy {
    buffer: Option<wgpu::Buffer>,
    /// The generation of the device it was made on (see `EngineBuilder::reopen_lost_devices`):
    /// a copy of an older generation was lost with its device.
    generation: u32,
}

impl Drop for Resident {
    fn drop(&mut self) {
        if let Some((bytes, tally)) = &self.kept {
            tally.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
        }
    }
}

/// How a resident buffer is made: on which devices, with what extra usage, and what may
/// bring it back after a loss.
pub(crate) struct Placing<'a> {
    pub(crate) engine: u64,
    /// How many device positions the engine has.
    pub(crate) devices: usize,
    /// Each device to hold a copy: its index, wgpu device, largest buffer and generation.
    pub(crate) on: Vec<(usize, &'a wgpu::Device, u64, u32)>,
    pub(crate) replicated: bool,
    pub(crate) read_only: bool,
    pub(crate) usage: wgpu::BufferUsages,
}

impl DeviceBuffer {
    /// Copies `bytes` (a non-zero multiple of 4) to each device of `how.on`; a read-only
    /// buffer is registered with `residents` so a reopened device gets it back.
    pub(crate) fn place(how: Placing<'_>, bytes: &[u8], residents: &Residents) -> Result<Self> {
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
        let mut copies = vec![Copy::default(); how.devices];
        for &(index, device, max, generation) in &how.on {
            let buffer = Some(create(device, bytes, max, how.usage)?);
            copies[index] = Copy { buffer, generation };
        }
        let kept = (how.read_only && residents.keep).then(|| {
            residents.bytes.fetch_add(size, Ordering::Relaxed);
            (Box::from(bytes), residents.bytes.clone())
        });
        let buffer = DeviceBuffer {
            inner: Arc::new(Resident {
                copies: RwLock::new(copies),
                size,
                replicated: how.replicated,
                read_only: how.read_only,
                kept,
                engine: how.engine,
            }),
        };
        if how.read_only {
            residents.add(&buffer);
        }
        Ok(buffer)
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// The devices that hold a copy (lost ones included: see [`Error::BufferLost`]).
    pub fn devices(&self) -> Vec<usize> {
        let copies = self.inner.copies.read();
        (0..copies.len())
            .filter(|&i| copies[i].buffer.is_some())
            .collect()
    }

    /// Whether [`Engine::replicate`](crate::Engine::replicate) made it: one copy on every
    /// device, read-only (see [`is_read_only`](Self::is_read_only)).
    pub fn is_replicated(&self) -> bool {
        self.inner.replicated
    }

    /// Whether no job may write it ([`Engine::replicate`](crate::Engine::replicate),
    /// [`Engine::upload_read_only_to`](crate::Engine::upload_read_only_to)): it binds as
    /// uniform or read-only storage only, and it comes back on a reopened device.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Device `device`'s copy as a wgpu buffer, to bind in an application's own passes on a
    /// device it shares with the engine (see
    /// [`EngineBuilder::with_device`](crate::EngineBuilder::with_device) for the ordering of
    /// the engine's writes and the application's reads); `None` where it has no copy. After
    /// the device is replaced, a read-only buffer's copy is a new wgpu buffer on the new
    /// device: ask again rather than keep the old one.
    pub fn wgpu_buffer(&self, device: usize) -> Option<wgpu::Buffer> {
        self.copy_on(device)
    }

    /// Whether its copy on device `index` exists and was made on that device's `generation`
    /// (`Some(false)`: the copy was lost with an earlier device; `None`: there is none).
    pub(crate) fn current_on(&self, index: usize, generation: u32) -> Option<bool> {
        let copies = self.inner.copies.read();
        let copy = copies.get(index)?;
        copy.buffer.as_ref()?;
        Some(copy.generation == generation)
    }

    /// Device `index`'s copy, if it has one (a clone of the handle).
    pub(crate) fn copy_on(&self, index: usize) -> Option<wgpu::Buffer> {
        let copies = self.inner.copies.read();
        copies.get(index).and_then(|c| c.buffer.clone())
    }

    /// Whether `other` is this buffer (a clone of it), not just one with the same contents.
    pub(crate) fn is_same(&self, other: &DeviceBuffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether the engine with id `engine` made this buffer.
    pub(crate) fn is_from(&self, engine: u64) -> bool {
        self.inner.engine == engine
    }

    /// The bytes kept in host memory to restore it, if any.
    pub(crate) fn kept(&self) -> Option<&[u8]> {
        self.inner.kept.as_ref().map(|(bytes, _)| &bytes[..])
    }

    /// Makes `bytes` its copy on device `index` (now of `generation`, largest buffer `max`).
    pub(crate) fn restore_on(
        &self,
        (index, device, max, generation): (usize, &wgpu::Device, u64, u32),
        bytes: &[u8],
    ) -> Result<()> {
        let buffer = Some(create(device, bytes, max, wgpu::BufferUsages::empty())?);
        let mut copies = self.inner.copies.write();
        if let Some(copy) = copies.get_mut(index) {
            *copy = Copy { buffer, generation };
        }
        Ok(())
    }
}

/// The engine's read-only resident buffers, so a reopened device gets back those it held.
pub(crate) struct Residents {
    /// Whether read-only buffers keep a host copy (`EngineBuilder::keep_read_only_copies`).
    keep: bool,
    /// Bytes of host copies kept now.
    bytes: Arc<AtomicU64>,
    /// Every read-only buffer made, while it lives; a leaf lock.
    list: Mutex<Vec<Weak<Resident>>>,
}

impl Residents {
    pub(crate) fn new(keep: bool) -> Residents {
        Residents {
            keep,
            bytes: Arc::default(),
            list: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, buffer: &DeviceBuffer) {
        let mut list = self.list.lock();
        if list.len() == list.capacity() {
            list.retain(|w| w.strong_count() > 0); // amortized: dead entries never pile up
        }
        list.push(Arc::downgrade(&buffer.inner));
    }

    /// Bytes of host memory the kept copies take now.
    pub(crate) fn kept_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The live read-only buffers that had a copy on device `index`.
    pub(crate) fn held_on(&self, index: usize) -> Vec<DeviceBuffer> {
        let list = self.list.lock();
        (list.iter())
            .filter_map(Weak::upgrade)
            .map(|inner| DeviceBuffer { inner })
            .filter(|b| b.copy_on(index).is_some())
            .collect()
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

/// A buffer on `device` (whose largest is `max` bytes) holding `bytes`, written through a mapping at creation, so no submit
/// is involved; `usage` adds to what the engine needs.
fn create(
    device: &wgpu::Device,
    bytes: &[u8],
    max: u64,
    usage: wgpu::BufferUsages,
) -> Result<wgpu::Buffer> {
    use wgpu::BufferUsages as U;
    if bytes.len() as u64 > max {
        return Err(Error::Limit {
            what: "buffer size",
            requested: bytes.len() as u64,
            limit: max,
        });
    }
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
