//! Kernels: WGSL validated, reflected and flattened (`compile.rs`, `binding.rs`,
//! `flatten.rs`), rewritten for fusion (`fusion.rs`), and built into each device's pipelines
//! (`pipelines.rs`, with wgpu's pipeline cache kept on disk by `warm.rs`).

pub(crate) mod binding;
pub(crate) mod compile;
pub(crate) mod flatten;
pub(crate) mod fusion;
pub(crate) mod pipelines;
pub(crate) mod warm;
