//! The engine's batch settings, as the builder sets them and every device's batch loop and
//! submitter read them.

use std::time::Duration;

/// Batch formation settings, shared by every device of an engine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchConfig {
    pub(crate) max_jobs: usize,
    pub(crate) max_bytes: u64,
    pub(crate) max_delay: Duration,
    pub(crate) max_in_flight: usize,
    /// Share one bind group among same-shaped jobs of a kernel through dynamic offsets.
    pub(crate) shared_bind_groups: bool,
    /// How much priority one level is worth, in waiting time (see `device/queue.rs`).
    pub(crate) priority_aging: Duration,
    /// Time each job on the GPU with timestamp queries, where the device supports them.
    pub(crate) gpu_timing: bool,
    /// Free bytes the buffer pool may keep.
    pub(crate) pool_budget: u64,
    /// Run same-kernel jobs of a batch as one fused dispatch (see `kernel/fusion.rs`).
    pub(crate) fusion: bool,
}

/// The features per-job GPU timing needs: timestamp queries, written inside compute passes.
pub(crate) const TIMING_FEATURES: wgpu::Features =
    wgpu::Features::TIMESTAMP_QUERY.union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
