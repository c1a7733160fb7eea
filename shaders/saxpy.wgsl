// y = a * x + y, element-wise over f32 arrays.
// @binding(0) uniform a: f32; @binding(1) x: read-only; @binding(2) y: read-write, read back.
@group(0) @binding(0) var<uniform> a: f32;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i < arrayLength(&y) && i < arrayLength(&x) {
        y[i] = a * x[i] + y[i];
    }
}
