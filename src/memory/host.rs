//! The vocabulary of mapped host memory, shared by the pool that lends it (`device/mapped.rs`), the
//! batches that use it and the job outputs that read from it: a job's written data
//! ([`Staged`]), and read-back bytes shared by replies ([`Readback`]). Depends on wgpu alone.

/// A job's data as its submitting thread (or the submitter) wrote it. Its buffers travel
/// together for life, from the free list to the job and back, so a direct job's pair keeps
/// meeting the same bind groups.
pub(crate) enum Staged {
    /// The read block, then the inout block, in one upload buffer.
    Upload(wgpu::Buffer),
    /// The job's own read buffer and read-write buffer (each absent when empty).
    Direct {
        read: Option<wgpu::Buffer>,
        rw: Option<wgpu::Buffer>,
    },
}

/// What comes back to the submitter once every reply is done with it.
pub(crate) enum Returned {
    /// A batch's readback buffer: unmap and pool it.
    Readback(wgpu::Buffer),
    /// A direct job's own set: unmap its read-write buffer and map the set for writing again.
    Own(Staged),
}

/// Mapped read-back bytes shared by replies: a batch's readback buffer (upload mode), or one
/// direct job's own read-write buffer, which carries its read buffer along.
pub(crate) struct Readback {
    /// The whole mapped range; `None` only while dropping.
    view: Option<wgpu::BufferView>,
    /// What goes back when done; `None` only while dropping.
    returned: Option<Returned>,
    /// Where it goes (the submitter).
    back: flume::Sender<Returned>,
}

impl Readback {
    /// Views `buffer` (`returned`'s read-back buffer), which must be mapped for reading.
    pub(crate) fn new(
        returned: Returned,
        back: flume::Sender<Returned>,
    ) -> Result<Readback, String> {
        let buffer = match &returned {
            Returned::Readback(b) => b,
            Returned::Own(Staged::Direct { rw: Some(rw), .. }) => rw,
            Returned::Own(_) => return Err("a set without a read-back buffer".into()),
        };
        let view = buffer.get_mapped_range(..).map_err(|e| e.to_string())?;
        Ok(Readback {
            view: Some(view),
            returned: Some(returned),
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
        if let Some(r) = self.returned.take() {
            let _ = self.back.send(r);
        }
    }
}

/// Bytes lent against a device's lend budget (the mapped memory queued jobs hold, see the
/// device's `mapped.rs`); given back when dropped: when the job's batch forms, or the job is
/// dropped.
pub(crate) struct Loan {
    bytes: u64,
    /// The budget's count of bytes lent.
    lent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Loan {
    /// A loan of `bytes`, already counted in `lent`.
    pub(crate) fn new(bytes: u64, lent: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Loan {
        Loan { bytes, lent }
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let back = |lent: u64| Some(lent.saturating_sub(self.bytes));
        let _ = self.lent.fetch_update(AcqRel, Acquire, back);
    }
}
