//! A warm start: the engine keeps the driver's compiled pipelines in a directory, so the first
//! job of the next process skips compiling them. Run it twice and compare:
//!
//! `cargo run --release --example warm_start -- target/pipeline-cache`
//!
//! Each run prints how long this fresh process took from building the engine to the first
//! job's result, and whether the cache was cold (no file yet) or warm. The cache is written
//! when `Engine::kernel` built new pipelines and at shutdown.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wgpu_batch::{Engine, kernels};

/// What one fresh start cost.
struct Start {
    build: Duration,
    kernels: Duration,
    first_job: Duration,
    warm: bool,
}

/// Builds an engine on `backends` with its pipeline cache in `dir`, compiles the crate's
/// kernels and runs one SAXPY job, timing each part.
fn start(
    dir: &Path,
    backends: wgpu_batch::wgpu::Backends,
) -> Result<Start, Box<dyn std::error::Error>> {
    let warm = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    let t0 = Instant::now();
    let engine = Engine::builder()
        .backends(backends)
        .pipeline_cache_dir(dir)
        .build()?;
    let t1 = Instant::now();
    let saxpy = engine.kernel(kernels::saxpy())?;
    for source in [
        kernels::add(),
        kernels::scale(),
        kernels::sum(),
        kernels::linear(),
    ] {
        engine.kernel(source)?;
    }
    let t2 = Instant::now();
    let out = engine.run(kernels::saxpy_job(&saxpy, 2.0, &[1.0; 1024], &[1.0; 1024]))?;
    let t3 = Instant::now();
    if out.read::<f32>(2)?.iter().any(|&v| v != 3.0) {
        return Err("wrong result".into());
    }
    Ok(Start {
        build: t1 - t0,
        kernels: t2 - t1,
        first_job: t3 - t0,
        warm,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let dir: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/pipeline-cache".into())
        .into();
    let s = start(&dir, wgpu_batch::wgpu::Backends::VULKAN)?;
    println!(
        "{} cache in {}: engine built in {:.1?}, 5 kernels in {:.1?}, first result {:.1?} after start",
        if s.warm { "warm" } else { "cold" },
        dir.display(),
        s.build,
        s.kernels,
        s.first_job
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cold start writes the cache; a second start finds it and gives the same results.
    #[test]
    fn second_start_is_warm() {
        let dir = std::env::temp_dir().join(format!("wgpu-batch-warm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let vulkan = wgpu_batch::wgpu::Backends::VULKAN;
        let cold = start(&dir, vulkan)
            .expect("cold start (needs lavapipe: apt install mesa-vulkan-drivers)");
        assert!(!cold.warm);
        let files: Vec<_> = std::fs::read_dir(&dir).expect("cache dir").collect();
        assert_eq!(files.len(), 1, "one file per adapter and driver: {files:?}");
        let warm = start(&dir, vulkan).expect("warm start");
        assert!(warm.warm);
        // A damaged file is ignored (the engine starts cold) and replaced by a whole one.
        let file = files[0].as_ref().expect("entry").path();
        let whole = std::fs::read(&file).expect("cache file");
        let damaged = &whole[..whole.len() / 2];
        std::fs::write(&file, damaged).expect("truncate");
        start(&dir, vulkan).expect("start over a damaged cache");
        assert_ne!(
            std::fs::read(&file).expect("cache file"),
            damaged,
            "not rewritten"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
