//! Model-based randomized test: random programs of jobs, run concurrently on the engine and
//! sequentially on a CPU model, must agree bit for bit.
//!
//! A program is a list of jobs of one to four steps, each step one kernel of a small family
//! (`model/kernels.rs`: copy, inc, acc, scale, a workgroup-memory reduction, a 2D grid, an
//! atomic histogram), with random argument kinds (`input`, `input_shared`, `inout`,
//! `inout_shared`, `output`, scratch ids reused across steps, resident and replicated
//! buffers, a resident histogram every job adds to), random sizes (1, around the workgroup
//! size, large), priorities and pinning, and random engine settings (`max_batch_jobs`,
//! `max_batch_delay`, `shared_bind_groups`, batches in flight, one or two devices, jobs' data
//! in their own mapped buffers or copied through upload buffers, kernel fusion on or off:
//! every kernel of the family fuses). The jobs
//! are submitted from several threads at once, or run one at a time with `Engine::run` (which
//! takes the idle fast path whenever the device has nothing else).
//!
//! CI runs `MODEL_CASES` (default 24) cases; `MODEL_CASES=2000 cargo test --release --test
//! model` runs more. A failure prints the program (and proptest shrinks it) and is saved in
//! `tests/model.proptest-regressions`, which is committed and replayed first on every run.

mod common;
#[path = "model/kernels.rs"]
mod kernels;

use std::collections::HashMap;
use std::sync::Arc;

use common::WAIT;
use kernels::Op;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use wgpu_batch::{DeviceBuffer, Engine, Job, JobOutput, Kernel, KernelSource, Priority};

/// Elements of the resident and replicated read-only buffers.
const RES_LEN: usize = 5_000;
/// Bins of the resident histogram every `Bins` destination adds to.
const BINS_LEN: usize = 37;

/// Deterministic data for a (length, seed): shrinks well and prints short.
fn data(len: usize, seed: u32) -> Vec<u32> {
    let mut s = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u32
        })
        .collect()
}

/// Where a step's read-only operand comes from.
#[derive(Debug, Clone)]
enum Src {
    Input(usize, u32),
    Shared(usize, u32),
    Scratch(u32, usize),
    /// The resident read-only buffer on device 0.
    Resident,
    Replicated,
}

/// Where a step's read-write operand lives.
#[derive(Debug, Clone)]
enum Dst {
    InOut(usize, u32),
    Shared(usize, u32),
    Output(usize),
    Scratch(u32, usize),
    /// The resident histogram on device 0 (only `Hist` writes it: additions commute).
    Bins,
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    src: Option<Src>,
    dst: Dst,
}

#[derive(Debug, Clone)]
struct Spec {
    steps: Vec<Step>,
    priority: u8,
    pin: Option<usize>,
}

#[derive(Debug, Clone)]
struct Settings {
    devices: usize,
    max_jobs: usize,
    delay_us: u64,
    shared_bind_groups: bool,
    in_flight: usize,
    threads: usize,
    window: usize,
    map_storage: bool,
    fusion: bool,
}

#[derive(Debug, Clone)]
struct Program {
    settings: Settings,
    jobs: Vec<Spec>,
}

impl Src {
    fn len(&self) -> usize {
        match self {
            Src::Input(n, _) | Src::Shared(n, _) | Src::Scratch(_, n) => *n,
            Src::Resident | Src::Replicated => RES_LEN,
        }
    }
}

impl Dst {
    fn len(&self) -> usize {
        match self {
            Dst::InOut(n, _) | Dst::Shared(n, _) | Dst::Output(n) | Dst::Scratch(_, n) => *n,
            Dst::Bins => BINS_LEN,
        }
    }
}

impl Spec {
    /// Whether the job binds a buffer that lives on device 0 only.
    fn resident(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.src, Some(Src::Resident)) || matches!(s.dst, Dst::Bins))
    }
}

// ---- strategies ----

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => prop::sample::select(vec![1usize, 2, 63, 64, 65, 255, 256, 257, 1000, 4099]),
        1 => Just(70_001usize),
    ]
}

fn src() -> impl Strategy<Value = Src> {
    prop_oneof![
        3 => (len(), any::<u32>()).prop_map(|(n, s)| Src::Input(n, s)),
        2 => (len(), any::<u32>()).prop_map(|(n, s)| Src::Shared(n, s)),
        3 => (0u32..3, len()).prop_map(|(id, n)| Src::Scratch(id, n)),
        1 => Just(Src::Resident),
        1 => Just(Src::Replicated),
    ]
}

fn dst() -> impl Strategy<Value = Dst> {
    prop_oneof![
        3 => (len(), any::<u32>()).prop_map(|(n, s)| Dst::InOut(n, s)),
        2 => (len(), any::<u32>()).prop_map(|(n, s)| Dst::Shared(n, s)),
        3 => len().prop_map(Dst::Output),
        3 => (0u32..3, len()).prop_map(|(id, n)| Dst::Scratch(id, n)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Copy),
        Just(Op::Inc),
        Just(Op::Acc),
        any::<u32>().prop_map(Op::Scale),
        Just(Op::Reduce),
        prop::sample::select(vec![1u32, 3, 8, 17, 64]).prop_map(Op::Grid),
        Just(Op::Hist),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (op(), src(), dst(), 1usize..64, any::<bool>()).prop_map(|(op, src, dst, bins, to_bins)| {
        let dst = match (op, dst) {
            (Op::Hist, _) if to_bins => Dst::Bins,
            (Op::Hist, Dst::InOut(_, s)) => Dst::InOut(bins, s),
            (Op::Hist, Dst::Shared(_, s)) => Dst::Shared(bins, s),
            (Op::Hist, Dst::Output(_)) => Dst::Output(bins),
            (Op::Hist, Dst::Scratch(id, _)) => Dst::Scratch(id, bins),
            (_, d) => d,
        };
        // A buffer cannot be read-only and read-write in one dispatch: use another scratch.
        let src = match (&src, &dst) {
            (Src::Scratch(a, n), Dst::Scratch(b, _)) if a == b => Src::Scratch((a + 1) % 3, *n),
            _ => src,
        };
        let src = (!matches!(op, Op::Scale(_))).then_some(src);
        Step { op, src, dst }
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(step(), 1..=4),
        0u8..3,
        prop::option::of(0usize..2),
    )
        .prop_map(|(steps, priority, pin)| Spec {
            steps,
            priority,
            pin,
        })
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        1usize..=2,
        prop::sample::select(vec![1usize, 2, 7, 64]),
        prop::sample::select(vec![0u64, 0, 500, 3_000]),
        any::<bool>(),
        1usize..=3,
        1usize..=4,
        1usize..=16,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                devices,
                max_jobs,
                delay_us,
                shared_bind_groups,
                in_flight,
                threads,
                window,
                map_storage,
                fusion,
            )| {
                Settings {
                    devices,
                    max_jobs,
                    delay_us,
                    shared_bind_groups,
                    in_flight,
                    threads,
                    window,
                    map_storage,
                    fusion,
                }
            },
        )
}

fn program() -> impl Strategy<Value = Program> {
    (settings(), prop::collection::vec(spec(), 1..40)).prop_map(|(settings, mut jobs)| {
        for j in &mut jobs {
            // A job that binds device 0's buffers can only be pinned there.
            if j.resident() || j.pin.is_some_and(|d| d >= settings.devices) {
                j.pin = j.pin.map(|_| 0);
            }
        }
        Program { settings, jobs }
    })
}

// ---- the CPU model ----

/// What a job must give back: per (step, binding), the read-back contents.
type Outputs = HashMap<(usize, u32), Vec<u32>>;

struct World {
    resident: Vec<u32>,
    replicated: Vec<u32>,
}

/// Runs `job` on the CPU; returns its outputs and what it adds to the resident histogram.
fn model(job: &Spec, world: &World) -> (Outputs, Vec<u32>) {
    let mut scratch: HashMap<u32, Vec<u32>> = HashMap::new();
    for s in &job.steps {
        let ids = [s.src.as_ref().and_then(scratch_of), scratch_dst(&s.dst)];
        for (id, n) in ids.into_iter().flatten() {
            let buf = scratch.entry(id).or_default();
            if buf.len() < n {
                buf.resize(n, 0);
            }
        }
    }
    let mut outputs = Outputs::new();
    let mut bins = vec![0u32; BINS_LEN];
    for (i, s) in job.steps.iter().enumerate() {
        let src: Vec<u32> = match &s.src {
            None => Vec::new(),
            Some(Src::Input(n, seed) | Src::Shared(n, seed)) => data(*n, *seed),
            Some(Src::Scratch(id, n)) => scratch[id][..*n].to_vec(),
            Some(Src::Resident) => world.resident.clone(),
            Some(Src::Replicated) => world.replicated.clone(),
        };
        let mut dst: Vec<u32> = match &s.dst {
            Dst::InOut(n, seed) | Dst::Shared(n, seed) => data(*n, *seed),
            Dst::Output(n) => vec![0; *n],
            Dst::Scratch(id, n) => scratch[id][..*n].to_vec(),
            Dst::Bins => vec![0; BINS_LEN],
        };
        s.op.apply(&src, &mut dst);
        let (_, binding) = s.op.bindings();
        match &s.dst {
            Dst::InOut(..) | Dst::Shared(..) | Dst::Output(_) => {
                outputs.insert((i, binding), dst);
            }
            Dst::Scratch(id, n) => scratch.get_mut(id).unwrap()[..*n].copy_from_slice(&dst),
            Dst::Bins => bins
                .iter_mut()
                .zip(&dst)
                .for_each(|(b, d)| *b = b.wrapping_add(*d)),
        }
    }
    (outputs, bins)
}

fn scratch_of(s: &Src) -> Option<(u32, usize)> {
    match s {
        Src::Scratch(id, n) => Some((*id, *n)),
        _ => None,
    }
}

fn scratch_dst(d: &Dst) -> Option<(u32, usize)> {
    match d {
        Dst::Scratch(id, n) => Some((*id, *n)),
        _ => None,
    }
}

// ---- the engine side ----

struct Kernels(HashMap<&'static str, Kernel>);

impl Kernels {
    fn new(engine: &Engine) -> Kernels {
        let all = [
            ("copy", kernels::COPY),
            ("inc", kernels::INC),
            ("acc", kernels::ACC),
            ("scale", kernels::SCALE),
            ("reduce", kernels::REDUCE),
            ("grid", kernels::GRID),
            ("hist", kernels::HIST),
        ];
        let kernel = |(name, src)| {
            let k = engine.kernel(KernelSource::wgsl(name, src)).unwrap();
            assert_eq!(k.unfused_reason(), None, "{name} must fuse");
            (name, k)
        };
        Kernels(all.into_iter().map(kernel).collect())
    }

    fn of(&self, op: Op) -> &Kernel {
        let name = match op {
            Op::Copy => "copy",
            Op::Inc => "inc",
            Op::Acc => "acc",
            Op::Scale(_) => "scale",
            Op::Reduce => "reduce",
            Op::Grid(_) => "grid",
            Op::Hist => "hist",
        };
        &self.0[name]
    }
}

struct Buffers {
    resident: DeviceBuffer,
    replicated: DeviceBuffer,
    bins: DeviceBuffer,
}

/// The engine job for `spec`.
fn build(spec: &Spec, k: &Kernels, b: &Buffers) -> Job {
    let mut job: Option<Job> = None;
    for s in &spec.steps {
        let kernel = k.of(s.op);
        let mut j = match job.take() {
            None => Job::new(kernel),
            Some(j) => j.then(kernel),
        };
        let (src_binding, dst_binding) = s.op.bindings();
        match s.op {
            Op::Scale(v) => j = j.uniform(0, &[v, 0, 0, 0]),
            Op::Grid(w) => {
                let h = s.src.as_ref().map_or(0, Src::len) as u32 / w;
                j = j.uniform(0, &[w, h, 0, 0]);
            }
            _ => {}
        }
        if let (Some(binding), Some(src)) = (src_binding, &s.src) {
            j = match src {
                Src::Input(n, seed) => j.input(binding, &data(*n, *seed)),
                Src::Shared(n, seed) => {
                    j.input_shared(binding, Arc::<[u32]>::from(data(*n, *seed)))
                }
                Src::Scratch(id, n) => j.scratch::<u32>(binding, *id, *n),
                Src::Resident => j.buffer(binding, &b.resident),
                Src::Replicated => j.buffer(binding, &b.replicated),
            };
        }
        j = match &s.dst {
            Dst::InOut(n, seed) => j.inout(dst_binding, &data(*n, *seed)),
            Dst::Shared(n, seed) => {
                j.inout_shared(dst_binding, Arc::<[u32]>::from(data(*n, *seed)))
            }
            Dst::Output(n) => j.output::<u32>(dst_binding, *n),
            Dst::Scratch(id, n) => j.scratch::<u32>(dst_binding, *id, *n),
            Dst::Bins => j.buffer(dst_binding, &b.bins),
        };
        let (x, y) =
            s.op.workgroups(s.src.as_ref().map_or(0, Src::len), s.dst.len());
        job = Some(j.workgroups(x, y, 1));
    }
    let mut job = job.expect("at least one step");
    job = job.priority([Priority::Low, Priority::Normal, Priority::High][spec.priority as usize]);
    if let Some(d) = spec.pin {
        job = job.on_device(d);
    }
    job
}

/// Runs the program on a fresh engine; returns each job's result, in program order, and the
/// resident histogram afterwards.
fn run(p: &Program, world: &World) -> (Vec<wgpu_batch::Result<JobOutput>>, Vec<u32>) {
    let s = &p.settings;
    let name = common::engine().devices()[0].adapter.clone();
    let engine = common::build(
        common::builder()
            .adapter_name(name)
            .devices_per_adapter(s.devices)
            .max_batch_jobs(s.max_jobs)
            .max_batch_delay(std::time::Duration::from_micros(s.delay_us))
            .shared_bind_groups(s.shared_bind_groups)
            .max_batches_in_flight(s.in_flight)
            .map_storage(s.map_storage)
            .fusion(s.fusion),
    );
    let k = Kernels::new(&engine);
    let b = Buffers {
        resident: engine.upload_to(0, &world.resident).unwrap(),
        replicated: engine.replicate(&world.replicated).unwrap(),
        bins: engine.upload_to(0, &[0u32; BINS_LEN]).unwrap(),
    };
    let mut results: Vec<Option<wgpu_batch::Result<JobOutput>>> = vec![None; p.jobs.len()];
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..s.threads)
            .map(|t| {
                let (engine, k, b) = (&engine, &k, &b);
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    let mut window = std::collections::VecDeque::new();
                    for (i, spec) in p.jobs.iter().enumerate().skip(t).step_by(s.threads) {
                        if s.window == 1 {
                            // `run`: the idle fast path when the device has nothing else.
                            mine.push((i, engine.run(build(spec, k, b))));
                            continue;
                        }
                        window.push_back((i, engine.submit(build(spec, k, b)).unwrap()));
                        if window.len() >= s.window {
                            let (i, h) = window.pop_front().unwrap();
                            mine.push((i, h.wait_timeout(WAIT)));
                        }
                    }
                    mine.extend(window.into_iter().map(|(i, h)| (i, h.wait_timeout(WAIT))));
                    mine
                })
            })
            .collect();
        for t in threads {
            for (i, r) in t.join().unwrap() {
                results[i] = Some(r);
            }
        }
    });
    let bins = engine.read::<u32>(&b.bins).unwrap();
    (results.into_iter().map(Option::unwrap).collect(), bins)
}

fn world() -> World {
    World {
        resident: data(RES_LEN, 1),
        replicated: data(RES_LEN, 2),
    }
}

fn check(p: &Program) -> Result<(), TestCaseError> {
    let world = world();
    let (results, bins) = run(p, &world);
    let mut want_bins = vec![0u32; BINS_LEN];
    for (i, (spec, got)) in p.jobs.iter().zip(results).enumerate() {
        let (want, adds) = model(spec, &world);
        want_bins
            .iter_mut()
            .zip(&adds)
            .for_each(|(w, a)| *w = w.wrapping_add(*a));
        let out = got.map_err(|e| TestCaseError::fail(format!("job {i} failed: {e}")))?;
        for ((step, binding), want) in want {
            let got: Vec<u32> = out.read_step(step, binding).unwrap();
            prop_assert!(
                got == want,
                "job {i}, step {step}, binding {binding}: first difference at {:?}",
                got.iter().zip(&want).position(|(g, w)| g != w)
            );
        }
    }
    prop_assert_eq!(bins, want_bins, "the resident histogram");
    Ok(())
}

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        max_shrink_iters: 200,
        ..Config::default()
    })]

    #[test]
    fn random_programs_match_the_cpu_model(p in program()) {
        check(&p)?;
    }
}
