//! What the engine reports: per-device counters and latency percentiles, read lock-free while
//! a load runs.
//!
//! `cargo run --release --example stats`

use std::time::Duration;

use wgpu_batch::{Engine, EngineStats, kernels};

/// Runs a burst of SCALE jobs of mixed sizes and returns the stats afterwards.
fn burst(engine: &Engine, jobs: usize) -> Result<EngineStats, wgpu_batch::Error> {
    let scale = engine.kernel(kernels::scale())?;
    let handles = (0..jobs)
        .map(|i| engine.submit(kernels::scale_job(&scale, 2.0, &vec![1.0; 256 << (i % 6)])))
        .collect::<Result<Vec<_>, _>>()?;
    for h in handles {
        h.wait_timeout(Duration::from_secs(60))?;
    }
    Ok(engine.stats())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let engine = Engine::new()?;
    let stats = burst(&engine, 5000)?;
    println!(
        "| device | adapter | completed | failed | batches | mean batch | max batch | queue p50 | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for d in &stats.devices {
        let info = &engine.devices()[d.device];
        println!(
            "| {} | {} ({:?}) | {} | {} | {} | {:.1} | {} | {:?} | {:?} | {:?} |",
            d.device,
            info.adapter,
            info.backend,
            d.completed,
            d.failed,
            d.batches,
            d.mean_batch,
            d.max_batch,
            d.queue_wait_p50,
            d.latency_p50,
            d.latency_p99
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn stats_count_every_job() {
        let engine = wgpu_batch::Engine::new().expect("no GPU adapter");
        let stats = super::burst(&engine, 300).unwrap();
        assert_eq!(stats.completed(), 300);
        assert!(stats.batches() >= 1 && stats.batches() <= 300);
    }
}
