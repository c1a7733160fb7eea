//! Kernel fusion on lavapipe (a slow device: every dispatch costs tens of microseconds, however
//! small), measured in one process, interleaved and repeated:
//!
//! - **plain**: one SAXPY job per submit on plain wgpu, one thread (`src/bin/wgpu-batch/plain.rs`, the CLI's baseline too).
//! - **ceiling**: a hand-written fused SAXPY on plain wgpu, one thread: 64 jobs' data
//!   contiguous, a job table (a uniform buffer: read once per workgroup on llvmpipe), the job
//!   index from `workgroup_id.z`, one dispatch and one submit per 64 jobs, buffers pooled,
//!   each job's result copied out.
//! - **fused** / **unfused**: the engine with fusion on (the default) and off, 8 threads each
//!   keeping 32 jobs outstanding.
//!
//! `cargo bench --bench fusion` prints markdown tables and writes `target/fusion.csv`;
//! `BENCH_SECS` (default 1) and `BENCH_REPS` (default 3) as in the throughput benchmark;
//! `FUSION_LOAD` (`256`, `4,096`, ...) runs one SAXPY row only.

#[path = "../src/bin/wgpu-batch/plain.rs"]
mod plain;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plain::Plain as Naive;
use wgpu_batch::{Engine, Job, Kernel, KernelSource, kernels, wgpu};

const THREADS: usize = 8;
const WINDOW: usize = 32;
const GROUP: usize = 64;

/// The hand-fused reference (see the module docs).
const FUSED_SAXPY: &str = "
struct Rec { x: u32, y: u32, n: u32, a: f32 }
@group(0) @binding(0) var<uniform> jobs: array<Rec, 64>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    let j = jobs[w.z];
    if g.x < j.n { y[j.y + g.x] = j.a * x[j.x + g.x] + y[j.y + g.x]; }
}";

const RELU: &str = "
@group(0) @binding(0) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if g.x < arrayLength(&v) { v[g.x] = max(v[g.x], 0.0); }
}";

/// SAXPY inputs: `x`, `y` of `n` elements.
struct Work {
    x: Arc<[f32]>,
    y: Arc<[f32]>,
}

impl Work {
    fn new(n: usize) -> Work {
        Work {
            x: (0..n).map(|i| (i % 97) as f32).collect(),
            y: (0..n).map(|i| (i % 13) as f32).collect(),
        }
    }
    fn want(&self) -> Vec<f32> {
        self.x
            .iter()
            .zip(self.y.iter())
            .map(|(x, y)| 2.0 * x + y)
            .collect()
    }
}

/// The hand-fused SAXPY on plain wgpu.
struct Ceiling {
    naive: Naive,
    pipeline: wgpu::ComputePipeline,
    /// Per total element count: table, x, y, readback buffers and their bind group.
    pool: RefCell<HashMap<usize, [wgpu::Buffer; 4]>>,
}

impl Ceiling {
    fn new() -> Ceiling {
        let naive = Naive::new(wgpu::Backends::VULKAN).expect("plain wgpu");
        let module = naive
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(FUSED_SAXPY.into()),
            });
        let pipeline = naive
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        Ceiling {
            naive,
            pipeline,
            pool: RefCell::new(HashMap::new()),
        }
    }

    /// Runs `works` (at most 64) as one fused dispatch; returns each job's result.
    fn run(&self, works: &[&Work]) -> Vec<Vec<f32>> {
        let (device, queue) = (&self.naive.device, &self.naive.queue);
        let total: usize = works.iter().map(|w| w.y.len()).sum();
        let mut pool = self.pool.borrow_mut();
        let [tb, xb, yb, rb] = pool.entry(total).or_insert_with(|| {
            use wgpu::BufferUsages as U;
            let buf = |size: usize, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: size as u64,
                    usage,
                    mapped_at_creation: false,
                })
            };
            [
                buf(16 * GROUP, U::UNIFORM | U::COPY_DST),
                buf(4 * total, U::STORAGE | U::COPY_DST),
                buf(4 * total, U::STORAGE | U::COPY_DST | U::COPY_SRC),
                buf(4 * total, U::MAP_READ | U::COPY_DST),
            ]
        });
        let (mut table, mut at, mut widest) = (Vec::new(), 0u32, 0u32);
        for w in works {
            let n = w.y.len() as u32;
            table.extend([at, at, n, 2.0f32.to_bits()]);
            queue.write_buffer(xb, 4 * u64::from(at), bytemuck::cast_slice(&w.x));
            queue.write_buffer(yb, 4 * u64::from(at), bytemuck::cast_slice(&w.y));
            at += n;
            widest = widest.max(n.div_ceil(256));
        }
        queue.write_buffer(tb, 0, bytemuck::cast_slice(&table));
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: tb.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: xb.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: yb.as_entire_binding(),
                },
            ],
        });
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(widest, 1, works.len() as u32);
        }
        enc.copy_buffer_to_buffer(yb, 0, rb, 0, 4 * total as u64);
        let index = queue.submit([enc.finish()]);
        rb.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
        device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .expect("poll");
        let out = {
            let view = rb.get_mapped_range(..).expect("mapped");
            let all: &[f32] = bytemuck::cast_slice(&view);
            let mut at = 0;
            works
                .iter()
                .map(|w| {
                    at += w.y.len();
                    all[at - w.y.len()..at].to_vec()
                })
                .collect()
        };
        rb.unmap();
        out
    }
}

/// The engine driven by `THREADS` threads with `WINDOW` jobs outstanding each.
struct EngineRun {
    engine: Engine,
    saxpy: Kernel,
    scale: Kernel,
    relu: Kernel,
}

impl EngineRun {
    fn new(fusion: bool, timing: bool) -> EngineRun {
        let engine = Engine::builder()
            .backends(wgpu::Backends::VULKAN)
            .fusion(fusion)
            .gpu_timing(timing)
            .build()
            .expect("engine");
        EngineRun {
            saxpy: engine.kernel(kernels::saxpy()).expect("saxpy"),
            scale: engine.kernel(kernels::scale()).expect("scale"),
            relu: engine
                .kernel(KernelSource::wgsl("relu", RELU))
                .expect("relu"),
            engine,
        }
    }

    fn saxpy(&self, w: &Work) -> Job {
        Job::new(&self.saxpy)
            .uniform(0, &2.0f32)
            .input_shared(1, w.x.clone())
            .inout_shared(2, w.y.clone())
            .workgroups_for(w.y.len())
    }

    /// Job `i` of the stress mix: SAXPY, scale and relu over the works in turn.
    fn mixed(&self, w: &Work, i: usize) -> Job {
        match i % 3 {
            0 => self.saxpy(w),
            1 => Job::new(&self.scale)
                .uniform(0, &0.5f32)
                .inout_shared(1, w.y.clone())
                .workgroups_for(w.y.len()),
            _ => Job::new(&self.relu)
                .inout_shared(0, w.x.clone())
                .workgroups_for(w.x.len()),
        }
    }

    /// Jobs completed in `dur`, made by `job` from a running index, each thread keeping
    /// `window` outstanding.
    fn drive(&self, dur: Duration, window_len: usize, job: &(dyn Fn(usize) -> Job + Sync)) -> u64 {
        let end = Instant::now() + dur;
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    s.spawn(move || {
                        let (mut window, mut done, mut i) = (VecDeque::new(), 0u64, t * 7919);
                        while Instant::now() < end {
                            while window.len() < window_len {
                                i += 1;
                                window.push_back(self.engine.submit(job(i)).expect("submit"));
                            }
                            window.pop_front().unwrap().wait().expect("job");
                            done += 1;
                        }
                        window
                            .into_iter()
                            .for_each(|h| drop(h.wait().expect("job")));
                        done
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        })
    }
}

struct Bench {
    secs: Duration,
    reps: usize,
    /// Pause after each measurement (large jobs: long enough for idle pools to free memory).
    settle: Duration,
    csv: String,
}

impl Bench {
    /// Jobs/s of each system (a closure that runs for the given time and returns jobs done),
    /// interleaved over the repetitions: the medians.
    fn measure(&self, systems: &[&dyn Fn(Duration) -> u64]) -> Vec<f64> {
        let mut samples = vec![Vec::new(); systems.len()];
        // For profiling: `FUSION_SYSTEM=k` runs the k-th system of each row only.
        let only: Option<usize> = std::env::var("FUSION_SYSTEM")
            .ok()
            .and_then(|v| v.parse().ok());
        for _ in 0..self.reps {
            for (i, s) in systems
                .iter()
                .enumerate()
                .filter(|(i, _)| only.is_none_or(|o| o == *i))
            {
                let start = Instant::now();
                let jobs = s(self.secs);
                samples[i].push(jobs as f64 / start.elapsed().as_secs_f64());
                // Let the last system's pools go idle and free their memory (see `pool.rs`)
                // before the next one runs.
                std::thread::sleep(self.settle);
            }
        }
        samples
            .into_iter()
            .map(|mut v| {
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(0.0)
            })
            .collect()
    }
}

/// Runs one-at-a-time plain wgpu for `dur` over `works`; jobs done.
fn plain(naive: &mut Naive, works: &[Work], dur: Duration) -> u64 {
    let (end, mut done) = (Instant::now() + dur, 0u64);
    while Instant::now() < end {
        let w = &works[done as usize % works.len()];
        naive.run(2.0, &w.x, &w.y).expect("plain job");
        done += 1;
    }
    done
}

/// Runs the hand-fused ceiling for `dur` over `works`, 64 jobs a dispatch (fewer where 64
/// would pass the device's binding size limit); jobs done.
fn ceiling(c: &Ceiling, works: &[Work], dur: Duration) -> u64 {
    let limit = c.naive.device.limits().max_storage_buffer_binding_size;
    let widest = works
        .iter()
        .map(|w| 4 * w.y.len() as u64)
        .max()
        .unwrap_or(4);
    let group = GROUP.min((limit / widest) as usize).max(1);
    let (end, mut done) = (Instant::now() + dur, 0u64);
    while Instant::now() < end {
        let jobs: Vec<&Work> = (0..group)
            .map(|k| &works[(done as usize + k) % works.len()])
            .collect();
        c.run(&jobs);
        done += group as u64;
    }
    done
}

/// The SAXPY rows: engine fused and unfused against plain and the ceiling, per workload.
fn saxpy(b: &mut Bench, out: &mut String) {
    let naive = RefCell::new(Naive::new(wgpu::Backends::VULKAN).expect("plain wgpu"));
    let ceil = Ceiling::new();
    // `FUSION_TIMING=1` times every job on the GPU (the last column then says how long).
    let timing = std::env::var("FUSION_TIMING").is_ok_and(|v| v == "1");
    let (fused, unfused) = (EngineRun::new(true, timing), EngineRun::new(false, timing));
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut sizes = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        200 + (rng % 4801) as usize
    };
    let loads: Vec<(String, Vec<Work>)> = vec![
        ("256".into(), vec![Work::new(256)]),
        ("4,096".into(), vec![Work::new(4096)]),
        (
            "mixed 200-5,000".into(),
            (0..GROUP).map(|_| Work::new(sizes())).collect(),
        ),
        ("1M".into(), vec![Work::new(1 << 20)]),
    ];
    let _ = writeln!(
        out,
        "\n### SAXPY on lavapipe, engine at {THREADS} threads x {WINDOW} outstanding (1M: x 4): jobs/s (median of {})\n",
        b.reps
    );
    let _ = writeln!(
        out,
        "| elements | plain wgpu, 1 thread | hand-fused ceiling | engine unfused | engine fused | fused / plain | fused / ceiling | fused / unfused | jobs per dispatch |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let only = std::env::var("FUSION_LOAD").ok();
    for (name, works) in loads
        .iter()
        .filter(|(n, _)| only.as_deref().is_none_or(|o| n == o))
    {
        for w in works.iter().take(4) {
            let got: Vec<f32> = fused
                .engine
                .run(fused.saxpy(w))
                .expect("job")
                .read(2)
                .expect("read");
            assert_eq!(got, w.want(), "engine: wrong result");
        }
        assert_eq!(
            ceil.run(&works.iter().take(4).collect::<Vec<_>>())[0],
            works[0].want(),
            "ceiling: wrong result"
        );
        // 256 jobs outstanding, but at most about 256 MiB of data.
        let bytes = 8 * works.iter().map(|w| w.y.len()).max().unwrap_or(1);
        let window = WINDOW.min((256 << 20) / (THREADS * bytes)).max(1);
        b.settle = Duration::from_millis(if bytes > 1 << 20 { 1500 } else { 0 });
        let before = fused.engine.stats().devices[0];
        let jf = |i: usize| fused.saxpy(&works[i % works.len()]);
        let ju = |i: usize| unfused.saxpy(&works[i % works.len()]);
        let r = b.measure(&[
            &|d| plain(&mut naive.borrow_mut(), works, d),
            &|d| ceiling(&ceil, works, d),
            &|d| unfused.drive(d, window, &ju),
            &|d| fused.drive(d, window, &jf),
        ]);
        let after = fused.engine.stats().devices[0];
        let per_dispatch = (after.completed - before.completed) as f64
            / (after.dispatches - before.dispatches).max(1) as f64;
        if timing {
            let t = (after.gpu_time - before.gpu_time)
                / (after.gpu_timed_jobs - before.gpu_timed_jobs).max(1) as u32;
            println!("{name}: GPU time per fused job {t:?}");
        }
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2} | {:.2}x | {per_dispatch:.1} |",
            r[0],
            r[1],
            r[2],
            r[3],
            r[3] / r[0],
            r[3] / r[1],
            r[3] / r[2]
        );
        let _ = writeln!(
            b.csv,
            "saxpy,{name},{:.1},{:.1},{:.1},{:.1},{per_dispatch:.2}",
            r[0], r[1], r[2], r[3]
        );
    }
}

/// The stress mix (SAXPY, scale and relu in turn over sizes 256 to 4,096): fused against
/// unfused, and jobs per dispatch and GPU time per job with `gpu_timing` off and on.
fn mixed_kernels(b: &mut Bench, out: &mut String) {
    let works: Vec<Work> = [256, 1024, 4096, 512, 2048]
        .into_iter()
        .map(Work::new)
        .collect();
    let runs = [
        ("unfused", EngineRun::new(false, false)),
        ("fused", EngineRun::new(true, false)),
        ("unfused, gpu_timing", EngineRun::new(false, true)),
        ("fused, gpu_timing", EngineRun::new(true, true)),
    ];
    let works = &works;
    let jobs: Vec<_> = runs
        .iter()
        .map(|(_, e)| move |i: usize| e.mixed(&works[i % works.len()], i))
        .collect();
    let before: Vec<_> = runs
        .iter()
        .map(|(_, e)| e.engine.stats().devices[0])
        .collect();
    let systems: Vec<Box<dyn Fn(Duration) -> u64 + '_>> = runs
        .iter()
        .zip(&jobs)
        .map(|((_, e), j)| Box::new(move |d| e.drive(d, WINDOW, j)) as Box<dyn Fn(Duration) -> u64>)
        .collect();
    let refs: Vec<&dyn Fn(Duration) -> u64> = systems.iter().map(|s| s.as_ref()).collect();
    let r = b.measure(&refs);
    let _ = writeln!(
        out,
        "\n### Mixed kernels on lavapipe (SAXPY, scale, relu; 256-4,096 elements), {THREADS} threads x {WINDOW} outstanding\n"
    );
    let _ = writeln!(
        out,
        "| engine | jobs/s | / unfused | jobs per dispatch | GPU time per job |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (k, (name, e)) in runs.iter().enumerate() {
        let (s0, s1) = (before[k], e.engine.stats().devices[0]);
        let per_dispatch =
            (s1.completed - s0.completed) as f64 / (s1.dispatches - s0.dispatches).max(1) as f64;
        let timed = s1.gpu_timed_jobs - s0.gpu_timed_jobs;
        let gpu = match timed {
            0 => "-".to_string(),
            t => format!(
                "{:.1} us",
                (s1.gpu_time - s0.gpu_time).as_secs_f64() * 1e6 / t as f64
            ),
        };
        let base = if name.contains("gpu_timing") {
            r[2]
        } else {
            r[0]
        };
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.2}x | {per_dispatch:.1} | {gpu} |",
            r[k],
            r[k] / base
        );
        let _ = writeln!(b.csv, "mixed,{name},{:.1},{per_dispatch:.2},{gpu}", r[k]);
    }
}

fn main() {
    let _ = env_logger::try_init();
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let mut b = Bench {
        secs: Duration::from_secs_f64(env("BENCH_SECS", 1.0)),
        reps: env("BENCH_REPS", 3.0) as usize,
        settle: Duration::ZERO,
        csv: "section,load,plain_or_system,ceiling_or_rate,unfused,fused,jobs_per_dispatch\n"
            .into(),
    };
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |s: &str| only.as_deref().is_none_or(|o| s.contains(o));
    let start = Instant::now();
    let mut out = String::new();
    if want("saxpy") {
        saxpy(&mut b, &mut out);
        print!("{out}");
    }
    if want("mixed") {
        let mut more = String::new();
        mixed_kernels(&mut b, &mut more);
        print!("{more}");
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fusion.csv");
    let _ = std::fs::write(&path, &b.csv);
    println!("\nwrote {} in {:.0?}", path.display(), start.elapsed());
}
