//! Reopening lost devices (`EngineBuilder::reopen_lost_devices`): on lavapipe, how long from a
//! loss to the first job completed on the new device, and how much throughput survives a loss
//! every 500 ms, on one device and on two (no job may fail: each writes no resident buffer,
//! so it is queued again or run again); what the host copies of read-only buffers cost; and,
//! on the noop backend (host cost alone), what the replay bookkeeping costs the submit path
//! with 8 threads (reopening on vs off, alternating rounds in one run).
//!
//! `cargo bench --bench recovery` (about 40 s; `RECOVERY_ONLY=bookkeeping` runs the last
//! section alone). Every result is checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wgpu_batch::{DeviceState, Engine, JobHandle, Kernel, kernels, wgpu};

fn engine(devices: usize) -> Engine {
    Engine::builder()
        .backends(wgpu::Backends::VULKAN)
        .adapter_name("llvmpipe")
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

/// Keeps 32 jobs outstanding until `stop`; counts the jobs that completed. None may fail: a
/// job queued at a loss moves, one running runs again (it writes no resident buffer), one
/// submitted while no device is up waits for the new one.
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
                Err(e) => panic!("a job failed across the losses: {e}"),
            }
            continue;
        }
        match engine.submit(kernels::scale_job(scale, 2.0, x)) {
            Ok(h) => flight.push_back(h),
            Err(e) => panic!("a submit failed across the losses: {e}"),
        }
    }
    done
}

fn main() {
    // `RECOVERY_ONLY=bookkeeping`: that section alone.
    if std::env::var("RECOVERY_ONLY").is_ok_and(|v| v == "bookkeeping") {
        return bookkeeping();
    }
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
    kept_copies();
    bookkeeping();
}

/// The host memory a read-only buffer's kept copy takes, as the engine counts it.
fn kept_copies() {
    let engine = engine(2);
    let data = vec![1u32; 16 << 20]; // 64 MiB
    let replicated = engine.replicate(&data).unwrap();
    let kept = engine.stats().kept_copy_bytes;
    let off = Engine::builder()
        .backends(wgpu::Backends::VULKAN)
        .adapter_name("llvmpipe")
        .devices_per_adapter(2)
        .keep_read_only_copies(false)
        .build()
        .unwrap();
    let without = off.replicate(&data).unwrap();
    println!(
        "\nA replicated 64 MiB buffer on 2 devices keeps {:.1} MiB in host memory ({:.2}x its size, once whatever the device count); with keep_read_only_copies(false), {} bytes",
        kept as f64 / (1 << 20) as f64,
        kept as f64 / replicated.size() as f64,
        off.stats().kept_copy_bytes
    );
    drop((replicated, without));
}

/// Jobs/s of 8 threads, each keeping 16 small jobs outstanding, on the noop backend, with
/// reopening on and off: alternating rounds (each side first half the time), the median of
/// each. `RECOVERY_AA=1` puts reopening on both sides, to see what the method alone shows.
fn bookkeeping() {
    let noop = |reopen: bool| {
        Engine::builder()
            .backends(wgpu::Backends::NOOP)
            .reopen_lost_devices(reopen)
            .build()
            .expect("an engine on the noop backend")
    };
    let aa = std::env::var("RECOVERY_AA").is_ok(); // both on: what the method alone shows
    let engines = [noop(true), noop(aa)];
    let kernels: Vec<Kernel> = engines
        .iter()
        .map(|e| e.kernel(kernels::scale()).unwrap())
        .collect();
    let x: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let round = |i: usize| {
        let (engine, scale) = (&engines[i], &kernels[i]);
        let start = Instant::now();
        let jobs = 4_000;
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut flight = std::collections::VecDeque::new();
                    for _ in 0..jobs {
                        if flight.len() == 16 {
                            let h: JobHandle = flight.pop_front().unwrap();
                            h.wait_timeout(Duration::from_secs(60)).unwrap();
                        }
                        flight
                            .push_back(engine.submit(kernels::scale_job(scale, 2.0, &x)).unwrap());
                    }
                    for h in flight {
                        h.wait_timeout(Duration::from_secs(60)).unwrap();
                    }
                });
            }
        });
        (8 * jobs) as f64 / start.elapsed().as_secs_f64()
    };
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for k in 0..8 {
        // Each order half the time, so neither side gains from going first.
        if k % 2 == 0 {
            on.push(round(0));
            off.push(round(1));
        } else {
            off.push(round(1));
            on.push(round(0));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on, off) = (median(&mut on), median(&mut off));
    println!(
        "\nReplay bookkeeping on the submit path (noop, 8 threads x 16 outstanding, 8 alternating rounds): {on:.0} jobs/s with reopening, {off:.0} without: {:.3}x",
        on / off
    );
}
