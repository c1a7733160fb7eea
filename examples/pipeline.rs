//! A two-layer MLP forward pass as one multi-step job on resident weights:
//! `y = W2 . relu(W1 . x + b1) + b2`, for a batch of inputs, checked against the CPU.
//!
//! The weights are uploaded once and replicated on every device, so each job can run on any of
//! them; the hidden activations live in a scratch buffer that never leaves the GPU.
//!
//! `cargo run --release --example pipeline`

use std::time::Duration;

use wgpu_batch::kernels::{self, Dims};
use wgpu_batch::{DeviceBuffer, Engine, Job, Kernel};

const IN: usize = 64;
const HIDDEN: usize = 128;
const OUT: usize = 10;

/// Deterministic weights in [-0.5, 0.5).
fn weights(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

struct Mlp {
    linear: Kernel,
    w1: DeviceBuffer,
    b1: DeviceBuffer,
    w2: DeviceBuffer,
    b2: DeviceBuffer,
    host: [Vec<f32>; 4],
}

impl Mlp {
    fn new(engine: &Engine) -> Result<Mlp, wgpu_batch::Error> {
        let host = [
            weights(IN * HIDDEN, 1),
            weights(HIDDEN, 2),
            weights(HIDDEN * OUT, 3),
            weights(OUT, 4),
        ];
        Ok(Mlp {
            linear: engine.kernel(kernels::linear())?,
            w1: engine.replicate(&host[0])?,
            b1: engine.replicate(&host[1])?,
            w2: engine.replicate(&host[2])?,
            b2: engine.replicate(&host[3])?,
            host,
        })
    }

    /// One job, two steps: hidden = relu(x . W1 + b1) into scratch 0, then y = hidden . W2 + b2.
    fn forward(&self, x: &[f32]) -> Job {
        let rows = (x.len() / IN) as u32;
        let l1 = Dims {
            m: rows,
            k: IN as u32,
            n: HIDDEN as u32,
            relu: 1,
        };
        let l2 = Dims {
            m: rows,
            k: HIDDEN as u32,
            n: OUT as u32,
            relu: 0,
        };
        let (g1, g2) = (
            kernels::linear_workgroups(l1),
            kernels::linear_workgroups(l2),
        );
        Job::new(&self.linear)
            .uniform(0, &l1)
            .input(1, x)
            .buffer(2, &self.w1)
            .buffer(3, &self.b1)
            .scratch::<f32>(4, 0, rows as usize * HIDDEN)
            .workgroups(g1.0, g1.1, g1.2)
            .then(&self.linear)
            .uniform(0, &l2)
            .scratch::<f32>(1, 0, rows as usize * HIDDEN)
            .buffer(2, &self.w2)
            .buffer(3, &self.b2)
            .output::<f32>(4, rows as usize * OUT)
            .workgroups(g2.0, g2.1, g2.2)
    }

    /// The same forward pass on the CPU.
    fn cpu(&self, x: &[f32]) -> Vec<f32> {
        let layer = |a: &[f32], w: &[f32], b: &[f32], k: usize, n: usize, relu: bool| -> Vec<f32> {
            (0..a.len() / k * n)
                .map(|e| {
                    let (r, c) = (e / n, e % n);
                    let v = b[c] + (0..k).map(|i| a[r * k + i] * w[i * n + c]).sum::<f32>();
                    if relu { v.max(0.0) } else { v }
                })
                .collect()
        };
        let h = layer(x, &self.host[0], &self.host[1], IN, HIDDEN, true);
        layer(&h, &self.host[2], &self.host[3], HIDDEN, OUT, false)
    }
}

/// Runs `batches` forward passes of 32 inputs each; returns the largest error against the CPU.
fn run(engine: &Engine, batches: usize) -> Result<f32, Box<dyn std::error::Error>> {
    let mlp = Mlp::new(engine)?;
    let inputs: Vec<Vec<f32>> = (0..batches)
        .map(|i| weights(32 * IN, 100 + i as u32))
        .collect();
    let handles = inputs
        .iter()
        .map(|x| engine.submit(mlp.forward(x)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut worst = 0.0f32;
    for (x, h) in inputs.iter().zip(handles) {
        let y: Vec<f32> = h.wait_timeout(Duration::from_secs(60))?.read(4)?;
        let want = mlp.cpu(x);
        worst = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(worst, f32::max);
    }
    Ok(worst)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let engine = Engine::new()?;
    let worst = run(&engine, 200)?;
    println!(
        "200 MLP forward passes ({IN}-{HIDDEN}-{OUT}, 32 inputs each) on {} devices; max error vs CPU {worst:.2e}",
        engine.devices().len()
    );
    if worst > 1e-3 {
        return Err(format!("error {worst} too large").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mlp_matches_cpu() {
        let engine = wgpu_batch::Engine::new().expect("no GPU adapter");
        assert!(super::run(&engine, 20).unwrap() < 1e-3);
    }
}
