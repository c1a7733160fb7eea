//! What comes back after a device loss besides jobs: read-only resident buffers (from the
//! engine's host copy, or another device's copy), and an adopted device the application
//! replaces. Every result is checked against the CPU and every wait is bounded.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::WAIT;
use wgpu_batch::{DeviceBuffer, DeviceState, Engine, Error, Job, Kernel, kernels};

/// Waits (bounded) until device `index` is in `state` with `generation`.
fn wait_for(engine: &Engine, index: usize, state: DeviceState, generation: u32) {
    let start = Instant::now();
    loop {
        let d = &engine.devices()[index];
        if d.state == state && d.generation == generation {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "device {index} never became {state:?} (generation {generation}): {d:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn engine(devices: usize, keep: bool) -> Engine {
    common::build(
        common::builder()
            .devices_per_adapter(devices)
            .reopen_backoff(Duration::from_millis(10))
            .keep_read_only_copies(keep),
    )
}

/// `a + b` with `a` resident, on `device`.
fn add_on(engine: &Engine, add: &Kernel, a: &DeviceBuffer, b: &[f32], device: usize) -> Vec<f32> {
    let job = Job::new(add)
        .buffer(0, a)
        .input(1, b)
        .output::<f32>(2, b.len())
        .workgroups_for(b.len())
        .on_device(device);
    let out = engine.submit(job).unwrap().wait_timeout(WAIT).unwrap();
    out.read::<f32>(2).unwrap()
}

fn sums(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

#[test]
fn read_only_buffers_are_intact_after_a_loss_and_cost_their_size_in_host_memory() {
    let engine = engine(1, true);
    let add = engine.kernel(kernels::add()).unwrap();
    let (a, b) = (common::data(1000, 1), common::data(1000, 2));
    let replicated = engine.replicate(&a).unwrap();
    let read_only = engine.upload_read_only_to(0, &b).unwrap();
    let writable = engine.upload_to(0, &a).unwrap();
    assert!(replicated.is_read_only() && read_only.is_read_only() && !writable.is_read_only());
    assert_eq!(
        engine.stats().kept_copy_bytes,
        8000,
        "two read-only buffers of 4000 bytes"
    );
    engine.lose_device(0);
    wait_for(&engine, 0, DeviceState::Up, 1);
    assert_eq!(engine.read::<f32>(&replicated).unwrap(), a);
    assert_eq!(engine.read::<f32>(&read_only).unwrap(), b);
    assert_eq!(add_on(&engine, &add, &replicated, &b, 0), sums(&a, &b));
    assert_eq!(add_on(&engine, &add, &read_only, &a, 0), sums(&b, &a));
    assert_eq!(
        engine.read::<f32>(&writable),
        Err(Error::BufferLost { device: 0 })
    );
    // No job may write a read-only buffer: that is what lets it come back.
    let scale = engine.kernel(kernels::scale()).unwrap();
    let write = Job::new(&scale)
        .uniform(0, &2.0f32)
        .buffer(1, &read_only)
        .workgroups_for(1000);
    assert!(matches!(engine.submit(write), Err(Error::Binding { .. })));
    drop((replicated, read_only));
    assert_eq!(engine.stats().kept_copy_bytes, 0);
}

#[test]
fn without_host_copies_a_replicated_buffer_comes_back_from_the_other_devices_copy() {
    let engine = engine(2, false);
    assert_eq!(engine.devices().len(), 2, "two devices on lavapipe");
    let add = engine.kernel(kernels::add()).unwrap();
    let (a, b) = (common::data(4096, 3), common::data(4096, 4));
    let replicated = engine.replicate(&a).unwrap();
    let alone = engine.upload_read_only_to(0, &b).unwrap();
    assert_eq!(engine.stats().kept_copy_bytes, 0);
    engine.lose_device(0);
    wait_for(&engine, 0, DeviceState::Up, 1);
    assert_eq!(add_on(&engine, &add, &replicated, &b, 0), sums(&a, &b));
    assert_eq!(add_on(&engine, &add, &replicated, &b, 1), sums(&a, &b));
    // With no host copy and no other copy, a read-only buffer is lost like a writable one.
    assert_eq!(
        engine.read::<f32>(&alone),
        Err(Error::BufferLost { device: 0 })
    );
}

#[test]
fn an_adopted_device_waits_for_the_applications_replacement() {
    let (adapter, device, queue) = common::app_device();
    let (tx, told) = mpsc::channel();
    let engine = Engine::builder()
        .with_device(&adapter, device.clone(), queue)
        .reopen_lost_devices(true)
        .on_device_lost(move |info| {
            let _ = tx.send(info.state);
        })
        .build()
        .unwrap();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let lut = engine.upload_read_only_to(0, &[3.0f32; 64]).unwrap();
    let x = common::data(256, 5);
    engine.run(kernels::scale_job(&scale, 2.0, &x)).unwrap();
    device.destroy();
    // Noticed at the next job; the hook is told, and jobs wait instead of failing.
    let first = engine.submit(kernels::scale_job(&scale, 3.0, &x)).unwrap();
    assert_eq!(told.recv_timeout(WAIT), Ok(DeviceState::Recovering));
    wait_for(&engine, 0, DeviceState::Recovering, 0);
    let second = engine
        .try_submit(kernels::scale_job(&scale, 4.0, &x))
        .unwrap();
    assert_eq!(
        second.wait_timeout(Duration::from_millis(50)).unwrap_err(),
        Error::Timeout
    );
    let (_, device, queue) = common::app_device();
    engine.replace_device(0, &adapter, device, queue).unwrap();
    wait_for(&engine, 0, DeviceState::Up, 1);
    for (h, a) in [(first, 3.0f32), (second, 4.0)] {
        let out = h.wait_timeout(WAIT).unwrap().read::<f32>(1).unwrap();
        assert_eq!(out, x.iter().map(|v| v * a).collect::<Vec<_>>());
    }
    assert_eq!(engine.read::<f32>(&lut).unwrap(), vec![3.0; 64]);
    // Only a lost adopted device can be replaced.
    let (_, device, queue) = common::app_device();
    assert!(matches!(
        engine.replace_device(0, &adapter, device, queue),
        Err(Error::RequestDevice { .. })
    ));
}

#[test]
fn a_job_held_for_a_lost_adopted_device_expires_at_its_deadline() {
    let (adapter, device, queue) = common::app_device();
    let engine = Engine::builder()
        .with_device(&adapter, device.clone(), queue)
        .reopen_lost_devices(true)
        .build()
        .unwrap();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x = common::data(64, 6);
    device.destroy();
    let _ = engine.run(kernels::scale_job(&scale, 2.0, &x).timeout(Duration::from_millis(200)));
    wait_for(&engine, 0, DeviceState::Recovering, 0);
    let job = kernels::scale_job(&scale, 2.0, &x).timeout(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(engine.run(job).unwrap_err(), Error::DeadlineExpired);
    assert!(started.elapsed() < WAIT);
    engine.shutdown();
}
