//! Mapped memory shared between a device's submitter and the threads that own the data, so
//! the bytes of a job are copied on the caller's thread, never on the executor's.
//!
//! - **Uploads** ([`StagingPool`]): the submitting thread takes a mapped upload buffer
//!   (`MAP_WRITE | COPY_SRC`), writes the job's uniforms, inputs and inouts into it, unmaps it
//!   and sends the job; the batch copies it into place inside its command buffer. After the
//!   batch completes the submitter maps it again (`map_async`, whose callback only sends the
//!   buffer back over a channel), and the next caller takes it. Queued jobs hold their upload
//!   buffers, so the bytes held that way are bounded (the pool budget): past it a job keeps
//!   its own data and the submitter writes its upload when its batch forms.
//! - **Readback** ([`Readback`]): a finished batch's readback buffer is mapped once; each job's
//!   reply holds an `Arc` of it, and the thread that takes the result copies its own ranges
//!   out. The last reply dropped hands the buffer back to the submitter, which unmaps and pools
//!   it.
//!
//! wgpu 30 allows this: buffer views own a clone of their buffer, are `Send + Sync`, and any
//! thread may create disjoint views of a mapped buffer; `unmap` needs every view dropped.

use std::collections::HashMap;

use parking_lot::Mutex;

/// Smallest upload buffer: small jobs share few classes.
const MIN_STAGING: u64 = 4096;

/// The size class of an upload buffer: the next power of two, at least [`MIN_STAGING`].
fn staging_class(size: u64) -> u64 {
    size.max(MIN_STAGING)
        .checked_next_power_of_two()
        .unwrap_or(size)
}

/// One device's mapped upload buffers.
pub(crate) struct StagingPool {
    device: wgpu::Device,
    /// Mapped, free buffers by class. Taken by submitting threads (one pop) and by the
    /// submitter (to file returned buffers); nothing else is taken while it is held.
    free: Mutex<Free>,
    /// Buffers mapped again after use arrive here (from `map_async` callbacks).
    returned: flume::Receiver<wgpu::Buffer>,
    returns: flume::Sender<wgpu::Buffer>,
}

struct Free {
    by_class: HashMap<u64, Vec<wgpu::Buffer>>,
    bytes: u64,
    /// Most bytes of free buffers kept.
    budget: u64,
    /// Bytes of upload buffers lent to queued jobs and not yet recycled.
    lent: u64,
    /// Most bytes lent: a deep queue gains nothing from writing its uploads early.
    lend_budget: u64,
}

impl StagingPool {
    /// A pool keeping at most `budget` bytes of free buffers and lending at most
    /// `lend_budget` bytes to queued jobs.
    pub(crate) fn new(device: wgpu::Device, budget: u64, lend_budget: u64) -> StagingPool {
        let (returns, returned) = flume::unbounded();
        StagingPool {
            device,
            free: Mutex::new(Free {
                by_class: HashMap::new(),
                bytes: 0,
                budget,
                lent: 0,
                lend_budget,
            }),
            returned,
            returns,
        }
    }

    /// A mapped upload buffer of at least `size` bytes (> 0) for a submitting thread to fill,
    /// unless the buffers lent to queued jobs already hold the budget.
    fn lend(&self, size: u64) -> Option<wgpu::Buffer> {
        let class = staging_class(size);
        {
            let mut free = self.free.lock();
            if free.lent + class > free.lend_budget {
                return None;
            }
            free.lent += class;
        }
        Some(self.take(size))
    }

    /// A mapped upload buffer of at least `size` bytes (> 0), for the calling thread to fill.
    fn take(&self, size: u64) -> wgpu::Buffer {
        let class = staging_class(size);
        {
            let mut free = self.free.lock();
            while let Ok(b) = self.returned.try_recv() {
                free.file(b);
            }
            if let Some(b) = free.by_class.get_mut(&class).and_then(Vec::pop) {
                free.bytes -= b.size();
                return b;
            }
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-batch upload"),
            size: class,
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        })
    }

    /// Maps a used upload buffer again; it returns to the pool once mapped (the callback runs
    /// inside a later poll of the device's submitter). `lent`: it was lent to a queued job.
    pub(crate) fn recycle(&self, buffer: wgpu::Buffer, lent: bool) {
        if lent {
            let mut free = self.free.lock();
            free.lent = free.lent.saturating_sub(buffer.size());
        }
        let (returns, b) = (self.returns.clone(), buffer.clone());
        buffer.map_async(wgpu::MapMode::Write, .., move |r| {
            if r.is_ok() {
                let _ = returns.send(b);
            }
        });
    }

    /// Drops every free upload buffer (the device has been idle).
    pub(crate) fn trim(&self) {
        let mut free = self.free.lock();
        while self.returned.try_recv().is_ok() {}
        free.by_class.clear();
        free.bytes = 0;
    }

    /// Bytes of free upload buffers held.
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free.lock().bytes
    }
}

impl Free {
    /// Keeps a mapped buffer if the budget allows.
    fn file(&mut self, b: wgpu::Buffer) {
        if self.bytes + b.size() <= self.budget {
            self.bytes += b.size();
            self.by_class.entry(b.size()).or_default().push(b);
        }
    }
}

/// A job's written upload buffer.
pub(crate) struct Upload {
    pub(crate) buffer: wgpu::Buffer,
    /// Lent to a queued job (counted against the budget until recycled).
    pub(crate) lent: bool,
}

impl StagingPool {
    /// Writes `job`'s uploads (`parts`, `len` bytes) into an upload buffer: one lent against
    /// the budget when `lend`, else one taken regardless. `Ok(None)` when the budget is full.
    pub(crate) fn write(
        &self,
        len: u64,
        parts: &[(u64, &[u8])],
        lend: bool,
    ) -> Result<Option<Upload>, String> {
        let buffer = if lend {
            match self.lend(len) {
                Some(b) => b,
                None => return Ok(None),
            }
        } else {
            self.take(len)
        };
        match fill(&buffer, len, parts) {
            Ok(()) => Ok(Some(Upload { buffer, lent: lend })),
            Err(e) => {
                if lend {
                    let mut free = self.free.lock();
                    free.lent = free.lent.saturating_sub(buffer.size());
                }
                Err(e)
            }
        }
    }
}

/// Writes `parts` (offset, bytes) into the mapped upload `buffer` and unmaps it.
fn fill(buffer: &wgpu::Buffer, len: u64, parts: &[(u64, &[u8])]) -> Result<(), String> {
    {
        let mut view = buffer
            .slice(..len)
            .get_mapped_range_mut()
            .map_err(|e| e.to_string())?;
        for (offset, bytes) in parts {
            let at = usize::try_from(*offset).map_err(|e| e.to_string())?;
            view.slice(at..at + bytes.len()).copy_from_slice(bytes);
        }
    }
    buffer.unmap();
    Ok(())
}

/// A finished batch's mapped readback, shared by its jobs' replies.
pub(crate) struct Readback {
    /// The whole mapped range; `None` only while dropping.
    view: Option<wgpu::BufferView>,
    buffer: wgpu::Buffer,
    /// Where the buffer goes once every reply is done with it.
    back: flume::Sender<wgpu::Buffer>,
}

impl Readback {
    /// Maps nothing: `buffer` must be mapped for reading already.
    pub(crate) fn new(
        buffer: wgpu::Buffer,
        back: flume::Sender<wgpu::Buffer>,
    ) -> Result<Readback, String> {
        let view = buffer.get_mapped_range(..).map_err(|e| e.to_string())?;
        Ok(Readback {
            view: Some(view),
            buffer,
            back,
        })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.view.as_deref().unwrap_or_default()
    }
}

impl Drop for Readback {
    fn drop(&mut self) {
        drop(self.view.take());
        let _ = self.back.send(self.buffer.clone());
    }
}
