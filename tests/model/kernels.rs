//! The kernel family of the model tests: each a WGSL kernel and its CPU semantics, over `u32`
//! with wrapping arithmetic so the GPU and the model agree bit for bit.

/// `dst[i] = src[i]` for `i < min(len)`.
pub const COPY: &str = "
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&dst) && id.x < arrayLength(&src) { dst[id.x] = src[id.x]; }
}";

/// `dst[i] = src[i] + 1`.
pub const INC: &str = "
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&dst) && id.x < arrayLength(&src) { dst[id.x] = src[id.x] + 1u; }
}";

/// `acc[i] += x[i]`.
pub const ACC: &str = "
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> acc: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&acc) && id.x < arrayLength(&x) { acc[id.x] += x[id.x]; }
}";

/// `x[i] *= s` (a uniform).
pub const SCALE: &str = "
@group(0) @binding(0) var<uniform> s: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> x: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&x) { x[id.x] = x[id.x] * s.x; }
}";

/// `out[w] = x[256 w] + ... + x[256 w + 255]`: a tree reduction in workgroup memory.
pub const REDUCE: &str = "
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
var<workgroup> part: array<u32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let base = wid.x * 256u;
    var s = 0u;
    for (var k = 0u; k < 4u; k++) {
        let i = base + k * 64u + lid.x;
        if i < arrayLength(&x) { s += x[i]; }
    }
    part[lid.x] = s;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st /= 2u) {
        if lid.x < st { part[lid.x] += part[lid.x + st]; }
        workgroupBarrier();
    }
    if lid.x == 0u && wid.x < arrayLength(&out) { out[wid.x] = part[0]; }
}";

/// Over a `w x h` grid (uniform): `dst[i] = 3 src[i] + 1000 x + y`.
pub const GRID: &str = "
@group(0) @binding(0) var<uniform> d: vec4<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(8, 8) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < d.x && id.y < d.y {
        let i = id.y * d.x + id.x;
        if i < arrayLength(&dst) && i < arrayLength(&src) {
            dst[i] = src[i] * 3u + id.x * 1000u + id.y;
        }
    }
}";

/// `bins[x[i] % len(bins)] += 1`, with atomics.
pub const HIST: &str = "
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> bins: array<atomic<u32>>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&x) { atomicAdd(&bins[x[id.x] % arrayLength(&bins)], 1u); }
}";

/// Which kernel a step runs, with its scalar parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Copy,
    Inc,
    Acc,
    Scale(u32),
    Reduce,
    /// Grid width (the height follows from the source length).
    Grid(u32),
    Hist,
}

impl Op {
    /// Applies the op on the CPU: `src` is what binding 0 (or 1 for `Grid`) reads, `dst` what
    /// the read-write binding holds before the step and after it.
    pub fn apply(self, src: &[u32], dst: &mut [u32]) {
        let n = src.len().min(dst.len());
        match self {
            Op::Copy => dst[..n].copy_from_slice(&src[..n]),
            Op::Inc => (0..n).for_each(|i| dst[i] = src[i].wrapping_add(1)),
            Op::Acc => (0..n).for_each(|i| dst[i] = dst[i].wrapping_add(src[i])),
            Op::Scale(s) => dst.iter_mut().for_each(|v| *v = v.wrapping_mul(s)),
            Op::Reduce => {
                for (w, out) in dst.iter_mut().enumerate().take(src.len().div_ceil(256)) {
                    let part = &src[w * 256..(w * 256 + 256).min(src.len())];
                    *out = part.iter().fold(0u32, |a, &v| a.wrapping_add(v));
                }
            }
            Op::Grid(w) => {
                let w = w as usize;
                for i in 0..n.min(w * (src.len() / w)) {
                    let (x, y) = ((i % w) as u32, (i / w) as u32);
                    dst[i] = src[i]
                        .wrapping_mul(3)
                        .wrapping_add(x.wrapping_mul(1000))
                        .wrapping_add(y);
                }
            }
            Op::Hist => {
                let bins = dst.len() as u32;
                src.iter().for_each(|&v| {
                    dst[(v % bins) as usize] = dst[(v % bins) as usize].wrapping_add(1)
                });
            }
        }
    }

    /// The workgroups a step needs for a source of `src` and a destination of `dst` elements.
    pub fn workgroups(self, src: usize, dst: usize) -> (u32, u32) {
        let g = |n: usize, per: usize| n.div_ceil(per).max(1) as u32;
        match self {
            Op::Copy | Op::Inc | Op::Acc => (g(src.min(dst), 64), 1),
            Op::Scale(_) => (g(dst, 64), 1),
            Op::Hist => (g(src, 64), 1),
            Op::Reduce => (g(src, 256), 1),
            Op::Grid(w) => (g(w as usize, 8), g(src / w as usize, 8)),
        }
    }

    /// The bindings (source, destination); `Scale` reads no storage source.
    pub fn bindings(self) -> (Option<u32>, u32) {
        match self {
            Op::Scale(_) => (None, 1),
            Op::Grid(_) => (Some(1), 2),
            _ => (Some(0), 1),
        }
    }
}
