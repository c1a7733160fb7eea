//! The GPU watchdog (its own test binary: the hung kernel keeps the software GPU busy for
//! seconds, which would slow every other test in the same process).

mod common;

use std::time::{Duration, Instant};

use common::{Spinner, WAIT};
use wgpu_batch::{Engine, Error, kernels, wgpu};

#[test]
fn a_kernel_that_never_finishes_fails_its_device_and_work_moves_on() {
    // Two independent adapters: a hung kernel on lavapipe also holds up a second lavapipe
    // device (they share one compute thread pool), so the other device is llvmpipe GL.
    let timeout = Duration::from_millis(300);
    let _ = env_logger::builder().is_test(true).try_init();
    let engine = common::build(
        Engine::builder()
            .backends(wgpu::Backends::VULKAN | wgpu::Backends::GL)
            .max_batch_jobs(1)
            .gpu_timeout(timeout)
            .reopen_lost_devices(false), // work moves to the other device, which is tested here
    );
    let backends: Vec<_> = engine.devices().iter().map(|d| d.backend).collect();
    assert_eq!(
        backends,
        [wgpu::Backend::Vulkan, wgpu::Backend::Gl],
        "this test needs a Vulkan and a GL adapter (lavapipe and llvmpipe: \
         `apt-get install mesa-vulkan-drivers libegl-mesa0`)"
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    // "Never finishes" as far as the engine can tell: ten times the watchdog's bound and more.
    let hang = Spinner::new(&engine, 0, Duration::from_secs(4));
    let start = Instant::now();
    let hung = engine.submit(hang.job().on_device(0)).unwrap();
    let behind: Vec<_> = (0..5)
        .map(|_| {
            engine
                .submit(kernels::scale_job(&scale, 2.0, &[1.0; 64]).on_device(0))
                .unwrap()
        })
        .collect();
    let with_deadline = engine
        .submit(
            kernels::scale_job(&scale, 2.0, &[1.0; 64])
                .on_device(0)
                .timeout(Duration::from_millis(150)),
        )
        .unwrap();

    // The job with a deadline learns at its deadline, not when the GPU is freed.
    assert_eq!(
        with_deadline.wait_timeout(WAIT).unwrap_err(),
        Error::DeadlineExpired
    );
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );

    // The stalled batch and everything behind it fail once the bound has passed.
    match hung.wait_timeout(WAIT) {
        Err(Error::DeviceLost { device: 0, reason }) => {
            assert!(reason.contains("watchdog"), "{reason}")
        }
        other => panic!("want DeviceLost from the watchdog, got {other:?}"),
    }
    let detected = start.elapsed();
    assert!(
        detected >= timeout && detected < timeout * 4,
        "the watchdog fired after {detected:?} (bound {timeout:?})"
    );
    for h in behind {
        assert!(matches!(
            h.wait_timeout(WAIT),
            Err(Error::DeviceLost { device: 0, .. })
        ));
    }

    // New work goes to the other device.
    let out = engine
        .run(kernels::scale_job(&scale, 2.0, &[1.0; 64]))
        .unwrap();
    assert_eq!((out.device(), out.read::<f32>(1).unwrap()[0]), (1, 2.0));
    assert!(matches!(
        engine.submit(kernels::scale_job(&scale, 2.0, &[1.0; 4]).on_device(0)),
        Err(Error::DeviceLost { .. })
    ));

    // Shutdown returns promptly even though device 0's executor is still inside the driver.
    let stop = Instant::now();
    engine.shutdown();
    assert!(
        stop.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        stop.elapsed()
    );
}
