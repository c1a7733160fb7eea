//! The engine's resident buffers: uploads (to one device, read-only, or to every device),
//! reads, and which devices a job's buffers allow.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Engine;
use crate::device::DeviceCore;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::memory::buffer::{DeviceBuffer, Placing, read_grid};

impl Engine {
    /// Per device, whether it holds every resident buffer `job` binds (`None`: the job binds
    /// none, so every device does); an error when no device does, a buffer comes from
    /// another engine, or its only copies were lost with their devices.
    pub(super) fn eligible(
        &self,
        job: &Job,
        cores: &[Arc<DeviceCore>],
    ) -> Result<Option<Vec<bool>>> {
        if !job
            .args()
            .any(|a| matches!(a.data, crate::job::ArgData::Resident(_)))
        {
            return Ok(None);
        }
        let mut eligible = vec![true; cores.len()];
        for arg in job.args() {
            let crate::job::ArgData::Resident(buffer) = &arg.data else {
                continue;
            };
            let label = job.kernel().label();
            if !buffer.is_from(self.inner.id) {
                return Err(Error::binding(
                    label,
                    arg.binding,
                    "the buffer belongs to another engine",
                ));
            }
            let mut lost = None;
            for (i, e) in eligible.iter_mut().enumerate() {
                let current = buffer.current_on(i, cores[i].info.generation);
                if current == Some(false) {
                    lost = Some(i);
                }
                *e &= current == Some(true);
            }
            if !eligible.contains(&true) {
                if let Some(device) = lost {
                    return Err(Error::BufferLost { device });
                }
                let problem = format!(
                    "the buffer is on devices {:?}, which hold none of the job's other buffers",
                    buffer.devices()
                );
                return Err(Error::binding(label, arg.binding, problem));
            }
        }
        Ok(Some(eligible))
    }

    /// Copies `data` to device `device`, where it stays until the last clone of the returned
    /// buffer is dropped (and no job uses it).
    pub fn upload_to<T: bytemuck::Pod>(&self, device: usize, data: &[T]) -> Result<DeviceBuffer> {
        let core = self.core(device)?;
        let bytes = bytemuck::cast_slice(data);
        self.place(&[core], bytes, Kind::Writable, wgpu::BufferUsages::empty())
    }

    /// Like [`upload_to`](Engine::upload_to), for data no job will write: it binds as uniform
    /// or read-only storage only ([`Error::Binding`] on a `read_write` binding), and when the
    /// device is lost and reopened it comes back on the new device, from a copy the engine
    /// keeps in host memory (its size in bytes, once; see
    /// [`EngineBuilder::keep_read_only_copies`](crate::EngineBuilder::keep_read_only_copies)
    /// and [`EngineStats::kept_copy_bytes`](crate::EngineStats::kept_copy_bytes)).
    pub fn upload_read_only_to<T: bytemuck::Pod>(
        &self,
        device: usize,
        data: &[T],
    ) -> Result<DeviceBuffer> {
        let core = self.core(device)?;
        let bytes = bytemuck::cast_slice(data);
        self.place(&[core], bytes, Kind::ReadOnly, wgpu::BufferUsages::empty())
    }

    /// Like [`upload_to`](Engine::upload_to), with extra `usage` (`VERTEX`, `INDEX`,
    /// `INDIRECT`, ...), so an application that shares the device (see
    /// [`EngineBuilder::with_device`](crate::EngineBuilder::with_device)) can use the buffer in
    /// its own passes ([`DeviceBuffer::wgpu_buffer`]). A usage wgpu does not allow beside
    /// storage (`MAP_READ` on most adapters) is an [`Error::Wgpu`].
    pub fn upload_with_usage<T: bytemuck::Pod>(
        &self,
        device: usize,
        data: &[T],
        usage: wgpu::BufferUsages,
    ) -> Result<DeviceBuffer> {
        let core = self.core(device)?;
        self.place(&[core], bytemuck::cast_slice(data), Kind::Writable, usage)
    }

    /// Copies `data` to the least-loaded usable device.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<DeviceBuffer> {
        let core = self.choose(&Job::new(&self.inner.copy))?;
        let bytes = bytemuck::cast_slice(data);
        self.place(&[core], bytes, Kind::Writable, wgpu::BufferUsages::empty())
    }

    /// Copies `data` to every usable device, so jobs that bind it can still go to any of them.
    /// A replicated buffer is read-only on the GPU: binding it to a `read_write` binding is an
    /// [`Error::Binding`], because a write would change one device's copy only. After a loss
    /// it comes back on the reopened device, from the engine's host copy or, without one
    /// ([`EngineBuilder::keep_read_only_copies`](crate::EngineBuilder::keep_read_only_copies)
    /// off), from another device's copy.
    pub fn replicate<T: bytemuck::Pod>(&self, data: &[T]) -> Result<DeviceBuffer> {
        let cores = self.inner.cores();
        let usable: Vec<Arc<DeviceCore>> = cores.iter().filter(|s| s.usable()).cloned().collect();
        let Some(first) = usable.first() else {
            return Err(cores[0].drop_error());
        };
        if usable.len() == 1 {
            log::debug!("replicating on device {} alone", first.info.index);
        }
        let bytes = bytemuck::cast_slice(data);
        self.place(
            &usable,
            bytes,
            Kind::Replicated,
            wgpu::BufferUsages::empty(),
        )
    }

    /// One resident copy of `bytes` on each of `cores`.
    fn place(
        &self,
        cores: &[Arc<DeviceCore>],
        bytes: &[u8],
        kind: Kind,
        usage: wgpu::BufferUsages,
    ) -> Result<DeviceBuffer> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        if let Some(lost) = cores.iter().find(|s| !s.usable()) {
            return Err(lost.drop_error());
        }
        let how = Placing {
            engine: self.inner.id,
            devices: self.inner.stations.len(),
            on: cores.iter().map(|s| s.home()).collect(),
            replicated: kind == Kind::Replicated,
            read_only: kind != Kind::Writable,
            usage,
        };
        let placed = DeviceBuffer::place(how, bytes, &self.inner.residents);
        // A device lost under the upload reports its loss rather than wgpu's message.
        placed.map_err(|e| match cores.iter().find(|s| s.lost_after_failure()) {
            Some(lost) => lost.drop_error(),
            None => e,
        })
    }

    /// Reads a resident buffer back, from a device that holds a copy. Goes through the
    /// device's queue as a job ranked after every job already submitted there (whatever their
    /// priority), so it sees every write of jobs submitted before it on that device.
    pub fn read<T: bytemuck::Pod>(&self, buffer: &DeviceBuffer) -> Result<Vec<T>> {
        if !buffer.is_from(self.inner.id) {
            return Err(Error::buffer(
                "cannot read a resident buffer of another engine",
            ));
        }
        let (size, each) = (buffer.size(), std::mem::size_of::<T>() as u64);
        if each == 0 || !size.is_multiple_of(each) {
            return Err(Error::buffer(format!(
                "cannot read a resident buffer of {size} bytes as {each}-byte elements: \
                 {size} bytes are not a whole number of them"
            )));
        }
        let devices = buffer.devices();
        let cores = self.inner.cores();
        let current = |i: usize| buffer.current_on(i, cores[i].info.generation) == Some(true);
        // A copy on a device being replaced is read from the new one (it comes back there if
        // the buffer is read-only, and the read fails `BufferLost` otherwise).
        let held = |i: usize| current(i) && cores[i].usable();
        let coming = |i: usize| current(i) && self.inner.stations[i].reopening();
        let device = match (devices.iter().copied().find(|&i| held(i)))
            .or_else(|| devices.iter().copied().find(|&i| coming(i)))
        {
            Some(device) => device,
            None => match devices.iter().copied().find(|&i| !current(i)) {
                Some(device) => return Err(Error::BufferLost { device }),
                None => return Err(cores[devices[0]].drop_error()),
            },
        };
        let (words, [x, y, z]) = read_grid(buffer.size())?;
        let job = Job::new(&self.inner.copy)
            .buffer(0, buffer)
            .output::<u32>(1, words)
            .workgroups(x, y, z)
            .on_device(device)
            .priority(crate::Priority::Low);
        self.run(job)?.read::<T>(1)
    }
}

/// What kind of resident buffer an upload makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Writable,
    ReadOnly,
    Replicated,
}

impl Engine {
    /// The device `device` (now of `generation`) if a resident buffer `job` binds had its copy
    /// there lost with an earlier device.
    pub(super) fn lost_copy(job: &Job, device: usize, generation: u32) -> Option<usize> {
        job.args()
            .filter_map(|a| match &a.data {
                crate::job::ArgData::Resident(b) => Some(b),
                _ => None,
            })
            .any(|b| b.current_on(device, generation) == Some(false))
            .then_some(device)
    }

    /// The binding of the first resident buffer a job binds.
    pub(super) fn resident_binding(job: &Job) -> Option<u32> {
        job.args()
            .find(|a| matches!(a.data, crate::job::ArgData::Resident(_)))
            .map(|a| a.binding)
    }
}
