//! Shared helpers for the integration tests. They run on a real adapter (lavapipe in CI) and
//! fail, never skip, when there is none.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

use wgpu_batch::{Engine, EngineBuilder, Job, Kernel, KernelSource, wgpu};

/// Every wait in the tests is bounded by this, so a deadlock fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(120);

/// Adds one to each `u32` of `src` into `dst` (over the shorter of the two).
pub const INC: &str = "
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&dst) && id.x < arrayLength(&src) { dst[id.x] = src[id.x] + 1u; }
}";

/// The backends the tests use: `WGPU_BACKEND` if set, else Vulkan (lavapipe in CI).
pub fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::VULKAN)
}

/// A builder on the tests' backends.
pub fn builder() -> EngineBuilder {
    let _ = env_logger::builder().is_test(true).try_init();
    Engine::builder().backends(backends())
}

/// Builds `b`, or fails the test saying how to get an adapter.
pub fn build(b: EngineBuilder) -> Engine {
    match b.build() {
        Ok(e) => e,
        Err(e) => panic!(
            "these tests need a GPU or a software adapter: {e}\n\
             install one with `apt-get install mesa-vulkan-drivers` (lavapipe), or set WGPU_BACKEND"
        ),
    }
}

/// An engine with the default settings on the tests' backends.
pub fn engine() -> Engine {
    build(builder())
}

/// Deterministic pseudo-random f32s in [-1, 1).
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Asserts `got` equals `want` element by element within `tol`.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w}"
        );
    }
}

/// A kernel that keeps the device busy: every invocation loops `iters` times (uniform `x`).
const SPIN: &str = "
@group(0) @binding(0) var<uniform> p: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = id.x + id.y * n.x * 64u;
    var acc = f32(i);
    for (var k = 0u; k < p.x; k++) { acc = acc * 0.999 + 1.0; }
    if i < arrayLength(&out) { out[i] = acc; }
}";

/// Jobs that each keep one device busy for about a given time (calibrated on the device).
pub struct Spinner {
    pub kernel: Kernel,
    pub groups: (u32, u32),
}

/// Loop length per invocation: well under llvmpipe's 65,535-iteration cap.
const SPIN_ITERS: u32 = 4_000;

impl Spinner {
    /// Calibrates on `engine`'s device `device` so one job takes about `target`.
    pub fn new(engine: &Engine, device: usize, target: Duration) -> Spinner {
        let kernel = engine.kernel(KernelSource::wgsl("spin", SPIN)).unwrap();
        let probe = Spinner {
            kernel,
            groups: (16, 1),
        };
        let mut times: Vec<Duration> = (0..3)
            .map(|_| {
                let t = Instant::now();
                engine
                    .submit(probe.job().on_device(device))
                    .unwrap()
                    .wait_timeout(WAIT)
                    .unwrap();
                t.elapsed()
            })
            .collect();
        times.sort();
        let per_group = times[1].as_secs_f64() / 16.0;
        let total = (target.as_secs_f64() / per_group).ceil().max(1.0) as u64;
        let x = total.min(65_535) as u32;
        let y = total.div_ceil(x as u64).min(65_535) as u32;
        Spinner {
            kernel: probe.kernel,
            groups: (x, y),
        }
    }

    /// One busy job (with no deadline, whatever the engine's default timeout).
    pub fn job(&self) -> Job {
        Job::new(&self.kernel)
            .uniform(0, &[SPIN_ITERS, 0, 0, 0])
            .output::<f32>(1, 64)
            .workgroups(self.groups.0, self.groups.1, 1)
            .timeout(Duration::MAX)
    }
}

/// A device opened the way an application opens its own (for `EngineBuilder::with_device`).
pub fn app_device() -> (wgpu::Adapter, wgpu::Device, wgpu::Queue) {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends();
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .expect("a GPU or lavapipe (apt-get install mesa-vulkan-drivers)");
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    (adapter, device, queue)
}
