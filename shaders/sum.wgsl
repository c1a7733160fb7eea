// Partial sums: workgroup w writes the sum of input[w * 1024 .. (w + 1) * 1024] to partial[w].
// @binding(0) input: read-only; @binding(1) partial: read-write, one f32 per workgroup.
// Each of the 256 invocations adds 4 elements strided by 256, then a tree reduction in
// workgroup memory; no loop runs more than 8 times (llvmpipe caps loop iterations).
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;

const WG: u32 = 256u;
var<workgroup> acc: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let base = wid.x * WG * 4u;
    let n = arrayLength(&input);
    var s = 0.0;
    for (var k = 0u; k < 4u; k++) {
        let i = base + k * WG + lid.x;
        if i < n {
            s += input[i];
        }
    }
    acc[lid.x] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid.x < stride {
            acc[lid.x] += acc[lid.x + stride];
        }
        workgroupBarrier();
    }
    if lid.x == 0u && wid.x < arrayLength(&partial) {
        partial[wid.x] = acc[0];
    }
}
