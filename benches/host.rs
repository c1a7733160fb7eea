//! The host path against plain wgpu, both sides doing the same work, on wgpu's noop backend
//! (it executes nothing, so what is measured is host cost alone).
//!
//! Every job is SAXPY the way a user writes it. The engine: `Job::input(&x)` and
//! `Job::inout(&y)` (the data copied into the job), then the output read into a `Vec`
//! (`out.read(2)`). Plain wgpu: `queue.write_buffer` of `a`, `x` and `y`, one dispatch, a copy
//! to a readback buffer, submit, map, wait, and the result collected into a `Vec`. Both check
//! the result's length.
//!
//! `HOST_REOPEN=0` turns off `reopen_lost_devices` (on by default), to measure its
//! bookkeeping.
//!
//! `cargo bench --bench host` prints the table (µs per job, ratio to plain, allocations and
//! context switches per job) for 20,000 jobs per row after a warm-up. `HOST_JOBS` sets the
//! count. `cargo bench --bench host -- --only MODE --jobs N [--threads T]` runs one mode alone (for
//! `valgrind --tool=callgrind`: run N and 5N and divide the difference by 4N).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use wgpu_batch::{Engine, Job, Kernel, kernels, wgpu};

#[path = "../src/bin/wgpu-batch/plain.rs"]
mod plain;

/// Counts every allocation of the process (the engine's threads included).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Context switches of the benchmark's threads that have ended (each adds its own as it ends).
static ENDED_SWITCHES: AtomicU64 = AtomicU64::new(0);

/// Context switches (voluntary and not) in one `/proc/.../status` file.
fn switches_in(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// Context switches of every thread of the process so far, from `/proc/self/task/*/status`
/// (0 where there is no `/proc`), plus those of the benchmark threads that ended.
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let alive: u64 = tasks
        .flatten()
        .map(|t| switches_in(&t.path().join("status").to_string_lossy()))
        .sum();
    alive + ENDED_SWITCHES.load(Relaxed)
}

/// One row's inputs.
struct Work {
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Work {
    fn new(n: usize) -> Work {
        Work {
            x: (0..n).map(|i| (i % 97) as f32).collect(),
            y: (0..n).map(|i| (i % 13) as f32).collect(),
        }
    }
}

/// How jobs are run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Plain wgpu, one job at a time on one thread.
    Plain,
    /// `Engine::run` on one thread.
    Run,
    /// `submit` then `wait` on one thread.
    SubmitWait,
    /// `threads` threads, each keeping `window` jobs in flight.
    InFlight { threads: usize, window: usize },
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Plain => "plain wgpu".into(),
            Mode::Run => "`Engine::run`".into(),
            Mode::SubmitWait => "`submit` then `wait`".into(),
            Mode::InFlight { threads: 1, window } => format!("{window} in flight"),
            Mode::InFlight { threads, window } => format!("{threads} threads x {window} in flight"),
        }
    }
}

struct Sides {
    plain: parking_lot::Mutex<plain::Plain>,
    engine: Engine,
    saxpy: Kernel,
}

impl Sides {
    fn new() -> Sides {
        let plain = plain::Plain::new(wgpu::Backends::NOOP).expect("plain wgpu on noop");
        // `HOST_REOPEN=0`: without reopening (by default each running job that may run again
        // after a device loss is copied).
        let reopen = std::env::var("HOST_REOPEN").map_or(true, |v| v != "0");
        let engine = Engine::builder()
            .backends(wgpu::Backends::NOOP)
            .reopen_lost_devices(reopen)
            .build()
            .expect("an engine on noop");
        let saxpy = engine.kernel(kernels::saxpy()).expect("kernel");
        Sides {
            plain: parking_lot::Mutex::new(plain),
            engine,
            saxpy,
        }
    }

    fn job(&self, w: &Work) -> Job {
        Job::new(&self.saxpy)
            .uniform(0, &2.0f32)
            .input(1, &w.x)
            .inout(2, &w.y)
            .workgroups_for(w.y.len())
    }

    /// Runs `jobs` jobs in `mode`; each result is read into a `Vec` and its length checked.
    fn run(&self, mode: Mode, w: &Work, jobs: usize) {
        let n = w.y.len();
        let check = |out: Vec<f32>| assert_eq!(out.len(), n, "wrong result length");
        let read = |o: wgpu_batch::JobOutput| check(o.read::<f32>(2).expect("read"));
        match mode {
            Mode::Plain => {
                let mut plain = self.plain.lock();
                for _ in 0..jobs {
                    check(plain.run(2.0, &w.x, &w.y).expect("plain job"));
                }
            }
            Mode::Run => (0..jobs).for_each(|_| read(self.engine.run(self.job(w)).expect("job"))),
            Mode::SubmitWait => (0..jobs).for_each(|_| {
                read(
                    self.engine
                        .submit(self.job(w))
                        .expect("submit")
                        .wait()
                        .expect("job"),
                )
            }),
            Mode::InFlight { threads, window } => std::thread::scope(|s| {
                for t in 0..threads {
                    let mine = jobs / threads + usize::from(t < jobs % threads);
                    s.spawn(move || {
                        let mut flight = VecDeque::with_capacity(window);
                        for _ in 0..mine {
                            if flight.len() == window {
                                let h: wgpu_batch::JobHandle = flight.pop_front().unwrap();
                                read(h.wait().expect("job"));
                            }
                            flight.push_back(self.engine.submit(self.job(w)).expect("submit"));
                        }
                        flight
                            .into_iter()
                            .for_each(|h| read(h.wait().expect("job")));
                        // A new thread: all of its switches belong to this run.
                        let mine = switches_in("/proc/thread-self/status");
                        ENDED_SWITCHES.fetch_add(mine, Relaxed);
                    });
                }
            }),
        }
    }
}

/// One row: µs per job, allocations and context switches per job.
struct Row {
    us: f64,
    allocations: f64,
    switches: f64,
    /// Engine jobs per batch (0 for plain wgpu).
    per_batch: f64,
}

fn measure(sides: &Sides, mode: Mode, w: &Work, jobs: usize) -> Row {
    sides.run(mode, w, jobs / 10 + 1); // warm-up: pools, pipelines, threads
    let counts = || {
        let s = sides.engine.stats();
        (s.completed(), s.batches())
    };
    let (j0, b0) = counts();
    let (a0, c0) = (ALLOCATIONS.load(Relaxed), context_switches());
    let start = Instant::now();
    sides.run(mode, w, jobs);
    let took = start.elapsed();
    let (a1, c1) = (ALLOCATIONS.load(Relaxed), context_switches());
    let (j1, b1) = counts();
    Row {
        us: took.as_secs_f64() * 1e6 / jobs as f64,
        allocations: (a1 - a0) as f64 / jobs as f64,
        switches: c1.saturating_sub(c0) as f64 / jobs as f64,
        per_batch: (j1 - j0) as f64 / (b1 - b0).max(1) as f64,
    }
}

fn table(sides: &Sides, jobs: usize) {
    println!(
        "| elements | mode | µs/job | vs plain | allocations/job | context switches/job | jobs/batch |"
    );
    println!("|---|---|---|---|---|---|---|");
    let line = |n: usize, mode: Mode, plain_us: f64, r: &Row| {
        println!(
            "| {n} | {} | {:.2} | {:.2}x | {:.1} | {:.3} | {:.1} |",
            mode.name(),
            r.us,
            plain_us / r.us,
            r.allocations,
            r.switches,
            r.per_batch
        );
    };
    for n in [4096, 256] {
        let w = Work::new(n);
        let plain = measure(sides, Mode::Plain, &w, jobs);
        line(n, Mode::Plain, plain.us, &plain);
        let modes: &[Mode] = if n == 4096 {
            &[
                Mode::Run,
                Mode::SubmitWait,
                Mode::InFlight {
                    threads: 1,
                    window: 16,
                },
            ]
        } else {
            &[Mode::InFlight {
                threads: 1,
                window: 16,
            }]
        };
        for &mode in modes {
            line(n, mode, plain.us, &measure(sides, mode, &w, jobs));
        }
    }
    let w = Work::new(4096);
    let plain = measure(sides, Mode::Plain, &w, jobs).us;
    let rates: Vec<(usize, f64)> = [1, 2, 4, 8, 16]
        .into_iter()
        .map(|t| {
            let mode = Mode::InFlight {
                threads: t,
                window: 16,
            };
            let r = measure(sides, mode, &w, jobs);
            line(4096, mode, plain, &r);
            (t, r.us)
        })
        .collect();
    let best = rates.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    let scaling: Vec<String> = rates[1..]
        .iter()
        .map(|(t, us)| format!("T={t}: {:.2}", best / us))
        .collect();
    let at8 = rates.iter().find(|r| r.0 == 8).map_or(0.0, |r| r.1);
    println!(
        "\nBest over 1-16 threads: {:.2}x plain; throughput(T) / best: {}; host time per job at 8 threads: {at8:.2} µs ({} CPUs)",
        plain / best,
        scaling.join(", "),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let jobs = arg("--jobs")
        .or_else(|| std::env::var("HOST_JOBS").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let sides = Sides::new();
    let started = Instant::now();
    match arg("--only").as_deref() {
        None => table(&sides, jobs),
        Some(only) => {
            let mode = match only {
                "plain" => Mode::Plain,
                "run" => Mode::Run,
                "submit" => Mode::SubmitWait,
                "sixteen" => Mode::InFlight {
                    threads: arg("--threads").and_then(|s| s.parse().ok()).unwrap_or(1),
                    window: 16,
                },
                other => panic!("--only plain|run|submit|sixteen, not {other}"),
            };
            let n = arg("--elements")
                .and_then(|s| s.parse().ok())
                .unwrap_or(4096);
            sides.run(mode, &Work::new(n), jobs);
        }
    }
    eprintln!("host benchmark done in {:.1?}", started.elapsed());
}
