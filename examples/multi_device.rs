//! Every adapter of the machine at once (on a machine without a GPU: lavapipe Vulkan and
//! llvmpipe GL). Jobs go to the device with the fewest outstanding jobs; each result is checked.
//!
//! `cargo run --release --example multi_device`

use std::time::Duration;

use wgpu_batch::{Engine, kernels};

/// Runs `jobs` ADD jobs spread over every device; returns how many each device ran.
fn spread(engine: &Engine, jobs: usize) -> Result<Vec<usize>, wgpu_batch::Error> {
    let add = engine.kernel(kernels::add())?;
    let a: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
    let handles = (0..jobs)
        .map(|i| engine.submit(kernels::add_job(&add, &a, &vec![i as f32; a.len()])))
        .collect::<Result<Vec<_>, _>>()?;
    let mut per_device = vec![0; engine.devices().len()];
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.wait_timeout(Duration::from_secs(60))?;
        let sum: Vec<f32> = out.read(2)?;
        assert!(
            sum.iter().zip(&a).all(|(s, a)| *s == a + i as f32),
            "job {i} wrong"
        );
        per_device[out.device()] += 1;
    }
    Ok(per_device)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let engine = Engine::new()?;
    let per_device = spread(&engine, 2000)?;
    for (d, n) in engine.devices().iter().zip(per_device) {
        println!(
            "device {}: {} ({:?}, {:?}): {n} jobs, all verified",
            d.index, d.adapter, d.backend, d.device_type
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_device_runs_jobs() {
        let engine = wgpu_batch::Engine::new().expect("no GPU adapter");
        let per_device = super::spread(&engine, 200).unwrap();
        assert_eq!(per_device.iter().sum::<usize>(), 200);
    }
}
