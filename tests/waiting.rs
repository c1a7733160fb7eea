//! Who runs a batch: a caller blocked in `wait` runs its device's batches itself; jobs nobody
//! waits on, and jobs that are `.await`ed, are run by the device's executor (see "Who runs a
//! batch" in `device/mod.rs`). Every result is checked against the CPU.

mod common;

use std::time::{Duration, Instant};

use common::WAIT;
use wgpu_batch::{JobHandle, kernels};

fn scaled(x: &[f32], a: f32) -> Vec<f32> {
    x.iter().map(|v| v * a).collect()
}

#[test]
fn jobs_queued_before_a_wait_are_run_by_the_waiting_caller_in_few_batches() {
    let engine = common::build(common::builder().devices_per_adapter(1));
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x = common::data(256, 1);
    let before = engine.stats().batches();
    let handles: Vec<JobHandle> = (0..16)
        .map(|i| {
            let job = kernels::scale_job(&scale, i as f32, &x).on_device(0);
            engine.submit(job).unwrap()
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.wait_timeout(WAIT).unwrap();
        common::assert_close(&out.read::<f32>(1).unwrap(), &scaled(&x, i as f32), 0.0);
    }
    // The first wait runs every job queued by then as one batch (the executor takes work
    // only after it waited 200 µs undriven, so a loaded machine may split it a few times).
    let batches = engine.stats().batches() - before;
    assert!(batches <= 8, "16 queued jobs took {batches} batches");
}

#[test]
fn a_job_nobody_waits_on_is_run_by_the_executor() {
    let engine = common::engine();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x = common::data(64, 2);
    let h = engine.submit(kernels::scale_job(&scale, 3.0, &x)).unwrap();
    let start = Instant::now();
    let out = loop {
        if let Some(r) = h.try_get() {
            break r.unwrap();
        }
        assert!(start.elapsed() < WAIT, "a job nobody waited on never ran");
        std::thread::sleep(Duration::from_millis(1));
    };
    common::assert_close(&out.read::<f32>(1).unwrap(), &scaled(&x, 3.0), 0.0);
}

#[test]
fn awaited_jobs_complete_without_a_blocked_caller() {
    let engine = common::engine();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x = common::data(64, 3);
    let handles: Vec<JobHandle> = (0..64)
        .map(|i| {
            engine
                .submit(kernels::scale_job(&scale, i as f32, &x))
                .unwrap()
        })
        .collect();
    // One thread polls every future in turn and never blocks on the device.
    let outs = pollster::block_on(async {
        let mut outs = Vec::new();
        for h in handles {
            outs.push(h.await.unwrap());
        }
        outs
    });
    for (i, out) in outs.iter().enumerate() {
        common::assert_close(&out.read::<f32>(1).unwrap(), &scaled(&x, i as f32), 0.0);
    }
}

#[test]
fn many_waiting_threads_share_the_batches_and_every_result_is_theirs() {
    let engine = common::engine();
    let scale = engine.kernel(kernels::scale()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (engine, scale) = (&engine, &scale);
            s.spawn(move || {
                let mut flight: Vec<(f32, Vec<f32>, JobHandle)> = Vec::new();
                for j in 0..40u64 {
                    let x = common::data(32 + (j as usize % 5) * 17, t * 100 + j);
                    let a = (t * 40 + j) as f32;
                    let h = engine.submit(kernels::scale_job(scale, a, &x)).unwrap();
                    flight.push((a, x, h));
                    if flight.len() == 4 {
                        let (a, x, h) = flight.remove(0);
                        let got = h.wait_timeout(WAIT).unwrap().read::<f32>(1).unwrap();
                        common::assert_close(&got, &scaled(&x, a), 0.0);
                    }
                }
                for (a, x, h) in flight {
                    let got = h.wait_timeout(WAIT).unwrap().read::<f32>(1).unwrap();
                    common::assert_close(&got, &scaled(&x, a), 0.0);
                }
            });
        }
    });
}
