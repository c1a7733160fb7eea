//! Chaos: random programs of jobs from many threads on one or two devices, while devices are
//! lost at random moments in each way the engine knows (its hook, a device destroyed that only
//! wgpu notices, an executor panic, a runaway kernel that trips the watchdog), and every lost
//! device is reopened. The properties, checked against a CPU model:
//! - every handle resolves exactly once, within a bound;
//! - every `Ok` result equals the model;
//! - a job that writes no resident buffer (so it is queued or run again) never fails because
//!   of a loss, except `Poisoned` when its device was lost more times than `max_replays`
//!   (or `Quarantined` once a job of its kernel was poisoned);
//! - a job that writes a resident buffer fails only `DeviceLost` or `BufferLost`, and only
//!   when its buffer's device was lost; it is never run twice (its buffer, when readable,
//!   holds the sum of exactly the writes that succeeded);
//! - a read-only buffer reads back intact; a lost writable buffer is `BufferLost`, never data.
//!
//! CI runs `CHAOS_CASES` (default 6) cases; set it higher to search longer.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Spinner;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use wgpu_batch::{DeviceBuffer, Engine, Error, Job, JobHandle, Kernel, KernelSource};

/// `out = a + b` over `u32`, `a` a resident read-only buffer.
const READ: &str = "
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&out) { out[id.x] = a[id.x] + b[id.x]; }
}";

/// `acc += x` over `u32`, `acc` a resident writable buffer: running it twice shows.
const WRITE: &str = "
@group(0) @binding(0) var<storage, read_write> acc: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&acc) { acc[id.x] = acc[id.x] + x[id.x]; }
}";

const N: usize = 256;

/// Every wait is bounded by this (a job that takes longer than this has hung).
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Loss {
    Hook,
    Destroy,
    Panic,
    Runaway,
}

#[derive(Debug, Clone)]
struct Case {
    devices: usize,
    threads: usize,
    jobs: usize,
    /// Each loss: how, of which device (modulo the devices), how long after the previous.
    losses: Vec<(Loss, usize, u64)>,
    write_every: usize,
    read_every: usize,
    max_replays: u32,
}

fn case() -> impl Strategy<Value = Case> {
    let loss = prop_oneof![
        3 => Just(Loss::Hook),
        3 => Just(Loss::Destroy),
        2 => Just(Loss::Panic),
        1 => Just(Loss::Runaway),
    ];
    (
        1usize..=2,
        2usize..=5,
        10usize..50,
        prop::collection::vec((loss, 0usize..2, 0u64..150), 1..=3),
        2usize..6,
        2usize..6,
        1u32..=3,
    )
        .prop_map(
            |(devices, threads, jobs, losses, write_every, read_every, max_replays)| Case {
                devices,
                threads,
                jobs,
                losses,
                write_every,
                read_every,
                max_replays,
            },
        )
}

/// What a thread sent, and what the model says of it.
enum Kind {
    Inc(u32),
    Read(u32),
    /// Adds `x` to the thread's writable buffer.
    Write,
}

fn data(seed: u32) -> Vec<u32> {
    (0..N as u32)
        .map(|i| seed.wrapping_mul(2_654_435_761) ^ i)
        .collect()
}

struct Kernels {
    inc: Kernel,
    read: Kernel,
    write: Kernel,
}

/// One outcome, with what it was.
struct Outcome {
    kind: &'static str,
    kernel: &'static str,
    device: Option<usize>,
    result: Result<(), Error>,
}

fn run(c: &Case) -> Result<(), TestCaseError> {
    let runaway = c.losses.iter().any(|l| l.0 == Loss::Runaway);
    let engine = common::build(
        common::builder()
            .devices_per_adapter(c.devices)
            .reopen_lost_devices(true)
            .reopen_budget(1000, Duration::from_secs(60))
            .reopen_backoff(Duration::from_millis(1))
            .max_replays(c.max_replays)
            .gpu_timeout(if runaway {
                Duration::from_millis(400)
            } else {
                WAIT
            }),
    );
    let ks = Kernels {
        inc: engine
            .kernel(KernelSource::wgsl("inc", common::INC))
            .unwrap(),
        read: engine.kernel(KernelSource::wgsl("read", READ)).unwrap(),
        write: engine.kernel(KernelSource::wgsl("write", WRITE)).unwrap(),
    };
    let spin = runaway.then(|| Spinner::new(&engine, 0, Duration::from_millis(1200)));
    let table = engine.replicate(&data(7)).unwrap();
    let accs: Vec<DeviceBuffer> = (0..c.threads)
        .map(|t| engine.upload_to(t % c.devices, &data(t as u32)).unwrap())
        .collect();
    let outcomes = Mutex::new(Vec::new());
    let sums = Mutex::new(vec![vec![0u32; N]; c.threads]);
    std::thread::scope(|s| {
        s.spawn(|| strike(&engine, c, spin.as_ref(), &outcomes));
        for (t, acc) in accs.iter().enumerate() {
            let (engine, ks, table) = (&engine, &ks, &table);
            let (outcomes, sums) = (&outcomes, &sums);
            s.spawn(move || work(engine, ks, c, t, table, acc, outcomes, sums));
        }
    });
    check(
        &engine,
        c,
        &outcomes.into_inner().unwrap(),
        &table,
        &accs,
        &sums.into_inner().unwrap(),
    )
}

/// Loses devices at the case's moments.
fn strike(engine: &Engine, c: &Case, spin: Option<&Spinner>, outcomes: &Mutex<Vec<Outcome>>) {
    for &(how, device, after) in &c.losses {
        std::thread::sleep(Duration::from_millis(after));
        let device = device % c.devices;
        match how {
            Loss::Hook => engine.lose_device(device),
            Loss::Destroy => engine.destroy_device(device),
            Loss::Panic => engine.panic_executor(device),
            Loss::Runaway => {
                let job = spin.unwrap().job().on_device(device);
                let result = engine
                    .submit(job)
                    .and_then(|h| h.wait_timeout(WAIT))
                    .map(|_| ());
                outcomes.lock().unwrap().push(Outcome {
                    kind: "runaway",
                    kernel: "spin",
                    device: Some(device),
                    result,
                });
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn work(
    engine: &Engine,
    ks: &Kernels,
    c: &Case,
    t: usize,
    table: &DeviceBuffer,
    acc: &DeviceBuffer,
    outcomes: &Mutex<Vec<Outcome>>,
    sums: &Mutex<Vec<Vec<u32>>>,
) {
    let mut sent: Vec<(Kind, Vec<u32>, Result<JobHandle, Error>)> = Vec::new();
    for j in 0..c.jobs {
        let seed = (t * 1000 + j) as u32;
        let x = data(seed);
        let (kind, job) = if j % c.write_every == 0 {
            let job = Job::new(&ks.write)
                .buffer(0, acc)
                .input(1, &x)
                .workgroups_for(N);
            (Kind::Write, job)
        } else if j % c.read_every == 0 {
            let job = Job::new(&ks.read)
                .buffer(0, table)
                .input(1, &x)
                .output::<u32>(2, N);
            (Kind::Read(seed), job.workgroups_for(N))
        } else {
            let job = Job::new(&ks.inc)
                .input(0, &x)
                .output::<u32>(1, N)
                .workgroups_for(N);
            (Kind::Inc(seed), job)
        };
        sent.push((kind, x, engine.submit(job)));
    }
    for (kind, x, handle) in sent {
        let (name, kernel, binding) = match kind {
            Kind::Inc(_) => ("inc", "inc", 1),
            Kind::Read(_) => ("read", "read", 2),
            _ => ("write", "write", 0),
        };
        let result = handle.and_then(|h| {
            let r = h.wait_timeout(WAIT);
            let hung = matches!(r, Err(Error::Timeout));
            assert!(!hung, "a {name} job never resolved: {:?}", engine.devices());
            // Exactly once: the handle has nothing more to give.
            assert_eq!(h.try_get().map(|r| r.err()), Some(Some(Error::ResultTaken)));
            r
        });
        let result = result.map(|out| match kind {
            Kind::Inc(seed) => {
                let want: Vec<u32> = data(seed).iter().map(|v| v.wrapping_add(1)).collect();
                assert_eq!(out.read::<u32>(binding).unwrap(), want, "inc job {seed}");
            }
            Kind::Read(seed) => {
                let want: Vec<u32> = (data(7).iter().zip(data(seed)))
                    .map(|(a, b)| a.wrapping_add(b))
                    .collect();
                assert_eq!(out.read::<u32>(binding).unwrap(), want, "read job {seed}");
            }
            _ => {
                let mut sums = sums.lock().unwrap();
                for (s, v) in sums[t].iter_mut().zip(&x) {
                    *s = s.wrapping_add(*v);
                }
            }
        });
        let device = matches!(name, "write").then_some(t % c.devices);
        outcomes.lock().unwrap().push(Outcome {
            kind: name,
            kernel,
            device,
            result,
        });
    }
}

/// The properties of the module docs, over every outcome of the case.
fn check(
    engine: &Engine,
    c: &Case,
    outcomes: &[Outcome],
    table: &DeviceBuffer,
    accs: &[DeviceBuffer],
    sums: &[Vec<u32>],
) -> Result<(), TestCaseError> {
    // Read when needed: a loss is counted once noticed, possibly by the reads below.
    let losses = |d: usize| engine.stats().devices[d].losses;
    let most = (0..c.devices).map(losses).max().unwrap_or(0);
    let poisoned: HashSet<&str> = (outcomes.iter())
        .filter(|o| matches!(o.result, Err(Error::Poisoned { .. })))
        .map(|o| o.kernel)
        .collect();
    for o in outcomes {
        let lost = |d: usize| losses(d) > 0;
        match (&o.result, o.kind) {
            (Ok(()), _) => {}
            (Err(Error::Poisoned { device, .. }), "inc" | "read" | "runaway") => prop_assert!(
                losses(*device) > u64::from(c.max_replays),
                "{} poisoned with {} losses of device {device}",
                o.kind,
                losses(*device)
            ),
            (Err(Error::Quarantined { .. }), _) => {
                prop_assert!(
                    poisoned.contains(o.kernel),
                    "{} quarantined, none poisoned",
                    o.kind
                )
            }
            (Err(Error::DeviceLost { device, .. } | Error::BufferLost { device }), "write") => {
                prop_assert!(
                    Some(*device) == o.device && lost(*device),
                    "write: {:?}",
                    o.result
                )
            }
            (Err(Error::DeviceLost { .. }), "runaway") => {} // the spinner calibrated short
            (Err(e), kind) => {
                prop_assert!(false, "{kind} job failed {e:?} ({most} losses at most)")
            }
        }
    }
    prop_assert_eq!(engine.read::<u32>(table).unwrap(), data(7));
    for (t, acc) in accs.iter().enumerate() {
        let want: Vec<u32> = data(t as u32)
            .iter()
            .zip(&sums[t])
            .map(|(a, s)| a.wrapping_add(*s))
            .collect();
        match engine.read::<u32>(acc) {
            Ok(got) => prop_assert_eq!(got, want, "thread {}'s buffer", t),
            Err(Error::BufferLost { device }) => prop_assert!(losses(device) > 0),
            Err(e) => prop_assert!(false, "reading thread {t}'s buffer: {e:?}"),
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("CHAOS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        max_shrink_iters: 4,
        ..Config::default()
    })]

    #[test]
    fn every_job_resolves_once_and_only_a_loss_it_could_not_survive_fails_it(c in case()) {
        let started = Instant::now();
        run(&c)?;
        eprintln!("case {c:?}: {:.1?}", started.elapsed());
    }
}
