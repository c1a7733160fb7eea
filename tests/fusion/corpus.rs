//! The fusion corpus: kernels written to stress the rewrite (see `src/kernel/fusion.rs`), each with a
//! generator of random jobs. The differential test runs random mixes of them fused and
//! unfused and wants the same bits.

use wgpu_batch::{Job, Kernel, KernelSource, kernels};

/// A small deterministic generator (xorshift), so a case is its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// In `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }
    pub fn u32s(&mut self, n: usize, below: u32) -> Vec<u32> {
        (0..n)
            .map(|_| (self.next() % u64::from(below)) as u32)
            .collect()
    }
}

/// One corpus kernel: its source, whether the rewrite must fuse it, and a job generator.
pub struct Case {
    pub name: &'static str,
    pub source: fn() -> KernelSource,
    pub fused: bool,
    pub job: fn(&Kernel, &mut Rng) -> Job,
}

fn wgsl(name: &'static str, src: &'static str) -> KernelSource {
    KernelSource::wgsl(name, src)
}

fn groups(n: usize, per: usize) -> u32 {
    n.div_ceil(per).max(1) as u32
}

/// A kernel whose one expression sums 300 terms (deeper than naga's parser nests).
fn long_sum() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let terms: Vec<String> = (0..300).map(|i| format!("x[g.x] * {}.0", i % 7)).collect();
        format!(
            "@group(0) @binding(0) var<storage, read> x: array<f32>;
             @group(0) @binding(1) var<storage, read_write> y: array<f32>;
             @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
                 if g.x < arrayLength(&y) && g.x < arrayLength(&x) {{ y[g.x] = {}; }}
             }}",
            terms.join(" + ")
        )
    })
}

/// A 1D job: `n` random elements of f32 in `input` bindings, inout, output.
fn f32_job(
    k: &Kernel,
    r: &mut Rng,
    inputs: &[u32],
    inouts: &[u32],
    outputs: &[u32],
    per: usize,
) -> Job {
    let n = r.range(1, 3000);
    let mut j = Job::new(k);
    for &b in inputs {
        j = j.input(b, &r.f32s(n));
    }
    for &b in inouts {
        j = j.inout(b, &r.f32s(n));
    }
    for &b in outputs {
        j = j.output::<f32>(b, n);
    }
    j.workgroups(groups(n, per), 1, 1)
}

macro_rules! case {
    ($name:literal, $fused:expr, $src:expr, |$k:ident, $r:ident| $job:expr) => {
        Case {
            name: $name,
            source: || wgsl($name, $src),
            fused: $fused,
            job: |$k, $r| $job,
        }
    };
}

pub fn all() -> Vec<Case> {
    let mut v = vec![
        // The crate's own kernels.
        Case {
            name: "saxpy",
            source: kernels::saxpy,
            fused: true,
            job: |k, r| {
                let n = r.range(1, 5000);
                kernels::saxpy_job(k, r.f32s(1)[0], &r.f32s(n), &r.f32s(n))
            },
        },
        Case {
            name: "add",
            source: kernels::add,
            fused: true,
            job: |k, r| {
                let n = r.range(1, 5000);
                kernels::add_job(k, &r.f32s(n), &r.f32s(n))
            },
        },
        Case {
            name: "scale",
            source: kernels::scale,
            fused: true,
            job: |k, r| {
                let n = r.range(1, 5000);
                kernels::scale_job(k, r.f32s(1)[0], &r.f32s(n))
            },
        },
        Case {
            name: "sum",
            source: kernels::sum,
            fused: true,
            job: |k, r| {
                let n = r.range(1, 5000);
                kernels::sum_job(k, &r.f32s(n))
            },
        },
        Case {
            name: "linear",
            source: kernels::linear,
            fused: true,
            job: |k, r| {
                let d = kernels::Dims {
                    m: r.range(1, 20) as u32,
                    k: r.range(1, 20) as u32,
                    n: r.range(1, 40) as u32,
                    relu: r.range(0, 1) as u32,
                };
                let (x, y, z) = kernels::linear_workgroups(d);
                Job::new(k)
                    .uniform(0, &d)
                    .input(1, &r.f32s((d.m * d.k) as usize))
                    .input(2, &r.f32s((d.k * d.n) as usize))
                    .input(3, &r.f32s(d.n as usize))
                    .output::<f32>(4, (d.m * d.n) as usize)
                    .workgroups(x, y, z)
            },
        },
    ];
    v.extend(written());
    v.extend(refused());
    v
}

/// Kernels the rewrite must fuse.
fn written() -> Vec<Case> {
    vec![
        case!("relu256", true, "
            @group(0) @binding(0) var<storage, read> x: array<f32>;
            @group(0) @binding(1) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(256) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
                if id.x < arrayLength(&y) { y[id.x] = max(x[id.x], 0.0); }
            }", |k, r| f32_job(k, r, &[0], &[], &[1], 256)),
        case!("wg1", true, "
            @group(0) @binding(0) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3<u32>) {
                if w.x < arrayLength(&y) { y[w.x] = y[w.x] * 2.0 + f32(w.x); }
            }", |k, r| { let n = r.range(1, 300); Job::new(k).inout(0, &r.f32s(n)).workgroups(n as u32, 1, 1) }),
        case!("transpose2d", true, "
            @group(0) @binding(0) var<uniform> d: vec2<u32>;
            @group(0) @binding(1) var<storage, read> a: array<f32>;
            @group(0) @binding(2) var<storage, read_write> t: array<f32>;
            @compute @workgroup_size(8, 8) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
                if id.x < d.x && id.y < d.y { t[id.x * d.y + id.y] = a[id.y * d.x + id.x]; }
            }", |k, r| {
                let (w, h) = (r.range(1, 70), r.range(1, 70));
                Job::new(k).uniform(0, &[w as u32, h as u32]).input(1, &r.f32s(w * h)).output::<f32>(2, w * h)
                    .workgroups(groups(w, 8), groups(h, 8), 1)
            }),
        case!("grid3d", true, "
            @group(0) @binding(0) var<uniform> d: vec4<u32>;
            @group(0) @binding(1) var<storage, read_write> o: array<u32>;
            @compute @workgroup_size(4, 4, 4)
            fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>,
                    @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) li: u32) {
                if g.x < d.x && g.y < d.y && g.z < d.z {
                    let i = (g.z * d.y + g.y) * d.x + g.x;
                    o[i] = ((w.x + w.y * 7u + w.z * 49u) * 64u + li) ^ (nw.x * 1000u + nw.y * 100u + nw.z);
                }
            }", |k, r| {
                let (x, y, z) = (r.range(1, 13), r.range(1, 13), r.range(1, 13));
                Job::new(k).uniform(0, &[x as u32, y as u32, z as u32, 0]).output::<u32>(1, x * y * z)
                    .workgroups(groups(x, 4), groups(y, 4), groups(z, 4))
            }),
        case!("builtin_struct", true, "
            struct In { @builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32> }
            @group(0) @binding(0) var<storage, read_write> o: array<vec2<u32>>;
            @compute @workgroup_size(16) fn main(i: In) {
                if i.g.x < arrayLength(&o) { o[i.g.x] = vec2<u32>(i.g.x, i.l.x); }
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).output::<[u32; 2]>(0, n).workgroups(groups(n, 16), 1, 1) }),
        case!("tree_reduce", true, "
            @group(0) @binding(0) var<storage, read> x: array<f32>;
            @group(0) @binding(1) var<storage, read_write> out: array<f32>;
            var<workgroup> part: array<f32, 128>;
            @compute @workgroup_size(128)
            fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) w: vec3<u32>) {
                let i = w.x * 128u + li;
                part[li] = select(0.0, x[i], i < arrayLength(&x));
                workgroupBarrier();
                for (var s = 64u; s > 0u; s >>= 1u) {
                    if li < s { part[li] += part[li + s]; }
                    workgroupBarrier();
                }
                if li == 0u { out[w.x] = part[0]; }
            }", |k, r| { let n = r.range(1, 4000); Job::new(k).input(0, &r.f32s(n)).output::<f32>(1, n.div_ceil(128)).workgroups(groups(n, 128), 1, 1) }),
        case!("scan", true, "
            @group(0) @binding(0) var<storage, read_write> x: array<u32>;
            var<workgroup> t: array<u32, 64>;
            @compute @workgroup_size(64)
            fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_index) li: u32) {
                let n = arrayLength(&x);
                t[li] = select(0u, x[g.x], g.x < n);
                workgroupBarrier();
                var d = 1u;
                loop {
                    if d >= 64u { break; }
                    var v = 0u;
                    if li >= d { v = t[li - d]; }
                    workgroupBarrier();
                    t[li] += v;
                    workgroupBarrier();
                    d *= 2u;
                }
                if g.x < n { x[g.x] = t[li]; }
            }", |k, r| { let n = r.range(1, 3000); Job::new(k).inout(0, &r.u32s(n, 1000)).workgroups(groups(n, 64), 1, 1) }),
        case!("wg_uniform_load", true, "
            @group(0) @binding(0) var<storage, read> x: array<u32>;
            @group(0) @binding(1) var<storage, read_write> y: array<u32>;
            var<workgroup> first: u32;
            @compute @workgroup_size(32)
            fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_index) li: u32) {
                if li == 0u { first = x[g.x]; }
                let f = workgroupUniformLoad(&first);
                if g.x < arrayLength(&y) { y[g.x] = x[g.x] + f; }
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).input(0, &r.u32s(n, 1 << 20)).output::<u32>(1, n).workgroups(groups(n, 32), 1, 1) }),
        case!("histogram", true, "
            @group(0) @binding(0) var<storage, read> x: array<u32>;
            @group(0) @binding(1) var<storage, read_write> bins: array<atomic<u32>>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&x) { atomicAdd(&bins[x[g.x] % arrayLength(&bins)], 1u); }
            }", |k, r| { let n = r.range(1, 3000); let b = r.range(1, 40); Job::new(k).input(0, &r.u32s(n, 1000)).output::<u32>(1, b).workgroups(groups(n, 64), 1, 1) }),
        case!("atomic_total", true, "
            struct Totals { sum: atomic<u32>, max: atomic<u32>, count: atomic<u32> }
            @group(0) @binding(0) var<storage, read> x: array<u32>;
            @group(0) @binding(1) var<storage, read_write> t: Totals;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&x) {
                    atomicAdd(&t.sum, x[g.x]);
                    atomicMax(&t.max, x[g.x]);
                    if x[g.x] > 500u { atomicAdd(&t.count, 1u); }
                }
            }", |k, r| { let n = r.range(1, 3000); Job::new(k).input(0, &r.u32s(n, 1000)).output::<u32>(1, 3).workgroups(groups(n, 64), 1, 1) }),
        case!("bare_counter", true, "
            @group(0) @binding(0) var<storage, read> x: array<u32>;
            @group(0) @binding(1) var<storage, read_write> count: atomic<u32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&x) && x[g.x] > 500u { atomicAdd(&count, 1u); }
            }", |k, r| { let n = r.range(1, 3000); Job::new(k).input(0, &r.u32s(n, 1000)).output::<u32>(1, 1).workgroups(groups(n, 64), 1, 1) }),
        case!("compare_exchange_max", true, "
            @group(0) @binding(0) var<storage, read> x: array<u32>;
            @group(0) @binding(1) var<storage, read_write> best: atomic<u32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= arrayLength(&x) { return; }
                var old = atomicLoad(&best);
                for (var tries = 0u; tries < 256u; tries++) {
                    if x[g.x] <= old { break; }
                    let r = atomicCompareExchangeWeak(&best, old, x[g.x]);
                    if r.exchanged { break; }
                    old = r.old_value;
                }
            }", |k, r| { let n = r.range(1, 3000); Job::new(k).input(0, &r.u32s(n, 1 << 20)).output::<u32>(1, 1).workgroups(groups(n, 64), 1, 1) }),
        case!("struct_names_end_in_digits", true, "
            struct P2 { scale: f32, bias: f32 }
            struct Light0 { a: vec4<f32>, b: f32 }
            @group(0) @binding(0) var<uniform> p: P2;
            @group(0) @binding(1) var<storage, read> l: Light0;
            @group(0) @binding(2) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&y) { y[g.x] = y[g.x] * p.scale + p.bias + l.b * l.a.y; }
            }", |k, r| { let n = r.range(1, 3000); let v = r.f32s(7); Job::new(k).uniform(0, &[v[0], v[1]]).input(1, &v[2..7].iter().copied().chain([0.0; 3]).collect::<Vec<f32>>()).inout(2, &r.f32s(n)).workgroups(groups(n, 64), 1, 1) }),
        case!("long_expression", true, long_sum(), |k, r| f32_job(k, r, &[0], &[], &[1], 64)),
        case!("wg_atomic", true, "
            @group(0) @binding(0) var<storage, read> x: array<u32>;
            @group(0) @binding(1) var<storage, read_write> out: array<u32>;
            var<workgroup> c: atomic<u32>;
            @compute @workgroup_size(64)
            fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) li: u32) {
                if g.x < arrayLength(&x) && (x[g.x] & 1u) == 1u { atomicAdd(&c, 1u); }
                workgroupBarrier();
                if li == 0u && w.x < arrayLength(&out) { out[w.x] = atomicLoad(&c); }
            }", |k, r| { let n = r.range(1, 3000); Job::new(k).input(0, &r.u32s(n, 1000)).output::<u32>(1, n.div_ceil(64)).workgroups(groups(n, 64), 1, 1) }),
        case!("helpers", true, "
            @group(0) @binding(0) var<uniform> p: vec4<f32>;
            @group(0) @binding(1) var<storage, read> x: array<f32>;
            @group(0) @binding(2) var<storage, read_write> y: array<f32>;
            fn len() -> u32 { return arrayLength(&y); }
            fn load(i: u32) -> f32 { return x[i] * p.x; }
            fn put(i: u32, v: f32) { if i < len() { y[i] = v + p.y; } }
            fn both(i: u32) { put(i, load(i) + load(i + 1u)); }
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) { both(g.x); }
            ", |k, r| {
                let n = r.range(1, 3000);
                Job::new(k).uniform(0, &[r.f32s(1)[0], r.f32s(1)[0], 0.0, 0.0]).input(1, &r.f32s(n)).output::<f32>(2, n).workgroups(groups(n, 64), 1, 1)
            }),
        case!("early_return", true, "
            @group(0) @binding(0) var<storage, read_write> y: array<i32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= arrayLength(&y) { return; }
                let v = y[g.x];
                if v < 0 { y[g.x] = -v; return; }
                if v % 3 == 0 { return; }
                y[g.x] = v * 2;
            }", |k, r| { let n = r.range(1, 3000); let d: Vec<i32> = r.u32s(n, 2000).iter().map(|&v| v as i32 - 1000).collect(); Job::new(k).inout(0, &d).workgroups(groups(n, 64), 1, 1) }),
        case!("loops", true, "
            @group(0) @binding(0) var<uniform> it: u32;
            @group(0) @binding(1) var<storage, read> x: array<f32>;
            @group(0) @binding(2) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                let n = arrayLength(&x);
                if g.x >= n { return; }
                var acc = 0.0;
                for (var k = 0u; k < it; k++) { acc = acc * 0.5 + x[(g.x + k) % n]; }
                var j = 0u;
                while true {
                    j += 1u;
                    if j > 3u { break; }
                    if (j & 1u) == 0u { continue; }
                    acc += f32(j);
                }
                y[g.x] = acc;
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).uniform(0, &(r.range(0, 20) as u32)).input(1, &r.f32s(n)).output::<f32>(2, n).workgroups(groups(n, 64), 1, 1) }),
        case!("switch", true, "
            @group(0) @binding(0) var<storage, read_write> y: array<u32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= arrayLength(&y) { return; }
                switch y[g.x] % 4u {
                    case 0u: { y[g.x] = 7u; }
                    case 1u, 2u: { y[g.x] = y[g.x] * 3u; }
                    default: { y[g.x] = ~y[g.x]; }
                }
            }", |k, r| { let n = r.range(1, 3000); Job::new(k).inout(0, &r.u32s(n, u32::MAX)).workgroups(groups(n, 64), 1, 1) }),
        case!("bits", true, "
            @group(0) @binding(0) var<storage, read> x: array<u32>;
            @group(0) @binding(1) var<storage, read_write> y: array<vec4<u32>>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= arrayLength(&x) { return; }
                let v = x[g.x];
                y[g.x] = vec4<u32>(countOneBits(v), reverseBits(v), (v << 5u) | (v >> 27u), firstLeadingBit(v));
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).input(0, &r.u32s(n, u32::MAX)).output::<[u32; 4]>(1, n).workgroups(groups(n, 64), 1, 1) }),
        case!("int_math", true, "
            @group(0) @binding(0) var<storage, read> a: array<i32>;
            @group(0) @binding(1) var<storage, read> b: array<i32>;
            @group(0) @binding(2) var<storage, read_write> o: array<i32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                let i = g.x;
                if i >= arrayLength(&o) { return; }
                o[i] = a[i] / b[i] + a[i] % b[i] + abs(a[i]) + clamp(a[i], -5, 5) + (a[i] >> 2u);
            }", |k, r| {
                let n = r.range(1, 2000);
                let a: Vec<i32> = r.u32s(n, 200_000).iter().map(|&v| v as i32 - 100_000).collect();
                let b: Vec<i32> = r.u32s(n, 200).iter().map(|&v| v as i32 - 100).collect();
                Job::new(k).input(0, &a).input(1, &b).output::<i32>(2, n).workgroups(groups(n, 64), 1, 1)
            }),
        case!("float_math", true, "
            @group(0) @binding(0) var<storage, read> x: array<f32>;
            @group(0) @binding(1) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= arrayLength(&x) { return; }
                let v = x[g.x];
                y[g.x] = sin(v) * cos(v) + exp(v) - sqrt(abs(v)) + fma(v, 2.0, 1.0) + floor(v * 10.0);
            }", |k, r| f32_job(k, r, &[0], &[], &[1], 64)),
        case!("select_relational", true, "
            @group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
            @group(0) @binding(1) var<storage, read_write> y: array<u32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= arrayLength(&x) { return; }
                let v = x[g.x];
                y[g.x] = select(1u, 2u, any(v > vec4(0.5))) + select(0u, 10u, all(v < vec4(0.9)));
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).input(0, &r.f32s(4 * n)).output::<u32>(1, n).workgroups(groups(n, 64), 1, 1) }),
        case!("multi_out", true, "
            @group(0) @binding(0) var<storage, read> x: array<f32>;
            @group(0) @binding(1) var<storage, read_write> acc: array<f32>;
            @group(0) @binding(2) var<storage, read_write> sq: array<f32>;
            @group(0) @binding(3) var<storage, read_write> neg: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                let i = g.x;
                if i < arrayLength(&x) { acc[i] += x[i]; sq[i] = x[i] * x[i]; }
                if i < arrayLength(&neg) { neg[i] = -x[i]; }
            }", |k, r| {
                let n = r.range(1, 2000);
                Job::new(k).input(0, &r.f32s(n)).inout(1, &r.f32s(n)).output::<f32>(2, n).output::<f32>(3, r.range(1, n)).workgroups(groups(n, 64), 1, 1)
            }),
        case!("output_only", true, "
            @group(0) @binding(0) var<storage, read_write> y: array<u32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
                if g.x < arrayLength(&y) { y[g.x] = g.x * 3u + n.x; }
            }", |k, r| { let n = r.range(1, 5000); Job::new(k).output::<u32>(0, n).workgroups(groups(n, 64), 1, 1) }),
        case!("uniform_struct", true, "
            struct P { scale: vec3<f32>, bias: f32, n: u32 }
            @group(0) @binding(0) var<uniform> p: P;
            @group(0) @binding(1) var<storage, read_write> v: array<vec4<f32>>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < min(p.n, arrayLength(&v)) { v[g.x] = vec4(v[g.x].xyz * p.scale + p.bias, v[g.x].w); }
            }", |k, r| {
                let n = r.range(1, 2000);
                let mut u = r.f32s(8);
                u[4] = f32::from_bits(r.range(0, n) as u32);
                Job::new(k).uniform(0, &<[f32; 8]>::try_from(u).unwrap()).inout(1, &r.f32s(4 * n)).workgroups(groups(n, 64), 1, 1)
            }),
        case!("uniform_small", true, "
            @group(0) @binding(0) var<uniform> a: f32;
            @group(0) @binding(1) var<uniform> b: vec2<u32>;
            @group(0) @binding(2) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&y) { y[g.x] = y[g.x] * a + f32(b.x) - f32(b.y); }
            }", |k, r| { let n = r.range(1, 3000); Job::new(k).uniform(0, &r.f32s(1)[0]).uniform(1, &[r.range(0, 9) as u32, r.range(0, 9) as u32]).inout(2, &r.f32s(n)).workgroups(groups(n, 64), 1, 1) }),
        case!("uniform_array_index", true, "
            @group(0) @binding(0) var<uniform> c: array<vec4<f32>, 4>;
            @group(0) @binding(1) var<storage, read> k: array<u32>;
            @group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&y) { y[g.x] = c[k[g.x]] + vec4(c[3u - k[g.x]][k[g.x]]); }
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).uniform(0, &<[f32; 16]>::try_from(r.f32s(16)).unwrap()).input(1, &r.u32s(n, 4)).output::<[f32; 4]>(2, n).workgroups(groups(n, 64), 1, 1) }),
        case!("uniform_matrix", true, "
            @group(0) @binding(0) var<uniform> m: mat4x4<f32>;
            @group(0) @binding(1) var<storage, read_write> v: array<vec4<f32>>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&v) { v[g.x] = m * v[g.x] + m[g.x % 4u]; }
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).uniform(0, &<[f32; 16]>::try_from(r.f32s(16)).unwrap()).inout(1, &r.f32s(4 * n)).workgroups(groups(n, 64), 1, 1) }),
        case!("particles", true, "
            struct Particle { pos: vec2<f32>, vel: vec2<f32>, life: f32, id: u32 }
            @group(0) @binding(0) var<uniform> dt: f32;
            @group(0) @binding(1) var<storage, read_write> ps: array<Particle>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= arrayLength(&ps) { return; }
                ps[g.x].pos += ps[g.x].vel * dt;
                ps[g.x].life -= dt;
                let p = ps[g.x];
                if p.life < 0.0 { ps[g.x].id = p.id + 1000u; }
            }", |k, r| {
                let n = r.range(1, 1500);
                let mut words: Vec<u32> = r.f32s(6 * n).iter().map(|f| f.to_bits()).collect();
                words.iter_mut().skip(5).step_by(6).for_each(|w| *w %= 100);
                Job::new(k).uniform(0, &0.25f32).inout(1, &words).workgroups(groups(n, 64), 1, 1)
            }),
        case!("vector_component", true, "
            @group(0) @binding(0) var<storage, read_write> v: array<vec4<u32>>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= arrayLength(&v) { return; }
                let c = v[g.x][g.x % 4u];
                v[g.x][(c + 1u) % 4u] = c + v[g.x][c % 4u];
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).inout(0, &r.u32s(4 * n, 50)).workgroups(groups(n, 64), 1, 1) }),
        case!("fixed_storage", true, "
            @group(0) @binding(0) var<storage, read> lut: array<f32, 16>;
            @group(0) @binding(1) var<storage, read> x: array<u32>;
            @group(0) @binding(2) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&x) { y[g.x] = lut[x[g.x]]; }
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).input(0, &r.f32s(16)).input(1, &r.u32s(n, 20)).output::<f32>(2, n).workgroups(groups(n, 64), 1, 1) }),
        case!("oob_read", true, "
            @group(0) @binding(0) var<storage, read> x: array<f32>;
            @group(0) @binding(1) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&y) { y[g.x] = x[g.x + 7u] + x[100000]; }
            }", |k, r| f32_job(k, r, &[0], &[], &[1], 64)),
        case!("oob_write", true, "
            @group(0) @binding(0) var<storage, read> x: array<f32>;
            @group(0) @binding(1) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                // One writer per element, in bounds or not, so that a device that clamps
                // (every out-of-bounds write lands on the last element) has no race either.
                if g.x + 1u < arrayLength(&y) { y[g.x] = x[g.x + 1u]; }
                if g.x == 0u { y[arrayLength(&y) + 3u] = 5.0; y[100000u] = 6.0; }
            }", |k, r| f32_job(k, r, &[0], &[1], &[], 64)),
        case!("oob_signed", true, "
            @group(0) @binding(0) var<storage, read> x: array<u32>;
            @group(0) @binding(1) var<storage, read_write> y: array<u32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                let i = i32(g.x);
                if g.x + 1u < arrayLength(&y) { y[g.x] = x[i - 5] + 1u; }
                if g.x == 0u { y[i - 70] = 9u; }
            }", |k, r| { let n = r.range(1, 2000); Job::new(k).input(0, &r.u32s(n, 1000)).inout(1, &r.u32s(n, 1000)).workgroups(groups(n, 64), 1, 1) }),
        case!("oob_atomic", true, "
            @group(0) @binding(0) var<storage, read_write> c: array<atomic<u32>>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                atomicAdd(&c[g.x % 40u], 1u);
            }", |k, r| { let n = r.range(1, 30); Job::new(k).inout(0, &r.u32s(n, 10)).workgroups(r.range(1, 4) as u32, 1, 1) }),
        case!("struct_member", true, "
            struct S { a: array<u32, 3>, b: u32 }
            @group(0) @binding(0) var<storage, read> k: array<u32>;
            @group(0) @binding(1) var<storage, read_write> s: array<S>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&k) {
                    let j = k[g.x];
                    s[g.x].b = s[g.x].a[j % 3u] + k[g.x + j];
                    s[g.x].a[(j + 1u) % 3u] = 77u;
                }
            }", |k, r| { let n = r.range(1, 1000); Job::new(k).input(0, &r.u32s(n, 5)).inout(1, &r.u32s(4 * n, 1000)).workgroups(groups(n, 64), 1, 1) }),
        Case {
            name: "override",
            source: || wgsl("override", "
                override GAIN: f32 = 1.0;
                override WG: u32 = 64u;
                @group(0) @binding(0) var<storage, read_write> y: array<f32>;
                @compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                    if g.x < arrayLength(&y) { y[g.x] *= GAIN; }
                }").constant("GAIN", 3.5).constant("WG", 32.0),
            fused: true,
            job: |k, r| { let n = r.range(1, 3000); Job::new(k).inout(0, &r.f32s(n)).workgroups(groups(n, 32), 1, 1) },
        },
        case!("blur2d", true, "
            @group(0) @binding(0) var<uniform> d: vec2<u32>;
            @group(0) @binding(1) var<storage, read> src: array<f32>;
            @group(0) @binding(2) var<storage, read_write> dst: array<f32>;
            fn at(x: i32, y: i32) -> f32 {
                let cx = clamp(x, 0, i32(d.x) - 1);
                let cy = clamp(y, 0, i32(d.y) - 1);
                return src[u32(cy) * d.x + u32(cx)];
            }
            @compute @workgroup_size(16, 16) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x >= d.x || g.y >= d.y { return; }
                var s = 0.0;
                for (var dy = -1; dy <= 1; dy++) { for (var dx = -1; dx <= 1; dx++) { s += at(i32(g.x) + dx, i32(g.y) + dy); } }
                dst[g.y * d.x + g.x] = s / 9.0;
            }", |k, r| {
                let (w, h) = (r.range(1, 60), r.range(1, 60));
                Job::new(k).uniform(0, &[w as u32, h as u32]).input(1, &r.f32s(w * h)).output::<f32>(2, w * h).workgroups(groups(w, 16), groups(h, 16), 1)
            }),
        case!("matmul_tiled", true, "
            @group(0) @binding(0) var<uniform> d: vec4<u32>;
            @group(0) @binding(1) var<storage, read> a: array<f32>;
            @group(0) @binding(2) var<storage, read> b: array<f32>;
            @group(0) @binding(3) var<storage, read_write> c: array<f32>;
            var<workgroup> ta: array<array<f32, 8>, 8>;
            var<workgroup> tb: array<array<f32, 8>, 8>;
            @compute @workgroup_size(8, 8)
            fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
                let m = d.x;
                let kk = d.y;
                let n = d.z;
                var acc = 0.0;
                for (var t = 0u; t < (kk + 7u) / 8u; t++) {
                    let ac = t * 8u + l.x;
                    let br = t * 8u + l.y;
                    ta[l.y][l.x] = select(0.0, a[g.y * kk + ac], g.y < m && ac < kk);
                    tb[l.y][l.x] = select(0.0, b[br * n + g.x], br < kk && g.x < n);
                    workgroupBarrier();
                    for (var i = 0u; i < 8u; i++) { acc += ta[l.y][i] * tb[i][l.x]; }
                    workgroupBarrier();
                }
                if g.y < m && g.x < n { c[g.y * n + g.x] = acc; }
            }", |k, r| {
                let (m, kk, n) = (r.range(1, 30), r.range(1, 30), r.range(1, 30));
                Job::new(k).uniform(0, &[m as u32, kk as u32, n as u32, 0]).input(1, &r.f32s(m * kk)).input(2, &r.f32s(kk * n))
                    .output::<f32>(3, m * n).workgroups(groups(n, 8), groups(m, 8), 1)
            }),
        case!("big_workgroup", true, "
            @group(0) @binding(0) var<storage, read_write> y: array<u32>;
            var<workgroup> s: array<u32, 256>;
            @compute @workgroup_size(256)
            fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_index) li: u32) {
                s[255u - li] = li;
                workgroupBarrier();
                if g.x < arrayLength(&y) { y[g.x] = y[g.x] + s[li]; }
            }", |k, r| { let n = r.range(1, 3000); Job::new(k).inout(0, &r.u32s(n, 1000)).workgroups(groups(n, 256), 1, 1) }),
        case!("extra_workgroups", true, "
            @group(0) @binding(0) var<storage, read_write> y: array<u32>;
            @compute @workgroup_size(32) fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
                let i = g.y * 32u + g.x;
                if i < arrayLength(&y) { y[i] = w.x + w.y * 100u + i; }
            }", |k, r| { let n = r.range(1, 100); Job::new(k).output::<u32>(0, n).workgroups(1, r.range(1, 4) as u32, 1) }),
    ]
}

/// Kernels the rewrite must refuse (they still run, unfused).
fn refused() -> Vec<Case> {
    vec![
        case!(
            "header_array",
            false,
            "
            struct H { n: u32, v: array<u32> }
            @group(0) @binding(0) var<storage, read_write> h: H;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < h.n && g.x < arrayLength(&h.v) { h.v[g.x] += 1u; }
            }",
            |k, r| {
                let n = r.range(1, 2000);
                let mut d = r.u32s(n + 1, 100);
                d[0] = n as u32;
                Job::new(k).inout(0, &d).workgroups(groups(n, 64), 1, 1)
            }
        ),
        case!(
            "header_array_read",
            false,
            "
            struct H { scale: f32, v: array<f32> }
            @group(0) @binding(0) var<storage, read> h: H;
            @group(0) @binding(1) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&y) && g.x < arrayLength(&h.v) { y[g.x] = h.v[g.x] * h.scale; }
            }",
            |k, r| {
                let n = r.range(1, 2000);
                Job::new(k)
                    .input(0, &r.f32s(n + 1))
                    .output::<f32>(1, n)
                    .workgroups(groups(n, 64), 1, 1)
            }
        ),
        case!(
            "reserved_name",
            false,
            "
            @group(0) @binding(0) var<storage, read_write> wgpu_batch_y: array<u32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&wgpu_batch_y) { wgpu_batch_y[g.x] += 1u; }
            }",
            |k, r| {
                let n = r.range(1, 2000);
                Job::new(k)
                    .inout(0, &r.u32s(n, 100))
                    .workgroups(groups(n, 64), 1, 1)
            }
        ),
        case!(
            "struct_layout_attributes",
            false,
            "
            struct P { @size(16) a: f32, @align(16) b: f32 }
            @group(0) @binding(0) var<uniform> p: P;
            @group(0) @binding(1) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                if g.x < arrayLength(&y) { y[g.x] = y[g.x] * p.a + p.b; }
            }",
            |k, r| {
                let n = r.range(1, 2000);
                Job::new(k)
                    .uniform(0, &<[f32; 8]>::try_from(r.f32s(8)).unwrap())
                    .inout(1, &r.f32s(n))
                    .workgroups(groups(n, 64), 1, 1)
            }
        ),
    ]
}

/// A multi-step job: its kernels in step order, and a generator. Steps pass data through
/// scratch buffers, which stay per job when the steps fuse.
pub struct Chain {
    pub name: &'static str,
    pub sources: fn() -> Vec<KernelSource>,
    pub job: fn(&[Kernel], &mut Rng) -> Job,
}

const SCALE_TO: &str = "
    @group(0) @binding(0) var<uniform> s: vec4<f32>;
    @group(0) @binding(1) var<storage, read> x: array<f32>;
    @group(0) @binding(2) var<storage, read_write> t: array<f32>;
    @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
        if g.x < arrayLength(&t) { t[g.x] = s.x * x[g.x % arrayLength(&x)] + s.y; }
    }";
const ADD_FROM: &str = "
    @group(0) @binding(0) var<storage, read_write> t: array<f32>;
    @group(0) @binding(1) var<storage, read_write> y: array<f32>;
    @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
        if g.x < arrayLength(&y) { y[g.x] = y[g.x] + t[g.x] + t[g.x + 1u]; }
    }";
const HIST_TO: &str = "
    @group(0) @binding(0) var<storage, read> x: array<u32>;
    @group(0) @binding(1) var<storage, read_write> bins: array<atomic<u32>>;
    @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
        if g.x < arrayLength(&x) { atomicAdd(&bins[x[g.x] % 16u], 1u); }
    }";
const PREFIX: &str = "
    @group(0) @binding(0) var<storage, read_write> bins: array<u32>;
    @group(0) @binding(1) var<storage, read_write> out: array<u32>;
    var<workgroup> t: array<u32, 16>;
    @compute @workgroup_size(16) fn main(@builtin(local_invocation_index) li: u32) {
        t[li] = bins[li];
        workgroupBarrier();
        var acc = 0u;
        for (var k = 0u; k <= li; k++) { acc += t[k]; }
        out[li] = acc;
    }";
const VEC_SPLIT: &str = "
    @group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
    @group(0) @binding(1) var<storage, read_write> t: array<vec4<f32>>;
    @compute @workgroup_size(32) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
        if g.x < arrayLength(&x) { t[g.x] = x[g.x].wzyx * 0.5; }
    }";
const VEC_SUM: &str = "
    @group(0) @binding(0) var<storage, read_write> t: array<vec4<f32>>;
    @group(0) @binding(1) var<storage, read_write> y: array<f32>;
    @compute @workgroup_size(32) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
        if g.x < arrayLength(&y) { let v = t[g.x]; y[g.x] = v.x + v.y + v.z + v.w; t[g.x] = vec4(0.0); }
    }";

pub fn chains() -> Vec<Chain> {
    vec![
        Chain {
            name: "scale_then_add",
            sources: || vec![wgsl("scale_to", SCALE_TO), wgsl("add_from", ADD_FROM)],
            job: |k, r| {
                let n = r.range(1, 2000);
                let s = r.f32s(4);
                let m = r.range(1, n);
                Job::new(&k[0])
                    .uniform(0, &<[f32; 4]>::try_from(s).unwrap())
                    .input(1, &r.f32s(m))
                    .scratch::<f32>(2, 3, n)
                    .workgroups(groups(n, 64), 1, 1)
                    .then(&k[1])
                    .scratch::<f32>(0, 3, n)
                    .inout(1, &r.f32s(n))
                    .workgroups(groups(n, 64), 1, 1)
            },
        },
        Chain {
            name: "histogram_then_prefix",
            sources: || vec![wgsl("hist_to", HIST_TO), wgsl("prefix", PREFIX)],
            job: |k, r| {
                let n = r.range(1, 3000);
                Job::new(&k[0])
                    .input(0, &r.u32s(n, 1000))
                    .scratch::<u32>(1, 0, 16)
                    .workgroups(groups(n, 64), 1, 1)
                    .then(&k[1])
                    .scratch::<u32>(0, 0, 16)
                    .output::<u32>(1, 16)
                    .workgroups(1, 1, 1)
            },
        },
        Chain {
            name: "three_steps_two_scratch",
            sources: || {
                vec![
                    wgsl("vec_split", VEC_SPLIT),
                    wgsl("vec_sum", VEC_SUM),
                    wgsl("scale_to", SCALE_TO),
                ]
            },
            job: |k, r| {
                let n = r.range(1, 700);
                Job::new(&k[0])
                    .input(0, &r.f32s(4 * n))
                    .scratch::<[f32; 4]>(1, 1, n)
                    .workgroups(groups(n, 32), 1, 1)
                    .then(&k[1])
                    .scratch::<[f32; 4]>(0, 1, n)
                    .output::<f32>(1, n)
                    .workgroups(groups(n, 32), 1, 1)
                    .then(&k[2])
                    .uniform(0, &[2.0f32, 1.0, 0.0, 0.0])
                    .input(1, &r.f32s(n))
                    .output::<f32>(2, n)
                    .workgroups(groups(n, 64), 1, 1)
            },
        },
    ]
}
