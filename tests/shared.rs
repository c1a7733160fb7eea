//! An application's device, adopted with `EngineBuilder::with_device`: the app's handlers
//! stay, the device outlives the engine, the app submits and polls alongside the engine, and
//! the engine's resident buffers serve the app's own passes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::WAIT;
use wgpu_batch::{Engine, kernels, wgpu};

#[test]
fn the_apps_error_handler_stays_and_the_device_outlives_the_engine() {
    let (adapter, device, queue) = common::app_device();
    let seen = Arc::new(AtomicBool::new(false));
    let flag = seen.clone();
    device.on_uncaptured_error(Arc::new(move |_| flag.store(true, Ordering::SeqCst)));
    {
        let engine = Engine::builder()
            .with_device(&adapter, device.clone(), queue.clone())
            .build()
            .unwrap();
        let k = engine.kernel(kernels::scale()).unwrap();
        let out: Vec<f32> = engine
            .run(kernels::scale_job(&k, 2.0, &[1.0, 2.0]))
            .unwrap()
            .read(1)
            .unwrap();
        assert_eq!(out, [2.0, 4.0]);
        engine.shutdown();
    }
    // The engine is gone; the device works, and the app's handler still gets its errors.
    let _bad = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE,
        mapped_at_creation: false,
    });
    queue.submit([device.create_command_encoder(&Default::default()).finish()]);
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert!(
        seen.load(Ordering::SeqCst),
        "the app's handler was replaced"
    );
}

#[test]
fn the_app_submits_and_polls_while_the_engine_works() {
    let (adapter, device, queue) = common::app_device();
    let engine = Engine::builder()
        .with_device(&adapter, device.clone(), queue.clone())
        .build()
        .unwrap();
    let k = engine.kernel(kernels::saxpy()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let submits = Arc::new(AtomicUsize::new(0));
    let app = {
        let (device, queue, stop, submits) =
            (device.clone(), queue.clone(), stop.clone(), submits.clone());
        std::thread::spawn(move || {
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 1 << 16,
                usage: wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            while !stop.load(Ordering::SeqCst) {
                let mut enc = device.create_command_encoder(&Default::default());
                enc.clear_buffer(&buffer, 0, None);
                queue.submit([enc.finish()]);
                device.poll(wgpu::PollType::Poll).unwrap();
                submits.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let x = vec![i as f32; 1000];
            engine.submit(kernels::saxpy_job(&k, 2.0, &x, &x)).unwrap()
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let y: Vec<f32> = h.wait_timeout(WAIT).unwrap().read(2).unwrap();
        assert!(y.iter().all(|&v| v == 3.0 * i as f32), "job {i}");
    }
    stop.store(true, Ordering::SeqCst);
    app.join().unwrap();
    assert!(submits.load(Ordering::SeqCst) > 0);
}

#[test]
fn a_resident_buffer_with_extra_usage_is_the_apps_to_bind() {
    let (adapter, device, queue) = common::app_device();
    let engine = Engine::builder()
        .with_device(&adapter, device, queue)
        .build()
        .unwrap();
    let b = engine
        .upload_with_usage(
            0,
            &[1.0f32; 16],
            wgpu::BufferUsages::VERTEX | wgpu::BufferUsages::INDIRECT,
        )
        .unwrap();
    let raw = b.wgpu_buffer(0).unwrap();
    assert!(raw.usage().contains(
        wgpu::BufferUsages::VERTEX | wgpu::BufferUsages::INDIRECT | wgpu::BufferUsages::STORAGE
    ));
    assert!(b.wgpu_buffer(1).is_none());
    // A usage wgpu refuses beside storage is a typed error, not a panic.
    let refused = engine.upload_with_usage(0, &[1.0f32; 4], wgpu::BufferUsages::MAP_WRITE);
    assert!(
        matches!(refused, Err(wgpu_batch::Error::Wgpu(_))) || refused.is_ok(),
        "{refused:?}"
    );
}
