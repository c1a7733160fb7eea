//! The engine's device positions as one of them sees them around a loss ([`Fleet`]): where
//! the jobs of a lost device can go at once, and where the read-only resident buffers it held
//! come back from. Holds its stations weakly (each station holds its fleet).

use std::borrow::Cow;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::device::DeviceCore;
use crate::device::reply::Responder;
use crate::job::{ArgData, Job};
use crate::kernel::compile::Kernel;
use crate::memory::buffer::{DeviceBuffer, Residents, read_grid};
use crate::station::{self, Station};

/// How long a restore waits for another device's copy to be read back.
const READ_BACK: Duration = Duration::from_secs(10);

/// See the module docs.
pub(crate) struct Fleet {
    stations: Vec<Weak<Station>>,
    residents: Arc<Residents>,
    /// Copies a resident buffer into a job output (the engine's `read` kernel).
    copy: Kernel,
}

impl Fleet {
    /// Joins each of `stations` to the fleet of all of them.
    pub(crate) fn join(stations: &[Arc<Station>], residents: &Arc<Residents>, copy: &Kernel) {
        let fleet: Arc<dyn station::Fleet> = Arc::new(Fleet {
            stations: stations.iter().map(Arc::downgrade).collect(),
            residents: residents.clone(),
            copy: copy.clone(),
        });
        for s in stations {
            s.join(fleet.clone());
        }
    }

    /// The usable devices other than `except`, least loaded first.
    fn others(&self, except: usize) -> Vec<(Arc<Station>, Arc<DeviceCore>)> {
        let mut others: Vec<_> = (self.stations.iter())
            .filter_map(Weak::upgrade)
            .filter(|s| s.index != except)
            .map(|s| {
                let core = s.core();
                (s, core)
            })
            .filter(|(_, core)| core.usable())
            .collect();
        others.sort_by_key(|(_, core)| core.stats().outstanding());
        others
    }

    /// `buffer`'s bytes, read from another device's current copy.
    fn read_elsewhere(&self, buffer: &DeviceBuffer, except: usize) -> Option<Vec<u8>> {
        let (words, [x, y, z]) = read_grid(buffer.size()).ok()?;
        let from = self.others(except).into_iter().find(|(_, core)| {
            buffer.current_on(core.info.index, core.info.generation) == Some(true)
        })?;
        let (_, core) = from;
        let job = Job::new(&self.copy)
            .buffer(0, buffer)
            .output::<u32>(1, words)
            .workgroups(x, y, z)
            .on_device(core.info.index);
        let handle = core.enqueue(job, None, None, true).ok()?;
        let output = handle.wait_timeout(READ_BACK).ok()?;
        output.read::<u8>(1).ok()
    }
}

impl station::Fleet for Fleet {
    fn elsewhere(&self, job: Job, responder: Responder, except: usize) -> Option<(Job, Responder)> {
        if job.device.is_some() {
            return Some((job, responder)); // pinned to the lost position
        }
        let target = self.others(except).into_iter().find(|(station, core)| {
            let (index, generation) = (core.info.index, core.info.generation);
            station.admits(&job).is_ok()
                && job.args().all(|a| match &a.data {
                    ArgData::Resident(b) => b.current_on(index, generation) == Some(true),
                    _ => true,
                })
                && core.validate(&job).is_ok()
        });
        match target {
            Some((_, core)) => {
                core.requeue(job, responder);
                None
            }
            None => Some((job, responder)),
        }
    }

    fn restore(&self, core: &DeviceCore) {
        let index = core.info.index;
        let (mut restored, mut lost) = (0, 0);
        for buffer in self.residents.held_on(index) {
            let bytes = match buffer.kept() {
                Some(kept) => Some(Cow::Borrowed(kept)),
                None => self.read_elsewhere(&buffer, index).map(Cow::Owned),
            };
            let done = bytes.is_some_and(|b| buffer.restore_on(core.home(), &b).is_ok());
            if done { restored += 1 } else { lost += 1 }
        }
        if restored + lost > 0 {
            log::info!(
                "device {index}: {restored} read-only resident buffers restored, {lost} lost"
            );
        }
    }
}
