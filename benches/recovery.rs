//! Reopening lost devices on lavapipe (`EngineBuilder::reopen_lost_devices`): how long from a
//! loss to the first job completed on the new device, and how much throughput survives a loss
//! every 500 ms, on one device and on two.
//!
//! `cargo bench --bench recovery` (about 20 s). Every result is checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wgpu_batch::{DeviceState, Engine, Error, JobHandle, Kernel, kernels, wgpu};

fn engine(devices: usize) -> Engine {
    Engine::builder()
        .backends(wgpu::Backends::VULKAN)
        .devices_per_adapter(devices)
        .reopen_lost_devices(true)
        .reopen_budget(10_000, Duration::from_secs(60))
        .reopen_backoff(Duration::ZERO)
        .build()
        .expect("an engine on lavapipe (`apt-get install mesa-vulkan-drivers`)")
}

fn check(out: wgpu_batch::JobOutput, x: &[f32]) {
    let got = out.read::<f32>(1).expect("read");
    assert!(
        got.iter().zip(x).all(|(g, v)| *g == v * 2.0),
        "wrong result"
    );
}

/// Loss to the first job completed on the new device, `n` times: sorted durations.
fn recovery_times(n: usize) -> Vec<Duration> {
    let engine = engine(1);
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    let mut times = Vec::new();
    for generation in 1..=n as u32 {
        check(engine.run(kernels::scale_job(&scale, 2.0, &x)).unwrap(), &x);
        let lost = Instant::now();
        engine.lose_device(0);
        // Submitted at once: it waits for the new device (or moves there from the lost one).
        loop {
            let d = &engine.devices()[0];
            if d.state == DeviceState::Up && d.generation == generation {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        check(engine.run(kernels::scale_job(&scale, 2.0, &x)).unwrap(), &x);
        times.push(lost.elapsed());
    }
    times.sort();
    times
}

/// Jobs/s over `run` with 8 threads x 32 outstanding, losing device 0 every `every` if set.
fn throughput(devices: usize, every: Option<Duration>, run: Duration) -> f64 {
    let engine = engine(devices);
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let done: usize = std::thread::scope(|s| {
        if let Some(every) = every {
            let (engine, stop) = (&engine, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    engine.lose_device(0);
                }
            });
        }
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| worker(&engine, &scale, &x, &stop)))
            .collect();
        std::thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

/// Keeps 32 jobs outstanding until `stop`; counts the jobs that completed. A job may fail
/// `DeviceLost` only if it was running at a loss (this one writes no resident buffer, so it
/// runs again instead) or was submitted while no device was up.
fn worker(engine: &Engine, scale: &Kernel, x: &[f32], stop: &AtomicBool) -> usize {
    let mut flight: std::collections::VecDeque<JobHandle> = Default::default();
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) || !flight.is_empty() {
        if flight.len() == 32 || stop.load(Ordering::Relaxed) {
            let h = flight.pop_front().unwrap();
            match h.wait_timeout(Duration::from_secs(60)) {
                Ok(out) => {
                    check(out, x);
                    done += 1;
                }
                Err(Error::DeviceLost { .. }) => {}
                Err(e) => panic!("a job failed: {e}"),
            }
            continue;
        }
        match engine.submit(kernels::scale_job(scale, 2.0, x)) {
            Ok(h) => flight.push_back(h),
            Err(Error::DeviceLost { .. }) => std::thread::sleep(Duration::from_micros(100)),
            Err(e) => panic!("submit failed: {e}"),
        }
    }
    done
}

fn main() {
    let times = recovery_times(20);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "Loss to the first job completed on the new device (lavapipe, 20 losses): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(times[times.len() / 2]),
        ms(times[(times.len() * 99).div_ceil(100) - 1]),
        ms(times[times.len() - 1])
    );
    println!("\n| devices | jobs/s, no loss | jobs/s, a loss every 500 ms | ratio |");
    println!("|---|---|---|---|");
    let run = Duration::from_secs(4);
    for devices in [1, 2] {
        let calm = throughput(devices, None, run);
        let lossy = throughput(devices, Some(Duration::from_millis(500)), run);
        println!(
            "| {devices} | {calm:.0} | {lossy:.0} | {:.2} |",
            lossy / calm
        );
    }
}
