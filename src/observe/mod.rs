//! Observability: the lock-free statistics (`stats.rs`), the `tracing` spans of jobs and
//! batches (`trace.rs`), and the `metrics` publisher (`publish.rs`).

#[cfg(feature = "metrics")]
pub(crate) mod publish;
pub(crate) mod stats;
pub(crate) mod trace;
