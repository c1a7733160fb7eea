//! Kernel fusion's differential proof: every corpus kernel (see `fusion/corpus.rs`) gives the
//! same bits fused and unfused, alone and in random mixes, and an out-of-bounds access never
//! reaches another job's data.
//!
//! Two engines on the same adapter run the same jobs: one with fusion (the default), one
//! with `fusion(false)`. Every job of a mix is submitted before any is waited for, and the
//! fused engine waits a little for a batch to fill, so jobs of one kernel share dispatches.
//! `FUSION_CASES` sets the number of random mixes (default 12).

mod common;
#[path = "fusion/corpus.rs"]
mod corpus;

use std::sync::OnceLock;
use std::time::Duration;

use common::WAIT;
use corpus::{Case, Rng};
use proptest::prelude::*;
use wgpu_batch::{Engine, Job, Kernel};

/// Makes a job of an entry's kernels.
type MakeJob = Box<dyn Fn(&[Kernel], &mut Rng) -> Job + Send + Sync>;

/// A corpus entry: one kernel's case, or a multi-step chain, with its kernels compiled.
struct Entry {
    name: &'static str,
    /// Whether every kernel must fuse.
    fused: bool,
    kernels: Vec<Kernel>,
    job: MakeJob,
}

impl Entry {
    fn job(&self, seed: u64) -> Job {
        (self.job)(&self.kernels, &mut Rng::new(seed))
    }
}

struct Setup {
    fused: Engine,
    unfused: Engine,
    cases: Vec<Entry>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let delay = Duration::from_millis(5);
        let fused = common::build(common::builder().max_batch_delay(delay));
        let unfused = common::build(common::builder().fusion(false));
        let compile = |name: &str, src| fused.kernel(src).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut cases: Vec<Entry> = corpus::all()
            .into_iter()
            .map(|c: Case| Entry {
                name: c.name,
                fused: c.fused,
                kernels: vec![compile(c.name, (c.source)())],
                job: Box::new(move |k, r| (c.job)(&k[0], r)),
            })
            .collect();
        cases.extend(corpus::chains().into_iter().map(|c| {
            Entry {
                name: c.name,
                fused: true,
                kernels: (c.sources)()
                    .into_iter()
                    .map(|src| compile(c.name, src))
                    .collect(),
                job: Box::new(c.job),
            }
        }));
        Setup {
            fused,
            unfused,
            cases,
        }
    })
}

/// Every output binding's words (steps 0 to 3, bindings 0 to 7), per job, of `jobs` run on
/// `engine`.
fn run(engine: &Engine, jobs: Vec<Job>) -> Vec<Vec<Option<Vec<u8>>>> {
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|j| engine.submit(j).expect("submit"))
        .collect();
    handles
        .into_iter()
        .map(|h| {
            let out = h.wait_timeout(WAIT).expect("job");
            let words = |(s, b)| {
                out.read_step::<u32>(s, b)
                    .ok()
                    .map(|w| bytemuck::cast_slice(&w).to_vec())
            };
            (0..4)
                .flat_map(|s| (0..8).map(move |b| (s, b)))
                .map(words)
                .collect()
        })
        .collect()
}

/// Runs the mix (per job: case index and seed) fused and unfused; says where they differ.
fn differ(s: &Setup, mix: &[(usize, u64)]) -> Result<(), String> {
    let jobs = || -> Vec<Job> { mix.iter().map(|&(c, seed)| s.cases[c].job(seed)).collect() };
    let (fused, unfused) = (run(&s.fused, jobs()), run(&s.unfused, jobs()));
    for (j, (f, u)) in fused.iter().zip(&unfused).enumerate() {
        for (b, (fb, ub)) in f.iter().zip(u).enumerate() {
            if fb != ub {
                let (fb, ub) = (
                    fb.as_deref().unwrap_or_default(),
                    ub.as_deref().unwrap_or_default(),
                );
                let word = |v: &[u8], i: usize| {
                    v.get(4 * i..4 * i + 4)
                        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                };
                let i = (0..fb.len().max(ub.len()) / 4)
                    .find(|&i| word(fb, i) != word(ub, i))
                    .unwrap_or(0);
                return Err(format!(
                    "job {j} ({}, seed {}) step {} binding {}: {} and {} bytes; word {i}: fused {:#x?}, unfused {:#x?}",
                    s.cases[mix[j].0].name,
                    mix[j].1,
                    b / 8,
                    b % 8,
                    fb.len(),
                    ub.len(),
                    word(fb, i),
                    word(ub, i)
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn the_corpus_fuses_what_it_should() {
    let s = setup();
    let mut fused = 0;
    let singles = s.cases.iter().filter(|c| c.kernels.len() == 1);
    for c in singles.clone() {
        let reason = c.kernels[0].unfused_reason();
        assert_eq!(reason.is_none(), c.fused, "{}: {reason:?}", c.name);
        match reason {
            None => fused += 1,
            Some(why) => println!("{} runs unfused: {why}", c.name),
        }
    }
    println!("{fused} of {} corpus kernels fuse", singles.count());
    assert!(fused >= 30, "only {fused} corpus kernels fuse");
    for c in s.cases.iter().filter(|c| c.kernels.len() > 1) {
        assert!(
            c.kernels.iter().all(|k| k.unfused_reason().is_none()),
            "{}",
            c.name
        );
    }
}

#[test]
fn each_corpus_kernel_gives_the_same_bits_fused() {
    let s = setup();
    for (i, c) in s.cases.iter().enumerate() {
        let before = s.fused.stats().fused_jobs();
        let mix: Vec<(usize, u64)> = (0..24).map(|seed| (i, 1000 * i as u64 + seed)).collect();
        if let Err(e) = differ(s, &mix) {
            panic!("{e}");
        }
        // Other tests fuse at the same time: only "some fused" is certain.
        let fused = s.fused.stats().fused_jobs() - before;
        assert!(!c.fused || fused > 0, "{}: none of 24 jobs fused", c.name);
    }
}

/// Jobs whose kernel reads and writes past its data, each job's data marked with its own
/// index: whatever each job reads comes from its own data (or is zero), and what it writes
/// lands in its own data only.
#[test]
fn out_of_bounds_never_reaches_a_neighbour() {
    const SRC: &str = "
        @group(0) @binding(0) var<storage, read> x: array<u32>;
        @group(0) @binding(1) var<storage, read_write> y: array<u32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
            let n = arrayLength(&y);
            if g.x < n - 1u { y[g.x] = x[g.x + n] | x[g.x * 977u]; }
            if g.x == n - 1u { y[n + g.x] = 0xffffffffu; y[g.x + 100000u] = 0xfffffffeu; }
        }";
    let s = setup();
    let k = s
        .fused
        .kernel(wgpu_batch::KernelSource::wgsl("oob", SRC))
        .unwrap();
    assert!(k.unfused_reason().is_none());
    let before = s.fused.stats().fused_jobs();
    let lens: Vec<usize> = (0..48).map(|j| 1 + (j * 37) % 300).collect();
    // Job j's elements are j << 16 | i: a read from another job would show its index.
    let jobs = || -> Vec<Job> {
        lens.iter()
            .enumerate()
            .map(|(j, &n)| {
                let x: Vec<u32> = (0..n as u32).map(|i| (j as u32) << 16 | i).collect();
                let y = vec![(j as u32) << 16; n];
                Job::new(&k)
                    .input(0, &x)
                    .inout(1, &y)
                    .workgroups(n.div_ceil(64) as u32, 1, 1)
            })
            .collect()
    };
    let fused = run(&s.fused, jobs());
    assert!(s.fused.stats().fused_jobs() > before, "nothing fused");
    for (j, outputs) in fused.iter().enumerate() {
        let y: Vec<u32> = bytemuck::cast_slice(outputs[1].as_deref().unwrap()).to_vec();
        for (i, &v) in y.iter().enumerate() {
            let from = v >> 16;
            assert!(
                v == 0 || from == j as u32 || v >= 0xffff_fffe,
                "job {j} element {i}: {v:#x} comes from job {from}"
            );
        }
    }
    assert_eq!(fused, run(&s.unfused, jobs()), "fused and unfused differ");
}

/// An index out of bounds inside a binding's element (a fixed-size array in a uniform, in a
/// slice's struct) stays inside the job's own data too. (Its value may differ from unfused:
/// a device whose hardware checks only a binding's whole range, as Vulkan's
/// `robustBufferAccess2` does, lets such an index reach a neighbouring element of the same
/// binding unfused, where the fused kernel reads zero or clamps; WGSL allows both.)
#[test]
fn inner_out_of_bounds_stays_in_the_job() {
    const SRC: &str = "
        struct E { v: array<u32, 3>, tag: u32 }
        @group(0) @binding(0) var<uniform> u: array<vec4<u32>, 2>;
        @group(0) @binding(1) var<storage, read_write> e: array<E>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
            let n = arrayLength(&e);
            if g.x >= n { return; }
            let k = e[g.x].tag;
            e[g.x].tag = u[k][k] | e[g.x].v[k + 1u];
            e[g.x].v[k + 2u] = e[g.x].v[0];
        }";
    let s = setup();
    let k = s
        .fused
        .kernel(wgpu_batch::KernelSource::wgsl("inner", SRC))
        .unwrap();
    assert!(k.unfused_reason().is_none());
    let before = s.fused.stats().fused_jobs();
    let jobs: Vec<Job> = (0..48u32)
        .map(|j| {
            let n = 1 + (j as usize * 29) % 200;
            let mark = (j + 1) << 16;
            let u = [mark | 1; 8];
            // Each element: v = [mark | 2; 3], tag = an index from 0 to 6 (past 1 and 2).
            let e: Vec<u32> = (0..n)
                .flat_map(|i| [mark | 2, mark | 2, mark | 2, (i % 7) as u32])
                .collect();
            Job::new(&k)
                .uniform(0, &u)
                .inout(1, &e)
                .workgroups(n.div_ceil(64) as u32, 1, 1)
        })
        .collect();
    let out = run(&s.fused, jobs);
    assert!(s.fused.stats().fused_jobs() > before, "nothing fused");
    for (j, outputs) in out.iter().enumerate() {
        let mark = (j as u32 + 1) << 16;
        for (i, &v) in bytemuck::cast_slice::<u8, u32>(outputs[1].as_deref().unwrap())
            .iter()
            .enumerate()
        {
            assert!(
                v == 0 || v & 0xffff_0000 == mark || v < 7,
                "job {j} word {i}: {v:#x}"
            );
        }
    }
}

/// GPU timing on: the fused dispatch's time is shared among its jobs, and results agree.
#[test]
fn gpu_timing_covers_fused_dispatches() {
    let s = setup();
    let timed = common::build(
        common::builder()
            .gpu_timing(true)
            .max_batch_delay(Duration::from_millis(5)),
    );
    let k = timed.kernel(wgpu_batch::kernels::saxpy()).unwrap();
    let jobs = || {
        (0..32)
            .map(|i| (s.cases[0].job)(std::slice::from_ref(&k), &mut Rng::new(i)))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(&timed, jobs()), run(&s.unfused, jobs()));
    let stats = timed.stats();
    assert!(stats.fused_jobs() > 0);
    // Every job is timed, fused or not, where the adapter has timestamps inside passes.
    let timed_jobs = stats.devices[0].gpu_timed_jobs;
    println!(
        "{timed_jobs} jobs timed, {:?} in all",
        stats.devices[0].gpu_time
    );
    assert!(
        timed_jobs == 0 || timed_jobs >= 32,
        "{timed_jobs} of 32 jobs timed"
    );
}

fn cases() -> u32 {
    std::env::var("FUSION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Random mixes of corpus jobs (of different kernels and sizes) give the same bits fused
    /// and unfused.
    #[test]
    fn random_mixes_give_the_same_bits(mix in prop::collection::vec((0usize..1000, any::<u64>()), 1..96)) {
        let s = setup();
        let mix: Vec<(usize, u64)> = mix.into_iter().map(|(c, seed)| (c % s.cases.len(), seed)).collect();
        if let Err(e) = differ(s, &mix) {
            prop_assert!(false, "{}", e);
        }
    }
}
