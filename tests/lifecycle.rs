//! Shutdown, drop, device loss and data isolation: every job resolves exactly once, in bounded
//! time, and no job sees another job's data.

mod common;

use std::time::{Duration, Instant};

use common::{WAIT, data};
use wgpu_batch::{Error, Job, JobHandle, KernelSource, kernels};

/// Waits on every handle (bounded) and counts (completed, shutdown) results.
fn settle(handles: Vec<JobHandle>) -> (usize, usize) {
    let (mut ok, mut shut) = (0, 0);
    for h in handles {
        match h.wait_timeout(WAIT) {
            Ok(_) => ok += 1,
            Err(Error::Shutdown) => shut += 1,
            Err(e) => panic!("unexpected result: {e}"),
        }
    }
    (ok, shut)
}

#[test]
fn shutdown_with_5000_jobs_queued_resolves_every_one() {
    let engine = common::build(common::builder().queue_capacity(10_000));
    let k = engine.kernel(kernels::saxpy()).unwrap();
    let (x, y) = (data(1024, 1), data(1024, 2));
    let handles: Vec<_> = (0..5000)
        .map(|_| engine.submit(kernels::saxpy_job(&k, 2.0, &x, &y)).unwrap())
        .collect();
    let start = Instant::now();
    engine.shutdown();
    let elapsed = start.elapsed();
    // Shutdown drains: every queued job ran, and the executors are joined.
    let (ok, shut) = settle(handles);
    assert_eq!(ok + shut, 5000);
    assert_eq!(ok, 5000, "shutdown drains the queue");
    assert!(elapsed < WAIT, "shutdown took {elapsed:?}");
    let stats = engine.stats();
    assert_eq!(stats.completed(), 5000);
    assert_eq!(
        stats.devices.iter().map(|d| d.queue_depth).sum::<usize>(),
        0
    );
    assert_eq!(
        engine
            .submit(kernels::saxpy_job(&k, 2.0, &x, &y))
            .unwrap_err(),
        Error::Shutdown
    );
}

#[test]
fn dropping_the_engine_drains_and_joins() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let x = data(4096, 3);
    let handles: Vec<_> = (0..2000)
        .map(|_| engine.submit(kernels::scale_job(&k, 2.0, &x)).unwrap())
        .collect();
    let clone = engine.clone();
    drop(engine);
    // Another clone keeps it alive and working.
    clone.run(kernels::scale_job(&k, 2.0, &x)).unwrap();
    drop(clone);
    // The last drop returned only after the executors finished: every handle is resolved now.
    let ready = handles.iter().filter(|h| h.try_get().is_some()).count();
    assert_eq!(ready, 2000);
}

#[test]
fn submitting_threads_racing_shutdown_all_resolve() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (engine, k) = (engine.clone(), k.clone());
            std::thread::spawn(move || {
                let mut handles = Vec::new();
                for _ in 0..2000 {
                    match engine.submit(kernels::scale_job(&k, 2.0, &[1.0; 256])) {
                        Ok(h) => handles.push(h),
                        Err(Error::Shutdown) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                settle(handles)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    engine.shutdown();
    for t in threads {
        let (ok, shut) = t.join().unwrap();
        assert!(ok + shut > 0);
    }
}

#[test]
fn device_loss_mid_load_fails_over_to_the_other_device() {
    let engine = common::build(
        common::builder()
            .devices_per_adapter(2)
            .reopen_lost_devices(false),
    ); // failover, no reopening
    assert!(engine.devices().len() >= 2);
    let k = engine.kernel(kernels::saxpy()).unwrap();
    let (x, y) = (data(4096, 4), data(4096, 5));
    let want: Vec<f32> = x.iter().zip(&y).map(|(x, y)| 3.0 * x + y).collect();
    let before: Vec<_> = (0..2000)
        .map(|_| engine.submit(kernels::saxpy_job(&k, 3.0, &x, &y)).unwrap())
        .collect();
    engine.lose_device(0);
    let after: Vec<_> = (0..500)
        .map(|_| engine.submit(kernels::saxpy_job(&k, 3.0, &x, &y)).unwrap())
        .collect();

    let (mut ok, mut lost) = (0, 0);
    for h in before {
        match h.wait_timeout(WAIT) {
            Ok(out) => {
                assert_eq!(out.read::<f32>(2).unwrap(), want);
                ok += 1;
            }
            Err(Error::DeviceLost { device: 0, .. }) => lost += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(ok + lost, 2000);
    for h in after {
        // The hook records the loss at once, so every job submitted after it avoids device 0.
        let out = h
            .wait_timeout(WAIT)
            .expect("jobs after the loss complete on the other device");
        assert_ne!(out.device(), 0);
        assert_eq!(out.read::<f32>(2).unwrap(), want);
    }
    let pinned = engine
        .submit(kernels::saxpy_job(&k, 3.0, &x, &y).on_device(0))
        .unwrap_err();
    assert!(
        matches!(pinned, Error::DeviceLost { device: 0, .. }),
        "{pinned:?}"
    );
    assert!(
        engine.kernel(kernels::add()).is_ok(),
        "kernels still build on the surviving device"
    );
}

#[test]
fn losing_every_device_fails_submit_with_device_lost() {
    // Without reopening (with it, a blocking submit waits for the reopened device: see
    // tests/recovery.rs).
    let engine = common::build(common::builder().reopen_lost_devices(false));
    let k = engine.kernel(kernels::scale()).unwrap();
    for d in 0..engine.devices().len() {
        engine.lose_device(d);
    }
    let err = engine
        .submit(kernels::scale_job(&k, 1.0, &[1.0]))
        .unwrap_err();
    assert!(matches!(err, Error::DeviceLost { .. }), "{err:?}");
}

#[test]
fn outputs_start_zeroed_even_after_secrets_in_the_pool() {
    // Reads its output binding before writing it: anything but zero is a leak.
    const PEEK: &str = "
        @group(0) @binding(0) var<storage, read_write> out: array<u32>;
        @compute @workgroup_size(64)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&out) { out[id.x] = out[id.x] + 0u; }
        }";
    const SECRET: &str = "
        @group(0) @binding(0) var<storage, read_write> out: array<u32>;
        @compute @workgroup_size(64)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&out) { out[id.x] = 0xDEADBEEFu; }
        }";
    let engine = common::build(common::builder().max_batch_jobs(8));
    let peek = engine.kernel(KernelSource::wgsl("peek", PEEK)).unwrap();
    let secret = engine.kernel(KernelSource::wgsl("secret", SECRET)).unwrap();
    let n = 10_000;
    for round in 0..20 {
        let mut handles = Vec::new();
        for i in 0..16 {
            let k = if (i + round) % 2 == 0 { &secret } else { &peek };
            handles.push((
                k.label() == "peek",
                engine
                    .submit(Job::new(k).output::<u32>(0, n).workgroups_for(n))
                    .unwrap(),
            ));
        }
        for (is_peek, h) in handles {
            let out: Vec<u32> = h.wait_timeout(WAIT).unwrap().read(0).unwrap();
            if is_peek {
                assert!(
                    out.iter().all(|&v| v == 0),
                    "round {round}: a peek job saw another job's data"
                );
            } else {
                assert!(out.iter().all(|&v| v == 0xDEADBEEF));
            }
        }
    }
}

#[test]
fn wait_timeout_leaves_the_handle_usable_and_futures_work() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let x = data(1 << 20, 6);
    let h = engine.submit(kernels::scale_job(&k, 2.0, &x)).unwrap();
    let first_won = match h.wait_timeout(Duration::ZERO) {
        Err(Error::Timeout) => false,
        Ok(_) => true,
        Err(e) => panic!("{e}"),
    };
    // Whether or not the zero-timeout wait won, the result is delivered exactly once.
    match h.wait_timeout(WAIT) {
        Ok(out) => assert!(!first_won && out.read::<f32>(1).unwrap()[3] == x[3] * 2.0),
        Err(e) => assert!(first_won && e == Error::ResultTaken, "{e}"),
    }
    let out = pollster::block_on(
        engine
            .submit(kernels::scale_job(&k, 2.0, &x[..10]))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        out.read::<f32>(1).unwrap(),
        x[..10].iter().map(|v| v * 2.0).collect::<Vec<_>>()
    );
}

#[test]
fn try_submit_hands_the_job_back_when_full() {
    let engine = common::build(common::builder().queue_capacity(1).max_batch_jobs(1));
    let k = engine.kernel(kernels::scale()).unwrap();
    let x = data(1 << 18, 7);
    let mut handles = Vec::new();
    let mut rejected = None;
    for _ in 0..10_000 {
        match engine.try_submit(kernels::scale_job(&k, 2.0, &x)) {
            Ok(h) => handles.push(h),
            Err(r) => {
                rejected = Some(r);
                break;
            }
        }
    }
    let r = rejected.expect("a one-slot queue fills up");
    assert_eq!(r.error, Error::QueueFull);
    // The handed-back job is intact and runs.
    let out = engine.submit(r.job).unwrap().wait_timeout(WAIT).unwrap();
    assert_eq!(out.read::<f32>(1).unwrap()[5], x[5] * 2.0);
    settle(handles);
}

#[test]
fn the_engine_takes_its_queue_capacity_without_refusing() {
    let engine = common::build(common::builder().devices_per_adapter(2).queue_capacity(3));
    assert_eq!(engine.queue_capacity(), 3 * engine.devices().len());
    let k = engine.kernel(kernels::scale()).unwrap();
    let x = data(1 << 18, 8);
    let handles: Vec<_> = (0..engine.queue_capacity())
        .map(
            |i| match engine.try_submit(kernels::scale_job(&k, 2.0, &x)) {
                Ok(h) => h,
                Err(r) => panic!(
                    "job {i} of {} refused: {}",
                    engine.queue_capacity(),
                    r.error
                ),
            },
        )
        .collect();
    settle(handles);
}

#[test]
fn device_destroyed_under_load_is_detected_and_every_job_resolves() {
    // No shortcut: the engine learns of the loss only from wgpu's callback.
    let engine = common::build(
        common::builder()
            .devices_per_adapter(2)
            .reopen_lost_devices(false),
    ); // failover, no reopening
    let k = engine.kernel(kernels::saxpy()).unwrap();
    let (x, y) = (data(4096, 4), data(4096, 5));
    let want: Vec<f32> = x.iter().zip(&y).map(|(x, y)| 3.0 * x + y).collect();
    let mut handles: Vec<_> = (0..2000)
        .map(|_| engine.submit(kernels::saxpy_job(&k, 3.0, &x, &y)).unwrap())
        .collect();
    engine.destroy_device(0);
    handles.extend((0..500).map(|_| engine.submit(kernels::saxpy_job(&k, 3.0, &x, &y)).unwrap()));
    for h in handles {
        match h.wait_timeout(WAIT) {
            Ok(out) => assert_eq!(out.read::<f32>(2).unwrap(), want),
            Err(Error::DeviceLost { device: 0, .. }) => {}
            Err(e) => panic!("a job on the destroyed device must fail with DeviceLost, got: {e}"),
        }
    }
    // Once detected, jobs avoid the device.
    let pinned = engine
        .submit(kernels::saxpy_job(&k, 3.0, &x, &y).on_device(0))
        .unwrap_err();
    assert!(
        matches!(pinned, Error::DeviceLost { device: 0, .. }),
        "{pinned:?}"
    );
    let out = engine.run(kernels::saxpy_job(&k, 3.0, &x, &y)).unwrap();
    assert_ne!(out.device(), 0);
}
