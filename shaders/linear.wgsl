// A dense layer: out[m x n] = act(a[m x k] . w[k x n] + b[n]), row-major, act = relu or identity.
// @binding(0) uniform Dims; @binding(1) a, @binding(2) w, @binding(3) b: read-only (or resident);
// @binding(4) out: read-write. One invocation per output element, over a 2D grid (x: columns,
// y: rows). The k loop is the only loop: keep k under 65,535 (llvmpipe's loop limit).
struct Dims { m: u32, k: u32, n: u32, relu: u32 }

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let col = id.x;
    let row = id.y;
    if row >= dims.m || col >= dims.n {
        return;
    }
    var acc = b[col];
    for (var i = 0u; i < dims.k; i++) {
        acc += a[row * dims.k + i] * w[i * dims.n + col];
    }
    if dims.relu != 0u {
        acc = max(acc, 0.0);
    }
    out[row * dims.n + col] = acc;
}
