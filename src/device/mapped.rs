//! Mapped memory shared between a device's submitter and the threads that own the data, so
//! the bytes of a large job are copied on its caller's thread as it submits.
//!
//! Who writes a job's data is one policy, [`Layout::writer`]. A small job's data (under
//! 32 KiB) is written by the submitter, with the rest of its batch, into one upload buffer
//! laid out like the batch ([`HostPool::write_batch`]):
//! a few KiB of copying there costs less than the buffer operations a job of its own would
//! cost; such jobs are also the ones that may fuse (see `batch/group.rs`): where their data goes
//! is known only once the batch forms. A larger job's data is written by the thread that
//! submits it ([`HostPool::write`]), one of two ways ([`Staged`]):
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
//!   the batch's replies ([`Readback`](crate::memory::host::Readback)).
//!
//! Free buffers are kept mapped for writing, so a caller never waits for a mapping. After use
//! the submitter maps them again (`map_async`, whose callback only sends the buffer back over
//! a channel). A [`Readback`](crate::memory::host::Readback) hands its buffer back when the last reply is done with it.
//!
//! Queued jobs hold the buffers their callers wrote, so those bytes are bounded (the *lend*
//! budget): past it a job keeps its own data and the submitter writes it when its batch forms.
//!
//! wgpu 30 allows this: buffer views own a clone of their buffer, are `Send + Sync`, and any
//! thread may create disjoint views of a mapped buffer; `unmap` needs every view dropped.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::batch::layout::Layout;
use crate::job::Job;
use crate::memory::host::{Loan, Staged};
use crate::memory::pool::log_linear;

/// Smallest host buffer: small jobs share few classes.
const MIN_CLASS: u64 = 4096;

/// The size class of a host buffer: log-linear as the batch pool's (at most 25% larger than
/// asked; a power of two doubled a 4 MiB input with a uniform beside it, and the pool's budget
/// then held half as many sets), at least [`MIN_CLASS`].
fn class_of(size: u64) -> u64 {
    log_linear(size, MIN_CLASS)
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
}

/// What [`HostPool::write`] gives: the written buffers, and the loan against the lend budget
/// (given back when dropped: when the job's batch forms, or the job is dropped).
pub(crate) struct Written {
    pub(crate) staged: Staged,
    pub(crate) loan: Option<Loan>,
}

/// One device's mapped host buffers.
pub(crate) struct HostPool {
    device: wgpu::Device,
    /// Whether jobs get their own directly bound buffers (see the module docs).
    pub(crate) direct: bool,
    /// Free buffers and budgets. Taken by submitting threads (a pop per buffer) and by the
    /// submitter; nothing else is taken while it is held.
    free: Mutex<Free>,
    /// Bytes of buffers lent to queued jobs (see [`Loan`]).
    lent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Most bytes lent: a deep queue gains nothing from writing its data early.
    lend_budget: u64,
    /// Sets mapped again after use arrive here (from `map_async` callbacks).
    returned: flume::Receiver<Staged>,
    returns: flume::Sender<Staged>,
}

/// Free sets by (direct, size of the first buffer, size of the second; 0 when absent).
type SetKey = (bool, u64, u64);

struct Free {
    by_class: HashMap<SetKey, Vec<Staged>>,
    bytes: u64,
    /// Most bytes of free buffers kept.
    budget: u64,
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
                drops: 0,
            }),
            lent: Default::default(),
            lend_budget,
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
        let direct = self.direct_for();
        let (first, second) = if direct {
            (layout.read_len, layout.own_rw_len(align))
        } else {
            (layout.upload_len(), 0)
        };
        let classes = [first, second].map(|len| if len > 0 { class_of(len) } else { 0 });
        let bytes = classes[0] + classes[1];
        if lend && !self.lend(bytes) {
            return Ok(None);
        }
        let loan = lend.then(|| Loan::new(bytes, self.lent.clone()));
        let staged = self.take((direct, classes[0], classes[1]));
        let filled = match &staged {
            Staged::Upload(b) => fill(b, first, &layout.uploads(job), &[]),
            Staged::Direct { read, rw } => {
                fill_opt(read.as_ref(), first, &layout.read_parts(job), &[]).and_then(|()| {
                    let zeroes = layout.own_zeroes(align);
                    fill_opt(rw.as_ref(), second, &layout.own_rw_parts(job), &zeroes)
                })
            }
        };
        filled.map(|()| Some(Written { staged, loan }))
    }

    /// Whether a job the caller writes gets its own buffers (on a direct pool) rather than an
    /// upload buffer.
    fn direct_for(&self) -> bool {
        self.direct
    }

    /// Writes a batch's small jobs' data (fused or not) (`parts`: offset, bytes) into one upload
    /// buffer of `len` bytes, laid out as the batch is, zeroes `zeroes` (offset, size) there,
    /// and unmaps it.
    pub(crate) fn write_batch(
        &self,
        len: u64,
        parts: &[(u64, &[u8])],
        zeroes: &[(u64, u64)],
    ) -> Result<wgpu::Buffer, String> {
        let Staged::Upload(buffer) = self.take((false, class_of(len), 0)) else {
            return Err("the pool gave a direct set for an upload".into());
        };
        fill(&buffer, len, parts, zeroes).map(|()| buffer)
    }

    /// Counts `bytes` as lent if the budget allows.
    fn lend(&self, bytes: u64) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let within = |lent: u64| (lent + bytes <= self.lend_budget).then_some(lent + bytes);
        self.lent.fetch_update(AcqRel, Acquire, within).is_ok()
    }

    /// A mapped set of `key`'s shape, reused or made.
    fn take(&self, key: SetKey) -> Staged {
        {
            let mut free = self.free.lock();
            while let Ok(set) = self.returned.try_recv() {
                free.file(set);
            }
            if let Some(set) = free.by_class.get_mut(&key).and_then(Vec::pop) {
                free.bytes -= set_bytes(&set);
                return set;
            }
        }
        let make = |kind: Kind, size: u64| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-batch host"),
                size,
                usage: kind.usage(),
                mapped_at_creation: true,
            })
        };
        match key {
            (true, read, rw) => Staged::Direct {
                read: (read > 0).then(|| make(Kind::OwnRead, read)),
                rw: (rw > 0).then(|| make(Kind::OwnReadWrite, rw)),
            },
            (false, size, _) => Staged::Upload(make(Kind::Upload, size.max(MIN_CLASS))),
        }
    }

    /// Maps a used (unmapped) set again; it returns to the pool once all its buffers are
    /// mapped (the callbacks run inside a later poll of the device's submitter).
    pub(crate) fn recycle(&self, set: Staged) {
        let (first, second) = match &set {
            Staged::Upload(b) => (Some(b.clone()), None),
            Staged::Direct { read, rw } => (read.clone(), rw.clone()),
        };
        let returns = self.returns.clone();
        match (first, second) {
            (Some(a), Some(b)) => {
                // Two: the set returns once both are mapped (one shared allocation).
                let shared = std::sync::Arc::new((
                    std::sync::atomic::AtomicUsize::new(2),
                    Mutex::new(Some(set)),
                ));
                for buffer in [a, b] {
                    let (returns, shared) = (returns.clone(), shared.clone());
                    buffer.map_async(wgpu::MapMode::Write, .., move |r| {
                        let (left, whole) = &*shared;
                        let last = left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1;
                        if r.is_err() {
                            whole.lock().take(); // unusable: dropped
                        } else if last && let Some(set) = whole.lock().take() {
                            let _ = returns.send(set);
                        }
                    });
                }
            }
            // One (the common case): the set rides in its callback, nothing shared.
            (Some(only), None) | (None, Some(only)) => {
                only.map_async(wgpu::MapMode::Write, .., move |r| {
                    if r.is_ok() {
                        let _ = returns.send(set);
                    }
                });
            }
            (None, None) => {} // nothing to map: an empty set is not kept
        }
    }

    /// Drops every free buffer (the device has been idle).
    pub(crate) fn trim(&self) {
        let mut free = self.free.lock();
        while let Ok(set) = self.returned.try_recv() {
            free.file(set);
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
    /// Keeps a mapped set if the budget allows.
    fn file(&mut self, set: Staged) {
        let bytes = set_bytes(&set);
        if self.bytes + bytes <= self.budget {
            self.bytes += bytes;
            self.by_class.entry(set_key(&set)).or_default().push(set);
        } else {
            self.drops += 1;
        }
    }
}

/// The free-list key of a set.
fn set_key(set: &Staged) -> SetKey {
    let size = |b: &Option<wgpu::Buffer>| b.as_ref().map_or(0, wgpu::Buffer::size);
    match set {
        Staged::Upload(b) => (false, b.size(), 0),
        Staged::Direct { read, rw } => (true, size(read), size(rw)),
    }
}

/// Bytes of a set's buffers.
fn set_bytes(set: &Staged) -> u64 {
    let (_, a, b) = set_key(set);
    a + b
}

/// [`fill`] for a buffer that may be absent (nothing to write then).
fn fill_opt(
    buffer: Option<&wgpu::Buffer>,
    len: u64,
    parts: &[(u64, &[u8])],
    zeroes: &[(u64, u64)],
) -> Result<(), String> {
    buffer.map_or(Ok(()), |b| fill(b, len, parts, zeroes))
}

/// Writes `parts` (offset, bytes) and zeroes `zeroes` (offset, size) in the first `len`
/// bytes of a mapped buffer and unmaps it.
fn fill(
    buffer: &wgpu::Buffer,
    len: u64,
    parts: &[(u64, &[u8])],
    zeroes: &[(u64, u64)],
) -> Result<(), String> {
    let at = |o: u64| usize::try_from(o).map_err(|e| e.to_string());
    {
        let mut view = buffer
            .slice(..len)
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
