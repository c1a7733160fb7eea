// x = s * x, in place.
// @binding(0) uniform s: f32; @binding(1) x: read-write, read back.
@group(0) @binding(0) var<uniform> s: f32;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i < arrayLength(&x) {
        x[i] = s * x[i];
    }
}
