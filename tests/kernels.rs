//! Every shipped kernel against a CPU reference, at sizes around the workgroup size, on every
//! adapter of the machine (lavapipe Vulkan and llvmpipe GL in CI), through
//! `wgpu_batch::testing::for_each_adapter`.

mod common;

use common::{WAIT, assert_close, data};
use wgpu_batch::{Engine, Job, kernels, testing};

const SIZES: [usize; 7] = [1, 255, 256, 257, 1000, 4099, 100_003];

/// Runs `check` on every adapter; the kernels must be right on all of them.
fn on_every_adapter(check: impl FnMut(&Engine, &wgpu_batch::DeviceInfo)) {
    let _ = env_logger::builder().is_test(true).try_init();
    let reports = testing::for_each_adapter(check);
    assert!(!reports.is_empty());
}

fn run(engine: &Engine, job: Job) -> wgpu_batch::JobOutput {
    engine.submit(job).unwrap().wait_timeout(WAIT).unwrap()
}

#[test]
fn saxpy_matches_cpu() {
    on_every_adapter(|engine, _| {
        let k = engine.kernel(kernels::saxpy()).unwrap();
        for n in SIZES {
            let (x, y) = (data(n, 1), data(n, 2));
            let got: Vec<f32> = run(engine, kernels::saxpy_job(&k, 1.5, &x, &y))
                .read(2)
                .unwrap();
            // A fused multiply-add rounds once: near cancellation that is many ULPs apart.
            let want: Vec<f32> = x.iter().zip(&y).map(|(x, y)| 1.5 * x + y).collect();
            assert_close(&got, &want, 1e-6);
        }
    });
}

#[test]
fn add_matches_cpu() {
    on_every_adapter(|engine, _| {
        let k = engine.kernel(kernels::add()).unwrap();
        for n in SIZES {
            let (a, b) = (data(n, 3), data(n, 4));
            let got: Vec<f32> = run(engine, kernels::add_job(&k, &a, &b)).read(2).unwrap();
            let want: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
            testing::assert_close(&got, &want, 0);
        }
    });
}

#[test]
fn scale_matches_cpu() {
    on_every_adapter(|engine, _| {
        let k = engine.kernel(kernels::scale()).unwrap();
        for n in SIZES {
            let x = data(n, 5);
            let got: Vec<f32> = run(engine, kernels::scale_job(&k, -3.0, &x))
                .read(1)
                .unwrap();
            let want: Vec<f32> = x.iter().map(|x| -3.0 * x).collect();
            testing::assert_close(&got, &want, 0);
        }
    });
}

#[test]
fn sum_partials_match_cpu() {
    on_every_adapter(|engine, _| {
        let k = engine.kernel(kernels::sum()).unwrap();
        for n in SIZES {
            let x = data(n, 6);
            let got: Vec<f32> = run(engine, kernels::sum_job(&k, &x)).read(1).unwrap();
            let want: Vec<f32> = x
                .chunks(kernels::SUM_ELEMENTS_PER_WORKGROUP)
                .map(|c| c.iter().map(|&v| v as f64).sum::<f64>() as f32)
                .collect();
            assert_close(&got, &want, 1e-4);
        }
    });
}

#[test]
fn reduce_sum_matches_cpu() {
    let engine = common::engine();
    let k = engine.kernel(kernels::sum()).unwrap();
    for n in [1, 1023, 1025, 3_000_001] {
        let x = data(n, 7);
        let want: f64 = x.iter().map(|&v| v as f64).sum();
        let got = kernels::reduce_sum(&engine, &k, &x).unwrap() as f64;
        assert!(
            (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
            "n={n}: got {got}, want {want}"
        );
    }
}

#[test]
fn two_dimensional_dispatch_and_user_kernel() {
    // A user kernel with a fixed-size uniform struct and a 2D grid.
    const SRC: &str = "
        struct Dims { w: u32, h: u32 }
        @group(0) @binding(0) var<uniform> dims: Dims;
        @group(0) @binding(1) var<storage, read_write> out: array<u32>;
        @compute @workgroup_size(8, 8)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < dims.w && id.y < dims.h { out[id.y * dims.w + id.x] = id.x * 1000u + id.y; }
        }";
    let engine = common::engine();
    let k = engine
        .kernel(wgpu_batch::KernelSource::wgsl("grid", SRC))
        .unwrap();
    let (w, h) = (37u32, 21u32);
    let job = Job::new(&k)
        .uniform(0, &[w, h])
        .output::<u32>(1, (w * h) as usize)
        .workgroups(w.div_ceil(8), h.div_ceil(8), 1);
    let got: Vec<u32> = engine.run(job).unwrap().read(1).unwrap();
    let want: Vec<u32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| x * 1000 + y))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn per_job_bind_groups_and_shared_inputs_give_the_same_results() {
    // Both bind group strategies, with mixed kernels and shapes in the same batches.
    for shared in [true, false] {
        let engine = common::build(
            common::builder()
                .shared_bind_groups(shared)
                .max_batch_jobs(32),
        );
        let saxpy = engine.kernel(kernels::saxpy()).unwrap();
        let add = engine.kernel(kernels::add()).unwrap();
        let x: std::sync::Arc<[f32]> = data(3000, 8).into();
        let mut handles = Vec::new();
        for i in 0..200usize {
            let n = 1 + (i * 37) % 3000;
            let y = vec![i as f32; n];
            let job = if i % 2 == 0 {
                Job::new(&saxpy)
                    .uniform(0, &2.0f32)
                    .input_shared(1, x[..n].to_vec())
                    .inout_shared(2, y.clone())
            } else {
                kernels::add_job(&add, &x[..n], &y)
            };
            handles.push((i, n, engine.submit(job.workgroups_for(n)).unwrap()));
        }
        for (i, n, h) in handles {
            let out = h.wait_timeout(WAIT).unwrap();
            let got: Vec<f32> = out.read(2).unwrap();
            let a = if i % 2 == 0 { 2.0 } else { 1.0 };
            let want: Vec<f32> = x[..n].iter().map(|x| a * x + i as f32).collect();
            assert_close(&got, &want, 1e-6);
        }
        assert!(engine.stats().devices[0].max_batch > 1, "jobs were batched");
    }
}

#[test]
fn linear_matches_cpu() {
    on_every_adapter(|engine, _| {
        let k = engine.kernel(kernels::linear()).unwrap();
        for (m, kk, n, relu) in [
            (1, 1, 1, 0),
            (3, 17, 5, 1),
            (33, 64, 20, 0),
            (50, 200, 37, 1),
        ] {
            let (a, w, b) = (data(m * kk, 10), data(kk * n, 11), data(n, 12));
            let dims = kernels::Dims {
                m: m as u32,
                k: kk as u32,
                n: n as u32,
                relu,
            };
            let (x, y, z) = kernels::linear_workgroups(dims);
            let job = Job::new(&k)
                .uniform(0, &dims)
                .input(1, &a)
                .input(2, &w)
                .input(3, &b)
                .output::<f32>(4, m * n);
            let got: Vec<f32> = run(engine, job.workgroups(x, y, z)).read(4).unwrap();
            let want: Vec<f32> = (0..m * n)
                .map(|e| {
                    let (r, c) = (e / n, e % n);
                    let v = b[c] + (0..kk).map(|i| a[r * kk + i] * w[i * n + c]).sum::<f32>();
                    if relu == 1 { v.max(0.0) } else { v }
                })
                .collect();
            assert_close(&got, &want, 1e-4);
        }
    });
}
