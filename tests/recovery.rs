//! Reopening a lost device (`EngineBuilder::reopen_lost_devices`): a new device on the same
//! adapter takes the lost one's place, the jobs queued on it and never encoded move there, and
//! a budget stops a device that keeps failing. Every result is checked against the CPU and
//! every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::{Spinner, WAIT};
use wgpu_batch::{DeviceState, Engine, Error, JobHandle, kernels};

/// Waits (bounded) until device 0 is in `state` with `generation`.
fn wait_for(engine: &Engine, state: DeviceState, generation: u32) {
    let start = Instant::now();
    loop {
        let d = &engine.devices()[0];
        if d.state == state && d.generation == generation {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "device 0 never became {state:?} (generation {generation}): {d:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn engine() -> Engine {
    common::build(
        common::builder()
            .devices_per_adapter(1)
            .reopen_lost_devices(true)
            .reopen_backoff(Duration::from_millis(10)),
    )
}

fn scaled(x: &[f32], a: f32) -> Vec<f32> {
    x.iter().map(|v| v * a).collect()
}

#[test]
fn a_lost_device_is_reopened_and_serves_the_next_1000_jobs() {
    let engine = engine();
    assert_eq!(engine.devices().len(), 1, "one Vulkan device (lavapipe)");
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x = common::data(256, 7);
    engine.run(kernels::scale_job(&scale, 2.0, &x)).unwrap();
    engine.lose_device(0);
    wait_for(&engine, DeviceState::Up, 1);
    let mut flight: Vec<(f32, JobHandle)> = Vec::new();
    for i in 0..1000 {
        let a = (i % 17) as f32;
        flight.push((a, engine.submit(kernels::scale_job(&scale, a, &x)).unwrap()));
        if flight.len() == 32 || i == 999 {
            for (a, h) in flight.drain(..) {
                let out = h.wait_timeout(WAIT).unwrap();
                common::assert_close(&out.read::<f32>(1).unwrap(), &scaled(&x, a), 0.0);
            }
        }
    }
    // The reopened device continues the lost one's statistics, and counts the loss.
    let s = &engine.stats().devices[0];
    assert!(s.completed >= 1001, "{s:?}");
    assert_eq!((s.losses, s.recoveries), (1, 1));
    let took = s
        .last_recovery
        .expect("the time from the loss to the first job after it");
    assert!(took < WAIT, "{took:?}");
}

#[test]
fn jobs_queued_at_a_loss_move_to_the_reopened_device() {
    let engine = common::build(
        common::builder()
            .devices_per_adapter(1)
            .max_batch_jobs(1)
            .reopen_lost_devices(true)
            .reopen_backoff(Duration::from_millis(10)),
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    let spin = Spinner::new(&engine, 0, Duration::from_millis(100));
    let busy = engine.submit(spin.job()).unwrap();
    // Nobody waits on it: the executor launches it within a millisecond.
    std::thread::sleep(Duration::from_millis(20));
    let x = common::data(64, 9);
    let queued: Vec<(f32, JobHandle)> = (0..20)
        .map(|i| {
            let a = i as f32;
            (a, engine.submit(kernels::scale_job(&scale, a, &x)).unwrap())
        })
        .collect();
    engine.lose_device(0);
    // The busy job was running; it writes only its own output, so it runs again.
    busy.wait_timeout(WAIT).unwrap();
    let mut moved = 0;
    for (a, h) in queued {
        match h.wait_timeout(WAIT) {
            Ok(out) => {
                common::assert_close(&out.read::<f32>(1).unwrap(), &scaled(&x, a), 0.0);
                moved += 1;
            }
            Err(e) => panic!("a queued job failed with {e}"),
        }
    }
    assert_eq!(moved, 20);
    assert_eq!(engine.devices()[0].generation, 1);
}

#[test]
fn the_budget_stops_a_device_that_keeps_failing() {
    let engine = common::build(
        common::builder()
            .devices_per_adapter(1)
            .reopen_lost_devices(true)
            .reopen_budget(2, Duration::from_secs(60))
            .reopen_backoff(Duration::from_millis(10)),
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    for generation in 1..=2 {
        engine.lose_device(0);
        wait_for(&engine, DeviceState::Up, generation);
        engine
            .run(kernels::scale_job(&scale, 1.0, &[1.0; 4]))
            .unwrap();
    }
    engine.lose_device(0);
    wait_for(&engine, DeviceState::Down, 2);
    assert!(matches!(
        engine.submit(kernels::scale_job(&scale, 1.0, &[1.0; 4])),
        Err(Error::DeviceLost { .. })
    ));
}

#[test]
fn without_reopening_a_lost_device_stays_down() {
    let engine = common::build(
        common::builder()
            .devices_per_adapter(1)
            .reopen_lost_devices(false),
    );
    engine.lose_device(0);
    let d = &engine.devices()[0];
    assert_eq!((d.state, d.generation), (DeviceState::Down, 0));
}

#[test]
fn a_resident_buffer_of_a_lost_device_is_a_typed_error_not_garbage() {
    let engine = engine();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let buf = engine.upload(&[1.0f32; 64]).unwrap();
    let job = |b: &wgpu_batch::DeviceBuffer| {
        wgpu_batch::Job::new(&scale)
            .uniform(0, &2.0f32)
            .buffer(1, b)
            .workgroups_for(64)
    };
    engine
        .submit(job(&buf))
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    assert_eq!(engine.read::<f32>(&buf).unwrap(), vec![2.0; 64]);
    engine.lose_device(0);
    wait_for(&engine, DeviceState::Up, 1);
    assert!(matches!(
        engine.submit(job(&buf)),
        Err(Error::BufferLost { device: 0 })
    ));
    assert!(matches!(
        engine.read::<f32>(&buf),
        Err(Error::BufferLost { device: 0 })
    ));
    // Uploaded again, it serves on the new device.
    let again = engine.upload(&[1.0f32; 64]).unwrap();
    engine
        .submit(job(&again))
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    assert_eq!(engine.read::<f32>(&again).unwrap(), vec![2.0; 64]);
}

#[test]
fn a_running_job_that_writes_a_resident_buffer_is_not_run_again() {
    let engine = engine();
    let spin = Spinner::new(&engine, 0, Duration::from_millis(300));
    let buf = engine.upload(&[0.0f32; 64]).unwrap();
    let writes = wgpu_batch::Job::new(&spin.kernel)
        .uniform(0, &[4_000u32, 0, 0, 0])
        .buffer(1, &buf)
        .workgroups(spin.groups.0, spin.groups.1, 1);
    let h = engine.submit(writes).unwrap();
    std::thread::sleep(Duration::from_millis(30)); // the executor launches it meanwhile
    engine.lose_device(0);
    assert!(matches!(
        h.wait_timeout(WAIT),
        Err(Error::DeviceLost { .. })
    ));
}

#[test]
fn a_job_running_at_every_loss_is_poisoned_and_the_device_serves_on() {
    let engine = common::build(
        common::builder()
            .devices_per_adapter(1)
            .reopen_lost_devices(true)
            .reopen_backoff(Duration::from_millis(1))
            .max_replays(1),
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    let spin = Spinner::new(&engine, 0, Duration::from_secs(1));
    let runaway = engine.submit(spin.job()).unwrap();
    for generation in 1..=2 {
        std::thread::sleep(Duration::from_millis(60)); // it is running again by now
        engine.lose_device(0);
        if generation == 1 {
            wait_for(&engine, DeviceState::Up, 1);
        }
    }
    match runaway.wait_timeout(WAIT) {
        Err(Error::Poisoned {
            device: 0,
            losses: 2,
        }) => {}
        other => panic!("want Poisoned after 2 losses, got {other:?}"),
    }
    wait_for(&engine, DeviceState::Up, 2);
    let out = engine
        .run(kernels::scale_job(&scale, 2.0, &[1.0; 8]))
        .unwrap();
    assert_eq!(out.read::<f32>(1).unwrap(), vec![2.0; 8]);
}

#[test]
fn a_runaway_kernel_that_trips_the_watchdog_is_poisoned_and_the_device_serves_on() {
    let engine = common::build(
        common::builder()
            .devices_per_adapter(1)
            .gpu_timeout(Duration::from_millis(300))
            .reopen_lost_devices(true)
            .reopen_backoff(Duration::from_millis(1))
            .max_replays(1),
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    // "Runaway" as far as the watchdog can tell: five times its bound.
    let runaway = Spinner::new(&engine, 0, Duration::from_millis(1500));
    let start = Instant::now();
    let h = engine.submit(runaway.job()).unwrap();
    match h.wait_timeout(WAIT) {
        Err(Error::Poisoned {
            device: 0,
            losses: 2,
        }) => {}
        other => panic!("want Poisoned after two watchdog losses, got {other:?}"),
    }
    let poisoned = start.elapsed();
    // Reopened a second time, the device serves other jobs. On lavapipe the lost devices'
    // kernels keep its shared threads until they end (a real GPU's reset stops them), and a
    // job started before then would trip the watchdog again: wait them out.
    wait_for(&engine, DeviceState::Up, 2);
    std::thread::sleep(Duration::from_millis(2500));
    let out = engine
        .run(kernels::scale_job(&scale, 2.0, &[1.0; 8]))
        .unwrap();
    assert_eq!(out.read::<f32>(1).unwrap(), vec![2.0; 8]);
    eprintln!(
        "poisoned after {poisoned:?}; served again after {:?}",
        start.elapsed()
    );
    // The bad kernel is refused for a while rather than take the device down again.
    match engine.submit(runaway.job()) {
        Err(Error::Quarantined {
            device: 0,
            remaining,
            ..
        }) => assert!(remaining > Duration::ZERO),
        other => panic!("want the runaway kernel refused, got {other:?}"),
    }
    assert_eq!(engine.stats().devices[0].losses, 2);
}

#[test]
fn a_job_submitted_while_the_device_is_reopened_waits_for_it() {
    let engine = common::build(
        common::builder()
            .devices_per_adapter(1)
            .reopen_budget(100, Duration::from_secs(60))
            .reopen_backoff(Duration::from_millis(10)),
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x = common::data(64, 5);
    for _ in 0..5 {
        engine.lose_device(0);
        // At once, before the new device is up: a blocking submit waits for it.
        let out = engine
            .submit(kernels::scale_job(&scale, 2.0, &x))
            .unwrap()
            .wait_timeout(WAIT)
            .unwrap();
        common::assert_close(&out.read::<f32>(1).unwrap(), &scaled(&x, 2.0), 0.0);
    }
}

#[test]
fn a_job_run_on_the_calling_thread_runs_again_after_a_loss() {
    let engine = engine();
    let spin = Spinner::new(&engine, 0, Duration::from_millis(300));
    std::thread::scope(|s| {
        // `Engine::run` on an idle device runs the job on this thread, not through the queue.
        let running = s.spawn(|| engine.run(spin.job()));
        std::thread::sleep(Duration::from_millis(60));
        engine.lose_device(0);
        running.join().unwrap().unwrap();
    });
    assert_eq!(engine.devices()[0].generation, 1);
}
