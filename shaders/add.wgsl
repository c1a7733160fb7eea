// out = a + b, element-wise over f32 arrays.
// @binding(0) a, @binding(1) b: read-only; @binding(2) out: read-write, read back.
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i < arrayLength(&out) {
        out[i] = a[i] + b[i];
    }
}
