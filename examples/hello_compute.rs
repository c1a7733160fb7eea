//! The quick start: run one SAXPY job, check it against the CPU, say where it ran.
//!
//! `cargo run --release --example hello_compute`

use wgpu_batch::{Engine, kernels};

/// Runs `y = 2x + 1` on 1,000,000 elements and returns the device it ran on.
fn hello(engine: &Engine) -> Result<String, Box<dyn std::error::Error>> {
    let saxpy = engine.kernel(kernels::saxpy())?;
    let n = 1_000_000;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let y = vec![1.0f32; n];

    let out = engine.run(kernels::saxpy_job(&saxpy, 2.0, &x, &y))?;
    let result: Vec<f32> = out.read(2)?;

    let expected = |i: usize| 2.0 * x[i] + y[i];
    if let Some(i) = (0..n).find(|&i| result[i] != expected(i)) {
        return Err(format!("element {i}: got {}, expected {}", result[i], expected(i)).into());
    }
    let device = &engine.devices()[out.device()];
    Ok(format!(
        "device {} ({}, {:?})",
        device.index, device.adapter, device.backend
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let engine = Engine::new()?;
    let ran_on = hello(&engine)?;
    println!("saxpy of 1,000,000 elements verified against the CPU on {ran_on}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hello_verifies() {
        let engine = wgpu_batch::Engine::new().expect("no GPU adapter");
        super::hello(&engine).unwrap();
    }
}
