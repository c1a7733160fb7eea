//! The built-in kernel library: WGSL from `shaders/`, each tested against a CPU reference.
//!
//! Each function returns a [`KernelSource`] for [`Engine::kernel`](crate::Engine::kernel); the
//! `*_job` helpers build a correctly bound [`Job`] for it. The element-wise kernels (`saxpy`,
//! `add`, `scale`, `sum`) use 256 invocations per workgroup and bound every access by
//! `arrayLength`, so any length works; [`linear`] is a dense layer for multi-step jobs.

use crate::engine::Engine;
use crate::error::Result;
use crate::job::Job;
use crate::kernel::compile::{Kernel, KernelSource};

/// Elements one workgroup of [`sum`] reduces to one partial sum.
pub const SUM_ELEMENTS_PER_WORKGROUP: usize = 1024;

/// `y = a * x + y` over `f32`. Bindings: 0 `a` (uniform `f32`), 1 `x` (input), 2 `y` (inout).
pub fn saxpy() -> KernelSource {
    KernelSource::wgsl("saxpy", include_str!("../shaders/saxpy.wgsl"))
}

/// `out = a + b` over `f32`. Bindings: 0 `a` (input), 1 `b` (input), 2 `out` (output).
pub fn add() -> KernelSource {
    KernelSource::wgsl("add", include_str!("../shaders/add.wgsl"))
}

/// `x = s * x` over `f32`. Bindings: 0 `s` (uniform `f32`), 1 `x` (inout).
pub fn scale() -> KernelSource {
    KernelSource::wgsl("scale", include_str!("../shaders/scale.wgsl"))
}

/// Partial sums of `f32`: one per [`SUM_ELEMENTS_PER_WORKGROUP`] inputs. Bindings: 0 `input`
/// (input), 1 `partial` (output). [`reduce_sum`] runs it until one value is left.
pub fn sum() -> KernelSource {
    KernelSource::wgsl("sum", include_str!("../shaders/sum.wgsl"))
}

/// A dense layer, `out = act(a . w + b)` over row-major `f32` matrices (`a` is m x k, `w` is
/// k x n, `b` has n entries, `out` is m x n; `act` is relu or identity). Bindings: 0 [`Dims`]
/// (uniform), 1 `a`, 2 `w`, 3 `b` (input or resident), 4 `out` (output, or scratch between
/// steps). Workgroups are 16 x 16 over (columns, rows): see [`linear_workgroups`].
pub fn linear() -> KernelSource {
    KernelSource::wgsl("linear", include_str!("../shaders/linear.wgsl"))
}

/// The shape of a [`linear`] layer, as its uniform expects it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Dims {
    /// Rows of `a` and `out`.
    pub m: u32,
    /// Columns of `a`, rows of `w`.
    pub k: u32,
    /// Columns of `w` and `out`, entries of `b`.
    pub n: u32,
    /// 1 applies relu to the result, 0 leaves it linear.
    pub relu: u32,
}

/// Workgroups covering a [`linear`] layer's m x n output.
pub fn linear_workgroups(dims: Dims) -> (u32, u32, u32) {
    (dims.n.div_ceil(16), dims.m.div_ceil(16), 1)
}

/// A [`saxpy`] job: `y = a * x + y`, result in binding 2.
pub fn saxpy_job(kernel: &Kernel, a: f32, x: &[f32], y: &[f32]) -> Job {
    Job::new(kernel)
        .uniform(0, &a)
        .input(1, x)
        .inout(2, y)
        .workgroups_for(y.len())
}

/// An [`add`] job: `a + b`, result in binding 2.
pub fn add_job(kernel: &Kernel, a: &[f32], b: &[f32]) -> Job {
    Job::new(kernel)
        .input(0, a)
        .input(1, b)
        .output::<f32>(2, a.len())
        .workgroups_for(a.len())
}

/// A [`scale`] job: `s * x`, result in binding 1.
pub fn scale_job(kernel: &Kernel, s: f32, x: &[f32]) -> Job {
    Job::new(kernel)
        .uniform(0, &s)
        .inout(1, x)
        .workgroups_for(x.len())
}

/// A [`sum`] job: partial sums of `data`, in binding 1.
pub fn sum_job(kernel: &Kernel, data: &[f32]) -> Job {
    let groups = data.len().div_ceil(SUM_ELEMENTS_PER_WORKGROUP);
    Job::new(kernel)
        .input(0, data)
        .output::<f32>(1, groups)
        .workgroups(u32::try_from(groups).unwrap_or(u32::MAX), 1, 1) // too many: a Limit error
}

/// The sum of `data`, reduced on the device by repeated [`sum`] jobs.
pub fn reduce_sum(engine: &Engine, kernel: &Kernel, data: &[f32]) -> Result<f32> {
    let mut values = engine.run(sum_job(kernel, data))?.read::<f32>(1)?;
    while values.len() > 1 {
        values = engine.run(sum_job(kernel, &values))?.read::<f32>(1)?;
    }
    Ok(values.first().copied().unwrap_or(0.0))
}
