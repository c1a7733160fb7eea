//! Resident buffers, multi-step jobs and GPU timings.

mod common;

use common::{WAIT, assert_close, data};
use wgpu_batch::{Engine, Error, Job, KernelSource, kernels};

const RELU: &str = "
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&y) { y[id.x] = max(x[id.x], 0.0); }
}";

/// Two devices on one adapter, so placement is observable.
fn two_devices() -> Engine {
    let engine = common::build(common::builder().devices_per_adapter(2));
    assert!(engine.devices().len() >= 2);
    engine
}

#[test]
fn uploaded_buffers_stay_on_their_device_and_read_back() {
    let engine = two_devices();
    let w = data(10_000, 1);
    let buf = engine.upload_to(1, &w).unwrap();
    assert_eq!(buf.devices(), [1]);
    assert_eq!(buf.size(), 40_000);
    assert_eq!(engine.read::<f32>(&buf).unwrap(), w);
    // A job that binds it runs on its device, every time.
    let add = engine.kernel(kernels::add()).unwrap();
    for _ in 0..20 {
        let x = data(10_000, 2);
        let job = Job::new(&add)
            .buffer(0, &buf)
            .input(1, &x)
            .output::<f32>(2, x.len())
            .workgroups_for(x.len());
        let out = engine.submit(job).unwrap().wait_timeout(WAIT).unwrap();
        assert_eq!(out.device(), 1);
        let want: Vec<f32> = w.iter().zip(&x).map(|(a, b)| a + b).collect();
        assert_close(&out.read::<f32>(2).unwrap(), &want, 0.0);
    }
}

#[test]
fn kernels_write_resident_buffers_in_place() {
    let engine = common::engine();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x = data(5000, 3);
    let buf = engine.upload(&x).unwrap();
    for _ in 0..3 {
        engine
            .run(
                Job::new(&scale)
                    .uniform(0, &2.0f32)
                    .buffer(1, &buf)
                    .workgroups_for(x.len()),
            )
            .unwrap();
    }
    let want: Vec<f32> = x.iter().map(|v| v * 8.0).collect();
    assert_eq!(engine.read::<f32>(&buf).unwrap(), want);
}

#[test]
fn a_replicated_buffer_serves_jobs_on_every_device() {
    let engine = two_devices();
    let w = data(4096, 4);
    let weights = engine.replicate(&w).unwrap();
    assert_eq!(weights.devices().len(), engine.devices().len());
    let add = engine.kernel(kernels::add()).unwrap();
    let x = data(4096, 5);
    let want: Vec<f32> = w.iter().zip(&x).map(|(a, b)| a + b).collect();
    let handles: Vec<_> = (0..400)
        .map(|_| {
            engine
                .submit(
                    Job::new(&add)
                        .buffer(0, &weights)
                        .input(1, &x)
                        .output::<f32>(2, x.len())
                        .workgroups_for(x.len()),
                )
                .unwrap()
        })
        .collect();
    let mut devices = std::collections::HashSet::new();
    for h in handles {
        let out = h.wait_timeout(WAIT).unwrap();
        devices.insert(out.device());
        assert_eq!(out.read::<f32>(2).unwrap(), want);
    }
    assert!(devices.len() >= 2, "all jobs ran on {devices:?}");
}

#[test]
fn mixing_buffers_of_two_devices_is_a_binding_error() {
    let engine = two_devices();
    let a = engine.upload_to(0, &[1.0f32; 64]).unwrap();
    let b = engine.upload_to(1, &[2.0f32; 64]).unwrap();
    let add = engine.kernel(kernels::add()).unwrap();
    let job = Job::new(&add)
        .buffer(0, &a)
        .buffer(1, &b)
        .output::<f32>(2, 64)
        .workgroups(1, 1, 1);
    match engine.submit(job).unwrap_err() {
        Error::Binding {
            binding: 1,
            problem,
            ..
        } => assert!(problem.contains("devices [1]"), "{problem}"),
        other => panic!("expected Error::Binding, got {other:?}"),
    }
    let pinned = Job::new(&add)
        .buffer(0, &a)
        .input(1, &[1.0f32; 64])
        .output::<f32>(2, 64)
        .workgroups(1, 1, 1)
        .on_device(1);
    assert!(matches!(
        engine.submit(pinned).unwrap_err(),
        Error::Binding { binding: 0, .. }
    ));
    let other_engine = common::engine();
    let foreign = Job::new(&add)
        .buffer(0, &other_engine.upload(&[1.0f32; 64]).unwrap())
        .input(1, &[1.0f32; 64]);
    let err = engine
        .submit(foreign.output::<f32>(2, 64).workgroups(1, 1, 1))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Binding { problem, .. } if problem.contains("another engine")),
        "{err}"
    );
    assert!(matches!(
        engine.upload(&[0u8; 3]).unwrap_err(),
        Error::Binding { .. }
    ));
    assert!(matches!(
        engine.upload::<f32>(&[]).unwrap_err(),
        Error::Binding { .. }
    ));
}

#[test]
fn a_multi_step_job_keeps_its_intermediate_on_the_gpu() {
    let engine = common::engine();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let relu = engine.kernel(KernelSource::wgsl("relu", RELU)).unwrap();
    let add = engine.kernel(kernels::add()).unwrap();
    let x = data(3000, 6);
    let b = data(3000, 7);
    // h = x (scratch 0) ; h *= -2 ; r = relu(h) (scratch 1) ; out = r + b
    let job = Job::new(&scale)
        .uniform(0, &-2.0f32)
        .inout(1, &x)
        .workgroups_for(x.len())
        .then(&relu)
        .input(0, &x)
        .scratch::<f32>(1, 1, x.len())
        .workgroups_for(x.len())
        .then(&add)
        .scratch::<f32>(0, 1, x.len())
        .input(1, &b)
        .output::<f32>(2, x.len())
        .workgroups_for(x.len());
    let out = engine.run(job).unwrap();
    let want: Vec<f32> = x.iter().zip(&b).map(|(x, b)| x.max(0.0) + b).collect();
    assert_close(&out.read::<f32>(2).unwrap(), &want, 0.0);
    assert_close(
        &out.read_step::<f32>(0, 1).unwrap(),
        &x.iter().map(|v| -2.0 * v).collect::<Vec<_>>(),
        0.0,
    );
    // The scratch buffer never reaches the host: step 1 reads nothing back.
    assert!(out.read_step::<f32>(1, 1).is_err());

    // Steps see each other's writes through scratch: relu of a scratch written by step 0.
    const FILL: &str = "
        @group(0) @binding(0) var<storage, read> x: array<f32>;
        @group(0) @binding(1) var<storage, read_write> h: array<f32>;
        @compute @workgroup_size(64)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&h) { h[id.x] = -x[id.x]; }
        }";
    let fill = engine.kernel(KernelSource::wgsl("negate", FILL)).unwrap();
    let chained = Job::new(&fill)
        .input(0, &x)
        .scratch::<f32>(1, 0, x.len())
        .workgroups_for(x.len())
        .then(&relu)
        .scratch::<f32>(0, 0, x.len())
        .output::<f32>(1, x.len())
        .workgroups_for(x.len());
    let handles: Vec<_> = (0..20)
        .map(|_| engine.submit(chained.clone()).unwrap())
        .collect();
    let want: Vec<f32> = x.iter().map(|v| (-v).max(0.0)).collect();
    for h in handles {
        assert_close(
            &h.wait_timeout(WAIT).unwrap().read::<f32>(1).unwrap(),
            &want,
            0.0,
        );
    }
}

#[test]
fn a_scratch_bound_as_uniform_is_a_binding_error() {
    let engine = common::engine();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let job = Job::new(&scale)
        .scratch::<f32>(0, 0, 1)
        .inout(1, &[1.0f32])
        .workgroups(1, 1, 1);
    assert!(matches!(
        engine.submit(job).unwrap_err(),
        Error::Binding { binding: 0, .. }
    ));
}

#[test]
fn gpu_time_is_reported_per_job_and_per_device() {
    let engine = common::build(common::builder().gpu_timing(true));
    let k = engine.kernel(kernels::saxpy()).unwrap();
    let (x, y) = (data(1 << 18, 8), data(1 << 18, 9));
    let handles: Vec<_> = (0..20)
        .map(|_| engine.submit(kernels::saxpy_job(&k, 2.0, &x, &y)).unwrap())
        .collect();
    let mut total = std::time::Duration::ZERO;
    for h in handles {
        let t = h
            .wait_timeout(WAIT)
            .unwrap()
            .gpu_time()
            .expect("lavapipe and GL have timestamp queries");
        assert!(t > std::time::Duration::ZERO && t < WAIT, "{t:?}");
        total += t;
    }
    let stats = engine.stats();
    assert_eq!(
        stats.devices.iter().map(|d| d.gpu_timed_jobs).sum::<u64>(),
        20
    );
    assert_eq!(
        stats
            .devices
            .iter()
            .map(|d| d.gpu_time)
            .sum::<std::time::Duration>(),
        total
    );
    // Off by default.
    let plain = common::engine();
    let k = plain.kernel(kernels::scale()).unwrap();
    assert_eq!(
        plain
            .run(kernels::scale_job(&k, 1.0, &[1.0]))
            .unwrap()
            .gpu_time(),
        None
    );
}
