//! Mapped memory shared between a device's submitter and the threads that own the data, so
//! the bytes of a job are copied on the caller's thread, never on the executor's.
//!
//! A job's data is written by the thread that submits it ([`HostPool::write`]), one of two
//! ways ([`Staged`]):
//! - **Direct**, on adapters whose storage buffers can be mapped and live in the memory the
//!   kernel reads (CPU and integrated adapters with `MAPPABLE_PRIMARY_BUFFERS`): the job gets
//!   its own read buffer and its own read-write buffer, mapped; the caller writes its
//!   uniforms and inputs into the first, its inouts into the second and zeroes its outputs
//!   there, and the batch binds them as they are. After the batch, the read-write buffer is
//!   mapped for reading and the thread that takes the result copies its bytes out of it. No
//!   command-buffer copy at all.
//! - **Upload**, elsewhere (a discrete GPU): one mapped upload buffer (`MAP_WRITE | COPY_SRC`)
//!   with the read block, then the inout block; the batch copies it into its own buffers, and
//!   copies its read-write buffer into one readback buffer, which is mapped once and shared by
//!   the batch's replies ([`Readback`]).
//!
//! Free buffers are kept mapped for writing, so a caller never waits for a mapping. After use
//! the submitter maps them again (`map_async`, whose callback only sends the buffer back over
//! a channel). A [`Readback`] hands its buffer back when the last reply is done with it.
//!
//! Queued jobs hold the buffers their callers wrote, so those bytes are bounded (the *lend*
//! budget): past it a job keeps its own data and the submitter writes it when its batch forms.
//!
//! wgpu 30 allows this: buffer views own a clone of their buffer, are `Send + Sync`, and any
//! thread may create disjoint views of a mapped buffer; `unmap` needs every view dropped.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::job::Job;
use crate::layout::Layout;

/// Smallest host buffer: small jobs share few classes.
const MIN_CLASS: u64 = 4096;

/// The size class of a host buffer: the next power of two, at least [`MIN_CLASS`].
fn class_of(size: u64) -> u64 {
    size.max(MIN_CLASS)
        .checked_next_power_of_two()
        .unwrap_or(size)
}

/// What a host buffer is for; each kind has its own usage flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Copied from into the batch's buffers.
    Upload,
    /// A job's own uniforms and inputs, bound directly.
    OwnRead,
    /// A job's own inouts and outputs, bound directly and read back in place.
    OwnReadWrite,
}

impl Kind {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            Kind::Upload => U::MAP_WRITE | U::COPY_SRC,
            Kind::OwnRead => U::MAP_WRITE | U::UNIFORM | U::STORAGE,
            Kind::OwnReadWrite => U::MAP_WRITE | U::MAP_READ | U::STORAGE,
        }
    }

    fn of(buffer: &wgpu::Buffer) -> Kind {
        let usage = buffer.usage();
        if usage.contains(wgpu::BufferUsages::MAP_READ) {
            Kind::OwnReadWrite
        } else if usage.contains(wgpu::BufferUsages::STORAGE) {
            Kind::OwnRead
        } else {
            Kind::Upload
        }
    }
}

/// A job's data as its submitting thread (or the submitter) wrote it.
pub(crate) enum Staged {
    /// The read block, then the inout block, in one upload buffer.
    Upload(wgpu::Buffer),
    /// The job's own read buffer and read-write buffer (each absent when empty).
    Direct {
        read: Option<wgpu::Buffer>,
        rw: Option<wgpu::Buffer>,
    },
}

/// What [`HostPool::write`] gives: the written buffers, and the loan against the lend budget
/// (given back when dropped: when the job's batch forms, or the job is dropped).
pub(crate) struct Written {
    pub(crate) staged: Staged,
    pub(crate) loan: Option<Loan>,
}

/// Bytes lent against a [`HostPool`]'s budget; given back on drop.
pub(crate) struct Loan {
    bytes: u64,
    pool: std::sync::Arc<HostPool>,
}

impl Drop for Loan {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock();
        free.lent = free.lent.saturating_sub(self.bytes);
    }
}

/// One device's mapped host buffers.
pub(crate) struct HostPool {
    device: wgpu::Device,
    /// Whether jobs get their own directly bound buffers (see the module docs).
    pub(crate) direct: bool,
    /// Free buffers and budgets. Taken by submitting threads (a pop per buffer) and by the
    /// submitter; nothing else is taken while it is held.
    free: Mutex<Free>,
    /// Buffers mapped again after use arrive here (from `map_async` callbacks).
    returned: flume::Receiver<wgpu::Buffer>,
    returns: flume::Sender<wgpu::Buffer>,
}

struct Free {
    by_class: HashMap<(Kind, u64), Vec<wgpu::Buffer>>,
    bytes: u64,
    /// Most bytes of free buffers kept.
    budget: u64,
    /// Bytes of buffers lent to queued jobs.
    lent: u64,
    /// Most bytes lent: a deep queue gains nothing from writing its data early.
    lend_budget: u64,
    /// Buffers dropped so far: whoever caches bind groups over them forgets them when this
    /// changes.
    drops: u64,
}

impl HostPool {
    /// A pool keeping at most `budget` bytes of free buffers and lending at most
    /// `lend_budget` bytes to queued jobs; `direct`: jobs get their own bound buffers.
    pub(crate) fn new(device: wgpu::Device, direct: bool, budget: u64, lend_budget: u64) -> Self {
        let (returns, returned) = flume::unbounded();
        HostPool {
            device,
            direct,
            free: Mutex::new(Free {
                by_class: HashMap::new(),
                bytes: 0,
                budget,
                lent: 0,
                lend_budget,
                drops: 0,
            }),
            returned,
            returns,
        }
    }

    /// Writes `job`'s data (laid out as `layout`, each own-buffer offset a multiple of
    /// `align`) into mapped buffers and unmaps them. With `lend`, the buffers count against
    /// the lend budget, and `Ok(None)` means the budget is full.
    pub(crate) fn write(
        self: &std::sync::Arc<Self>,
        job: &Job,
        layout: &Layout,
        align: u64,
        lend: bool,
    ) -> Result<Option<Written>, String> {
        let sizes = if self.direct {
            [
                (Kind::OwnRead, layout.read_len),
                (Kind::OwnReadWrite, layout.own_rw_len(align)),
            ]
        } else {
            [(Kind::Upload, layout.upload_len()), (Kind::Upload, 0)]
        };
        let bytes: u64 = sizes
            .iter()
            .filter(|s| s.1 > 0)
            .map(|s| class_of(s.1))
            .sum();
        if lend && !self.lend(bytes) {
            return Ok(None);
        }
        let loan = lend.then(|| Loan {
            bytes,
            pool: self.clone(),
        });
        let [a, b] = sizes.map(|(kind, len)| (len > 0).then(|| (self.take(kind, len), len)));
        let written = if self.direct {
            fill(a.as_ref(), &layout.read_parts(job), &[])
                .and_then(|()| {
                    fill(
                        b.as_ref(),
                        &layout.own_rw_parts(job),
                        &layout.own_zeroes(align),
                    )
                })
                .map(|()| Staged::Direct {
                    read: a.map(|(buf, _)| buf),
                    rw: b.map(|(buf, _)| buf),
                })
        } else {
            let Some((buffer, len)) = a else {
                return Err("a job without uploads has nothing to write".into());
            };
            fill(Some(&(buffer.clone(), len)), &layout.uploads(job), &[])
                .map(|()| Staged::Upload(buffer))
        };
        written.map(|staged| Some(Written { staged, loan }))
    }

    /// Counts `bytes` as lent if the budget allows.
    fn lend(&self, bytes: u64) -> bool {
        let mut free = self.free.lock();
        if free.lent + bytes > free.lend_budget {
            return false;
        }
        free.lent += bytes;
        true
    }

    /// A mapped buffer of `kind`, of at least `size` bytes (> 0).
    fn take(&self, kind: Kind, size: u64) -> wgpu::Buffer {
        let class = class_of(size);
        {
            let mut free = self.free.lock();
            while let Ok(b) = self.returned.try_recv() {
                free.file(b);
            }
            if let Some(b) = free.by_class.get_mut(&(kind, class)).and_then(Vec::pop) {
                free.bytes -= b.size();
                return b;
            }
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-batch host"),
            size: class,
            usage: kind.usage(),
            mapped_at_creation: true,
        })
    }

    /// Maps a used (unmapped) buffer again; it returns to the pool once mapped (the callback
    /// runs inside a later poll of the device's submitter).
    pub(crate) fn recycle(&self, buffer: wgpu::Buffer) {
        let (returns, b) = (self.returns.clone(), buffer.clone());
        buffer.map_async(wgpu::MapMode::Write, .., move |r| {
            if r.is_ok() {
                let _ = returns.send(b);
            }
        });
    }

    /// Drops every free buffer (the device has been idle).
    pub(crate) fn trim(&self) {
        let mut free = self.free.lock();
        while let Ok(b) = self.returned.try_recv() {
            free.file(b);
        }
        free.drops += free.by_class.values().map(|l| l.len() as u64).sum::<u64>();
        free.by_class.clear();
        free.bytes = 0;
    }

    /// Bytes of free buffers held.
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free.lock().bytes
    }

    /// Buffers dropped so far.
    pub(crate) fn drops(&self) -> u64 {
        self.free.lock().drops
    }
}

impl Free {
    /// Keeps a mapped buffer if the budget allows.
    fn file(&mut self, b: wgpu::Buffer) {
        if self.bytes + b.size() <= self.budget {
            self.bytes += b.size();
            let key = (Kind::of(&b), b.size());
            self.by_class.entry(key).or_default().push(b);
        } else {
            self.drops += 1;
        }
    }
}

/// Writes `parts` (offset, bytes) and zeroes `zeroes` (offset, size) in a mapped buffer and
/// unmaps it. Nothing to do without a buffer.
fn fill(
    buffer: Option<&(wgpu::Buffer, u64)>,
    parts: &[(u64, &[u8])],
    zeroes: &[(u64, u64)],
) -> Result<(), String> {
    let Some((buffer, len)) = buffer else {
        return Ok(());
    };
    let at = |o: u64| usize::try_from(o).map_err(|e| e.to_string());
    {
        let mut view = buffer
            .slice(..*len)
            .get_mapped_range_mut()
            .map_err(|e| e.to_string())?;
        for (offset, bytes) in parts {
            let start = at(*offset)?;
            view.slice(start..start + bytes.len())
                .copy_from_slice(bytes);
        }
        for (offset, size) in zeroes {
            let start = at(*offset)?;
            view.slice(start..start + at(*size)?).fill(0);
        }
    }
    buffer.unmap();
    Ok(())
}

/// Mapped read-back bytes shared by replies: a batch's readback buffer (upload mode), or one
/// job's own read-write buffer (direct mode).
pub(crate) struct Readback {
    /// The whole mapped range; `None` only while dropping.
    view: Option<wgpu::BufferView>,
    buffer: wgpu::Buffer,
    /// Where the buffer goes once every reply is done with it (the submitter).
    back: flume::Sender<wgpu::Buffer>,
}

impl Readback {
    /// Views `buffer`, which must be mapped for reading already.
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

/// Whether a returned read-back buffer is a job's own (to map for writing again) rather than a
/// batch's readback (to unmap and pool).
pub(crate) fn is_own(buffer: &wgpu::Buffer) -> bool {
    Kind::of(buffer) == Kind::OwnReadWrite
}
