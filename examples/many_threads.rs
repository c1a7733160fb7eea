//! Many threads, one engine: each thread submits small SAXPY jobs, keeps a window of them in
//! flight and checks every result. Prints the throughput and how well the jobs were batched.
//!
//! `cargo run --release --example many_threads -- [threads] [jobs per thread] [elements]`

use std::time::{Duration, Instant};

use wgpu_batch::{Engine, kernels};

/// Runs `threads x jobs` SAXPY jobs of `n` elements, verifies each, and returns jobs per second.
fn many_threads(
    engine: &Engine,
    threads: usize,
    jobs: usize,
    n: usize,
) -> Result<f64, wgpu_batch::Error> {
    let saxpy = engine.kernel(kernels::saxpy())?;
    let start = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let saxpy = &saxpy;
                s.spawn(move || -> Result<(), wgpu_batch::Error> {
                    let x: Vec<f32> = (0..n).map(|i| (i % 100) as f32).collect();
                    let y = vec![t as f32; n];
                    let mut window = std::collections::VecDeque::new();
                    for i in 0..jobs {
                        window.push_back(engine.submit(kernels::saxpy_job(saxpy, 2.0, &x, &y))?);
                        if window.len() == 32 || i == jobs - 1 {
                            while let Some(h) = window.pop_front() {
                                let out: Vec<f32> =
                                    h.wait_timeout(Duration::from_secs(60))?.read(2)?;
                                assert!(
                                    out.iter().zip(&x).all(|(o, x)| *o == 2.0 * x + t as f32),
                                    "wrong result"
                                );
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("worker panicked"))
    })?;
    Ok((threads * jobs) as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (threads, jobs, n) = (arg(1, 8), arg(2, 2000), arg(3, 4096));
    let timing = std::env::var("GPU_TIMING").is_ok_and(|v| v == "1");
    let balance = match std::env::var("BALANCE").as_deref() {
        Ok("least") => wgpu_batch::Balance::LeastOutstanding,
        Ok("rr") => wgpu_batch::Balance::RoundRobin,
        _ => wgpu_batch::Balance::Weighted,
    };
    let engine = Engine::builder()
        .gpu_timing(timing)
        .balance(balance)
        .build()?;
    let rate = many_threads(&engine, threads, jobs, n)?;
    let stats = engine.stats();
    println!("{threads} threads x {jobs} jobs of {n} elements: {rate:.0} jobs/s, all verified");
    for d in &stats.devices {
        let name = &engine.devices()[d.device].adapter;
        println!(
            "  device {} ({name}): {} jobs in {} batches (mean {:.1}, max {}), latency p50 {:?} p99 {:?}",
            d.device,
            d.completed,
            d.batches,
            d.mean_batch,
            d.max_batch,
            d.latency_p50,
            d.latency_p99
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn many_threads_verifies() {
        let engine = wgpu_batch::Engine::new().expect("no GPU adapter");
        assert!(super::many_threads(&engine, 4, 50, 1000).unwrap() > 0.0);
    }
}
