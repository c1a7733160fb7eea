//! Shared helpers for the integration tests. They run on a real adapter (lavapipe in CI) and
//! fail, never skip, when there is none.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use wgpu_batch::{Engine, EngineBuilder, wgpu};

/// Every wait in the tests is bounded by this, so a deadlock fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(120);

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
