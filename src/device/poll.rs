//! How the engine polls a device within wgpu 30's rules: a timed wait on a device of the
//! engine's own, and `PollType::Poll` in a loop on a device shared with an application,
//! whose own threads may submit and poll at any time (wgpu 30.0.2's timed wait can hit an
//! assertion when another thread does); and how to tell whether a device still works
//! without its lost callback.

use std::time::{Duration, Instant};

use crate::device::health::Health;
use crate::error::scoped;

/// After an operation on an adopted device failed: records in `health` that the device is
/// lost if it no longer works (see [`alive`]); its lost callback is the application's, so
/// the engine must ask.
pub(crate) fn notice_adopted_loss(device: &wgpu::Device, health: &Health) {
    if health.usable() && !alive(device) {
        health.mark_lost("the application's device was destroyed or lost".into());
    }
}

/// Whether `device` still works, found without its lost callback (an adopted device's is the
/// application's): a buffer made on a lost device is invalid and its mapping fails, while on
/// a working one a fresh buffer maps at the next poll. wgpu reports creation on a lost device
/// to nobody (its error type is "device lost", left to the callback), so the mapping is what
/// tells. Polls without waiting, as an adopted device requires; an answer still pending
/// counts as alive. The error path only.
fn alive(device: &wgpu::Device) -> bool {
    let (tx, rx) = flume::bounded(1);
    let (probe, err) = scoped(device, || {
        let probe = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-batch liveness probe"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        probe.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r.is_ok());
        });
        probe // dropped only after the poll: dropping it would abort the mapping
    });
    let _ = device.poll(wgpu::PollType::Poll);
    drop(probe);
    err.is_none() && rx.try_recv().unwrap_or(true)
}

/// Polls `device` until submission `index` (or, with `None`, everything submitted) is done
/// or `done` says so, at most `timeout`. On a device of the engine's own, one timed wait; on
/// a device shared with an application, `PollType::Poll` in a loop, because wgpu 30.0.2's
/// timed wait can hit an assertion while another thread submits or polls the device.
pub(crate) fn poll_wait(
    device: &wgpu::Device,
    index: Option<&wgpu::SubmissionIndex>,
    timeout: Duration,
    shared: bool,
    done: impl Fn() -> bool,
) -> std::result::Result<(), wgpu::PollError> {
    if !shared {
        let wait = wgpu::PollType::Wait {
            submission_index: index.cloned(),
            timeout: Some(timeout),
        };
        return device.poll(wait).map(|_| ());
    }
    let until = Instant::now() + timeout.min(Duration::from_secs(86_400));
    loop {
        if device.poll(wgpu::PollType::Poll)?.is_queue_empty() || done() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(wgpu::PollError::Timeout);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}
