//! The benchmark suite: wgpu-batch against two designs a user would otherwise write, measured
//! side by side in one process, interleaved and repeated.
//!
//! - **naive**: one job at a time on plain wgpu: write inputs, one dispatch, copy back, submit,
//!   map, `poll(Wait)`, read. Buffers and bind groups are pooled per size, so it pays only what
//!   one-at-a-time costs.
//! - **global lock**: T threads share one naive runner behind one `parking_lot::Mutex`.
//! - **engine**: T threads submit to one [`Engine`]; each keeps `window` jobs outstanding.
//!   Its jobs do what the naive runner does: copy the inputs in (`Job::input`) and read the
//!   result into a `Vec`. The host path alone against plain wgpu is `benches/host.rs`.
//!
//! `cargo bench --bench throughput` prints markdown tables and writes `target/bench.csv`.
//! `BENCH_SECS` sets the seconds per measurement (default 0.5), `BENCH_REPS` the repetitions
//! (default 3); figures are medians with the min–max spread.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wgpu_batch::{Balance, Engine, Job, JobHandle, Kernel, kernels, wgpu};

#[path = "../src/bin/wgpu-batch/plain.rs"]
mod plain;

use plain::Plain as Naive;

/// One workload's inputs and CPU answer. Both sides do the same work: the engine's jobs copy
/// the inputs (`Job::input`) and read their result into a `Vec`, as the naive runner writes
/// its inputs with `write_buffer` and collects its result.
struct Work {
    x: Vec<f32>,
    y: Vec<f32>,
    want: Vec<f32>,
}

impl Work {
    fn new(n: usize) -> Work {
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 13) as f32).collect();
        let want = x.iter().zip(&y).map(|(x, y)| 2.0 * x + y).collect();
        Work { x, y, want }
    }
}

/// Reads a job's result into a `Vec`, as plain wgpu's runner collects its own.
fn read(out: wgpu_batch::JobOutput) {
    let v: Vec<f32> = out.read(2).expect("read");
    assert!(!v.is_empty());
}

/// A system under test: runs jobs from `threads` threads for `secs`, returns jobs completed.
trait System: Sync {
    fn name(&self) -> String;
    fn run_for(&self, work: &Work, threads: usize, dur: Duration) -> u64;
    fn verify(&self, work: &Work, exact: bool);
}

struct EngineSys {
    engine: Engine,
    kernel: Kernel,
    window: usize,
    label: String,
}

impl EngineSys {
    fn new(builder: wgpu_batch::EngineBuilder, window: usize, label: &str) -> EngineSys {
        let engine = builder.build().expect("engine");
        let kernel = engine.kernel(kernels::saxpy()).expect("kernel");
        EngineSys {
            engine,
            kernel,
            window,
            label: label.into(),
        }
    }

    /// `threads` threads each keep `window` jobs outstanding for `dur`, cycling through
    /// `works`; returns the jobs completed.
    fn drive(&self, works: &[&Work], threads: usize, dur: Duration) -> u64 {
        let end = Instant::now() + dur;
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let mut window = std::collections::VecDeque::new();
                        let (mut done, mut i) = (0u64, t);
                        if self.window == 0 {
                            // One at a time, the way most callers use `run`.
                            while Instant::now() < end {
                                i += 1;
                                let out = self.engine.run(self.job(works[i % works.len()]));
                                read(out.expect("job"));
                                done += 1;
                            }
                            return done;
                        }
                        while Instant::now() < end {
                            while window.len() < self.window {
                                i += 1;
                                window.push_back(self.submit(works[i % works.len()]));
                            }
                            read(window.pop_front().unwrap().wait().expect("job"));
                            done += 1;
                        }
                        for h in window {
                            read(h.wait().expect("job"));
                            done += 1;
                        }
                        done
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        })
    }

    fn submit(&self, w: &Work) -> JobHandle {
        self.submit_with(w, wgpu_batch::Priority::Normal)
    }

    fn submit_with(&self, w: &Work, priority: wgpu_batch::Priority) -> JobHandle {
        self.engine
            .submit(self.job(w).priority(priority))
            .expect("submit")
    }

    /// The job as a user writes it: the data copied into the job, as plain wgpu's
    /// `write_buffer` copies it.
    fn job(&self, w: &Work) -> Job {
        Job::new(&self.kernel)
            .uniform(0, &2.0f32)
            .input(1, &w.x)
            .inout(2, &w.y)
            .workgroups_for(w.y.len())
    }
}

impl System for EngineSys {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn run_for(&self, work: &Work, threads: usize, dur: Duration) -> u64 {
        self.drive(&[work], threads, dur)
    }

    fn verify(&self, work: &Work, exact: bool) {
        let got: Vec<f32> = self
            .submit(work)
            .wait()
            .expect("job")
            .read(2)
            .expect("read");
        assert!(!exact || got == work.want, "{}: wrong result", self.label);
    }
}

struct LockSys {
    naive: Mutex<Naive>,
}

impl System for LockSys {
    fn name(&self) -> String {
        "global lock".into()
    }

    fn run_for(&self, work: &Work, threads: usize, dur: Duration) -> u64 {
        let end = Instant::now() + dur;
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = 0u64;
                        while Instant::now() < end {
                            self.naive
                                .lock()
                                .run(2.0, &work.x, &work.y)
                                .expect("plain job");
                            done += 1;
                        }
                        done
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        })
    }

    fn verify(&self, work: &Work, exact: bool) {
        let got = self
            .naive
            .lock()
            .run(2.0, &work.x, &work.y)
            .expect("plain job");
        assert!(!exact || got == work.want, "global lock: wrong result");
    }
}

/// Median, min and max of jobs/s over the repetitions.
#[derive(Clone, Copy)]
struct Rate {
    median: f64,
    min: f64,
    max: f64,
}

impl Rate {
    fn of(mut v: Vec<f64>) -> Rate {
        v.sort_by(f64::total_cmp);
        Rate {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    fn cell(&self) -> String {
        format!("{:.0} ({:.0}–{:.0})", self.median, self.min, self.max)
    }
}

struct Bench {
    secs: Duration,
    reps: usize,
    csv: String,
    md: String,
}

impl Bench {
    /// Measures every system at `threads` with the systems interleaved in each repetition.
    fn measure(&mut self, systems: &[&dyn System], work: &Work, threads: usize) -> Vec<Rate> {
        let mut samples = vec![Vec::new(); systems.len()];
        for _ in 0..self.reps {
            for (i, s) in systems.iter().enumerate() {
                let start = Instant::now();
                let jobs = s.run_for(work, threads, self.secs);
                samples[i].push(jobs as f64 / start.elapsed().as_secs_f64());
            }
        }
        samples.into_iter().map(Rate::of).collect()
    }

    #[allow(clippy::too_many_arguments)] // one CSV column each; a struct would only rename them
    fn row(
        &mut self,
        section: &str,
        backend: &str,
        system: &str,
        threads: usize,
        elems: usize,
        rate: Rate,
        ratio: f64,
    ) {
        let _ = writeln!(
            self.csv,
            "{section},{backend},{system},{threads},{elems},{:.1},{:.1},{:.1},{ratio:.3}",
            rate.median, rate.min, rate.max
        );
    }

    fn md(&mut self, line: String) {
        println!("{line}");
        self.md.push_str(&line);
        self.md.push('\n');
    }
}

/// Every engine of the run; `POOL_MB` sets their `pool_budget` (in MiB) to try another.
fn engine_builder(backend: wgpu::Backends) -> wgpu_batch::EngineBuilder {
    let b = Engine::builder().backends(backend);
    match std::env::var("POOL_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(mb) => b.pool_budget(mb << 20),
        None => b,
    }
}

/// 1. Scaling: T = 1..16 at 4,096 elements, engine vs global lock.
fn scaling(b: &mut Bench, backend: wgpu::Backends, name: &str) {
    let work = Work::new(4096);
    let exact = backend != wgpu::Backends::NOOP;
    let lock = LockSys {
        naive: Mutex::new(Naive::new(backend).expect("plain wgpu")),
    };
    let engine1 = EngineSys::new(engine_builder(backend), 1, "engine (window 1)");
    let engine32 = EngineSys::new(engine_builder(backend), 32, "engine (window 32)");
    for s in [&lock as &dyn System, &engine1, &engine32] {
        s.verify(&work, exact);
    }
    let threads = [1, 2, 4, 8, 16];
    let rates: Vec<Vec<Rate>> = threads
        .iter()
        .map(|&t| b.measure(&[&lock, &engine1, &engine32], &work, t))
        .collect();
    b.md(format!("\n### Scaling on {name}: SAXPY 4,096 elements, jobs/s median (min–max), ratio to the system's best\n"));
    b.md("| threads | global lock | ratio | engine, 1 outstanding per thread | ratio | engine, 32 outstanding per thread | ratio |".into());
    b.md("|---|---|---|---|---|---|---|".into());
    let best: Vec<f64> = (0..3)
        .map(|i| rates.iter().map(|r| r[i].median).fold(0.0, f64::max))
        .collect();
    for (t, r) in threads.iter().zip(&rates) {
        let names = ["global lock", "engine w1", "engine w32"];
        for i in 0..3 {
            b.row(
                "scaling",
                name,
                names[i],
                *t,
                4096,
                r[i],
                r[i].median / best[i],
            );
        }
        b.md(format!(
            "| {t} | {} | {:.2} | {} | {:.2} | {} | {:.2} |",
            r[0].cell(),
            r[0].median / best[0],
            r[1].cell(),
            r[1].median / best[1],
            r[2].cell(),
            r[2].median / best[2]
        ));
        if name == "noop" && (*t == 1 || *t == 8 || *t == 16) {
            println!(
                "  host time per job on noop at T={t}: engine {:.2} µs, global lock {:.2} µs",
                1e6 / r[2].median,
                1e6 / r[0].median
            );
        }
    }
}

/// One configuration for profiling (`perf record`), run only when named: `-- hot`. `HOT_THREADS`
/// `HOT_WINDOW` (0: `run` each job) and `HOT_ELEMENTS` choose it; noop, `BENCH_SECS` long.
fn hot(b: &Bench) {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (threads, window) = (env("HOT_THREADS", 8), env("HOT_WINDOW", 32));
    let engine = EngineSys::new(engine_builder(wgpu::Backends::NOOP), window, "engine");
    let work = Work::new(env("HOT_ELEMENTS", 4096));
    let start = Instant::now();
    let jobs = engine.run_for(&work, threads, b.secs);
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    println!(
        "hot: {threads} threads x {window}: {rate:.0} jobs/s, {:.2} µs/job",
        1e6 / rate
    );
}

/// 8. Idle latency and large jobs against plain wgpu: one job at a time, on noop and lavapipe.
fn idle(b: &mut Bench) {
    for (backend, name) in [
        (wgpu::Backends::NOOP, "noop"),
        (wgpu::Backends::VULKAN, "lavapipe"),
    ] {
        let work = Work::new(4096);
        let mut naive = Naive::new(backend).expect("plain wgpu");
        let engine = EngineSys::new(engine_builder(backend), 0, "engine");
        let ((n50, n99, _), (e50, e99, _)) = alternate(&mut naive, &work, || {
            engine.engine.run(engine.job(&work)).expect("job");
        });
        b.md(format!("\nIdle latency on {name} (4,096 elements, one at a time, 2,000 each in alternating blocks of 100): plain p50 {n50:.1?} p99 {n99:.1?}; engine p50 {e50:.1?} p99 {e99:.1?}: x{:.2}", e50.as_secs_f64() / n50.as_secs_f64()));
        let _ = writeln!(
            b.csv,
            "idle,{name},engine/plain p50,1,4096,{:.2},{:.2},,{:.3}",
            e50.as_secs_f64() * 1e6,
            n50.as_secs_f64() * 1e6,
            e50.as_secs_f64() / n50.as_secs_f64()
        );
    }
    // Large jobs on lavapipe: 1M elements, one thread, one at a time.
    let work = Work::new(1 << 20);
    let plain = LockSys {
        naive: Mutex::new(Naive::new(wgpu::Backends::VULKAN).expect("plain wgpu")),
    };
    let engine = EngineSys::new(
        engine_builder(wgpu::Backends::VULKAN),
        0,
        "engine, wait each job",
    );
    plain.verify(&work, true);
    engine.verify(&work, true);
    let r = b.measure(&[&plain, &engine], &work, 1);
    b.md(format!("\n1M-element jobs on lavapipe, one thread, one at a time: plain {} jobs/s, engine {} ({:.2}x)", r[0].cell(), r[1].cell(), r[1].median / r[0].median));
    b.row(
        "large",
        "lavapipe",
        "engine/plain",
        1,
        1 << 20,
        r[1],
        r[1].median / r[0].median,
    );
}

/// 6. Host overhead per job: the engine on noop (no execution), 32 outstanding per thread.
fn overhead(b: &mut Bench) {
    let work = Work::new(4096);
    let engine = EngineSys::new(engine_builder(wgpu::Backends::NOOP), 32, "engine");
    let naive = LockSys {
        naive: Mutex::new(Naive::new(wgpu::Backends::NOOP).expect("plain wgpu")),
    };
    b.md("\n### Host overhead per job on noop (no execution): SAXPY 4,096 elements\n".into());
    b.md("| threads | engine µs/job (wall) | naive under a global lock µs/job |".into());
    b.md("|---|---|---|".into());
    for t in [1, 8, 16] {
        let r = b.measure(&[&engine, &naive], &work, t);
        b.row(
            "overhead",
            "noop",
            "engine us/job",
            t,
            4096,
            r[0],
            1e6 / r[0].median,
        );
        b.row(
            "overhead",
            "noop",
            "global lock us/job",
            t,
            4096,
            r[1],
            1e6 / r[1].median,
        );
        b.md(format!(
            "| {t} | {:.2} | {:.2} |",
            1e6 / r[0].median,
            1e6 / r[1].median
        ));
    }
}

/// 2. Batching: job sizes x max_batch_jobs at T = 8, against naive (T = 1) and the global lock.
fn batching(b: &mut Bench, backend: wgpu::Backends, name: &str) {
    let sizes = [256, 4096, 65_536, 1_048_576];
    let batch = [1, 8, 64, 256];
    b.md(format!("\n### Batching on {name}: 8 threads x 32 outstanding, jobs/s median (min–max) and gain over naive\n"));
    b.md("| elements | naive (1 thread) | global lock (8 threads) | max_batch_jobs 1 | 8 | 64 | 256 |".into());
    b.md("|---|---|---|---|---|---|---|".into());
    let naive = LockSys {
        naive: Mutex::new(Naive::new(backend).expect("plain wgpu")),
    };
    let engines: Vec<EngineSys> = batch
        .iter()
        .map(|&m| {
            EngineSys::new(
                engine_builder(backend).max_batch_jobs(m),
                32,
                &format!("engine batch {m}"),
            )
        })
        .collect();
    for n in sizes {
        let work = Work::new(n);
        naive.verify(&work, true);
        engines.iter().for_each(|e| e.verify(&work, true));
        let base = b.measure(&[&naive], &work, 1)[0];
        let lock = b.measure(&[&naive], &work, 8)[0];
        let refs: Vec<&dyn System> = engines.iter().map(|e| e as &dyn System).collect();
        let rates = b.measure(&refs, &work, 8);
        b.row("batching", name, "naive", 1, n, base, 1.0);
        b.row(
            "batching",
            name,
            "global lock",
            8,
            n,
            lock,
            lock.median / base.median,
        );
        let mut line = format!(
            "| {n} | {} | {} ({:.2}x) |",
            base.cell(),
            lock.cell(),
            lock.median / base.median
        );
        for (m, r) in batch.iter().zip(&rates) {
            b.row(
                "batching",
                name,
                &format!("engine batch {m}"),
                8,
                n,
                *r,
                r.median / base.median,
            );
            let _ = write!(line, " {} ({:.2}x) |", r.cell(), r.median / base.median);
        }
        b.md(line);
    }
}

/// 3. Two devices: one device, two devices on one adapter, and every adapter.
fn two_devices(b: &mut Bench) {
    let work = Work::new(4096);
    let one = EngineSys::new(engine_builder(wgpu::Backends::VULKAN), 32, "1 device");
    let two = EngineSys::new(
        engine_builder(wgpu::Backends::VULKAN).devices_per_adapter(2),
        32,
        "2 devices",
    );
    let all = EngineSys::new(Engine::builder(), 32, "every adapter");
    let systems = [&one as &dyn System, &two, &all];
    systems.iter().for_each(|s| s.verify(&work, true));
    let rates = b.measure(&systems, &work, 8);
    b.md("\n### Devices: SAXPY 4,096 elements, 8 threads x 32 outstanding\n".into());
    b.md("| configuration | devices | jobs/s | vs one device |".into());
    b.md("|---|---|---|---|".into());
    for (s, r) in systems.iter().zip(&rates) {
        let devices = match s.name().as_str() {
            "1 device" => one.engine.devices(),
            "2 devices" => two.engine.devices(),
            _ => all.engine.devices(),
        };
        let names: Vec<String> = devices.iter().map(|d| format!("{:?}", d.backend)).collect();
        b.row(
            "devices",
            "lavapipe",
            &s.name(),
            8,
            4096,
            *r,
            r.median / rates[0].median,
        );
        b.md(format!(
            "| {} | {} | {} | {:.2}x |",
            s.name(),
            names.join(" + "),
            r.cell(),
            r.median / rates[0].median
        ));
    }
}

/// A mixed load: each thread alternates small and large jobs.
struct Mixed<'a> {
    engine: &'a EngineSys,
    other: &'a Work,
}

impl System for Mixed<'_> {
    fn name(&self) -> String {
        self.engine.name()
    }

    fn run_for(&self, work: &Work, threads: usize, dur: Duration) -> u64 {
        self.engine.drive(&[work, self.other], threads, dur)
    }

    fn verify(&self, work: &Work, exact: bool) {
        self.engine.verify(work, exact);
        self.engine.verify(self.other, exact);
    }
}

/// 7. Heterogeneous balancing: every adapter (lavapipe Vulkan + llvmpipe GL), mixed sizes.
fn balance(b: &mut Bench) {
    let (small, large) = (Work::new(4096), Work::new(65_536));
    let policies = [
        Balance::LeastOutstanding,
        Balance::Weighted,
        Balance::RoundRobin,
    ];
    let engines: Vec<EngineSys> = policies
        .iter()
        .map(|&p| EngineSys::new(Engine::builder().balance(p), 32, &format!("{p:?}")))
        .collect();
    let mixed: Vec<Mixed<'_>> = engines
        .iter()
        .map(|engine| Mixed {
            engine,
            other: &large,
        })
        .collect();
    let systems: Vec<&dyn System> = mixed.iter().map(|m| m as &dyn System).collect();
    systems.iter().for_each(|s| s.verify(&small, true));
    let rates = b.measure(&systems, &small, 8);
    let names: Vec<String> = engines[0]
        .engine
        .devices()
        .iter()
        .map(|d| format!("{:?}", d.backend))
        .collect();
    b.md(format!("\n### Balancing over every adapter ({}): 4,096 and 65,536 elements alternating, 8 threads x 32 outstanding\n", names.join(" + ")));
    b.md("| policy | jobs/s | vs least-outstanding (default) | jobs per device |".into());
    b.md("|---|---|---|---|".into());
    for (e, r) in engines.iter().zip(&rates) {
        let split: Vec<String> = e
            .engine
            .stats()
            .devices
            .iter()
            .map(|d| d.completed.to_string())
            .collect();
        b.row(
            "balance",
            "all adapters",
            &e.name(),
            8,
            0,
            *r,
            r.median / rates[0].median,
        );
        b.md(format!(
            "| {} | {} | {:.2}x | {} |",
            e.name(),
            r.cell(),
            r.median / rates[0].median,
            split.join(" / ")
        ));
    }
}

/// 4. Idle latency: one job at a time, nothing else queued.
fn latency(b: &mut Bench) {
    let work = Work::new(4096);
    let mut naive = Naive::new(wgpu::Backends::VULKAN).expect("plain wgpu");
    let engine = EngineSys::new(engine_builder(wgpu::Backends::VULKAN), 1, "engine");
    let ((n50, n99, _), (e50, e99, _)) = alternate(&mut naive, &work, || {
        engine.submit(&work).wait().expect("job");
    });
    b.md("\n### Idle latency on lavapipe: one 4,096-element SAXPY at a time, 2,000 each, in alternating blocks of 100\n".into());
    b.md("| system | p50 | p99 |".into());
    b.md("|---|---|---|".into());
    b.md(format!("| naive | {n50:.1?} | {n99:.1?} |"));
    b.md(format!(
        "| engine | {e50:.1?} ({:.2}x naive) | {e99:.1?} |",
        e50.as_secs_f64() / n50.as_secs_f64()
    ));
    let st = engine.engine.stats().devices[0];
    let (wait, total) = (st.queue_wait_p50, st.latency_p50);
    b.md(format!("\nEngine stats: submit to encoding p50 {wait:?}, submit to reply p50 {total:?} (engine histograms, within 1%)"));
    let _ = writeln!(
        b.csv,
        "latency,lavapipe,naive p50 us,1,4096,{:.1},,,",
        n50.as_secs_f64() * 1e6
    );
    let _ = writeln!(
        b.csv,
        "latency,lavapipe,engine p50 us,1,4096,{:.1},,,{:.3}",
        e50.as_secs_f64() * 1e6,
        e50.as_secs_f64() / n50.as_secs_f64()
    );
}

/// 4,000 jobs one at a time, plain wgpu and `engine_job` alternating in blocks of 100 (so
/// drift and noise hit both alike, while each still sees a stream of its own jobs one at a
/// time, as an idle-path user would); the percentiles of each one's latency.
#[allow(clippy::type_complexity)] // two of `percentiles`' triples
fn alternate(
    naive: &mut Naive,
    work: &Work,
    mut engine_job: impl FnMut(),
) -> (
    (Duration, Duration, Duration),
    (Duration, Duration, Duration),
) {
    let (mut tn, mut te) = (Vec::new(), Vec::new());
    for i in 0..4000 {
        let t = Instant::now();
        if (i / 100) % 2 == 0 {
            naive.run(2.0, &work.x, &work.y).expect("plain job");
            tn.push(t.elapsed());
        } else {
            engine_job();
            te.push(t.elapsed());
        }
    }
    (percentiles(tn), percentiles(te))
}

/// Latency percentiles of `v`: (p50, p99, max).
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// Priority aging: what one aging interval buys a High job and costs a Low one, on one lavapipe
/// device. First a backlog of Low work (8 threads keep 256 Low jobs outstanding each) while a
/// High job is submitted every 20 ms: the High job's latency. Then the reverse, a stream of
/// High work and a Low job every 20 ms: the Low job's latency (how long aging lets a steady
/// stream of higher-priority work hold it back).
fn priority(b: &mut Bench) {
    use wgpu_batch::Priority;
    let work = Work::new(4096);
    b.md("\n### Priority aging on lavapipe: latency of the rare job against a backlog of the other priority (4,096-element SAXPY, 8 threads x 256 outstanding)\n".into());
    b.md("| priority_aging | High among Low: p50 | p99 | Low among High: p50 | p99 | max |".into());
    b.md("|---|---|---|---|---|---|".into());
    for aging in [
        Duration::from_millis(10),
        Duration::from_millis(100),
        Duration::from_secs(1),
        Duration::MAX,
    ] {
        let engine = EngineSys::new(
            engine_builder(wgpu::Backends::VULKAN).priority_aging(aging),
            256,
            "engine",
        );
        let probe = |bulk: Priority, rare: Priority| {
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        let mut window = std::collections::VecDeque::new();
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            while window.len() < engine.window {
                                window.push_back(engine.submit_with(&work, bulk));
                            }
                            window.pop_front().unwrap().wait().expect("job");
                        }
                        window
                            .into_iter()
                            .for_each(|h| drop(h.wait().expect("job")));
                    });
                }
                std::thread::sleep(Duration::from_millis(500)); // the backlog builds up
                let mut lat = Vec::new();
                for _ in 0..40 {
                    std::thread::sleep(Duration::from_millis(20));
                    let t = Instant::now();
                    let h = engine.submit_with(&work, rare);
                    // A job held back 5 s is starved: stop the stream to let it through.
                    let done = h.wait_timeout(Duration::from_secs(5));
                    lat.push(t.elapsed());
                    if done.is_err() {
                        break;
                    }
                }
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                percentiles(lat)
            })
        };
        let (h50, h99, _) = probe(Priority::Low, Priority::High);
        let (l50, l99, lmax) = probe(Priority::High, Priority::Low);
        let name = if aging == Duration::MAX {
            "MAX (strict)".to_string()
        } else {
            format!("{aging:?}")
        };
        let starved = |d: Duration| {
            if d >= Duration::from_secs(5) {
                "starved (> 5 s)".to_string()
            } else {
                format!("{d:.1?}")
            }
        };
        b.md(format!(
            "| {name} | {h50:.1?} | {h99:.1?} | {} | {} | {} |",
            starved(l50),
            starved(l99),
            starved(lmax)
        ));
        let _ = writeln!(
            b.csv,
            "priority,lavapipe,{name},8,4096,{:.1},{:.1},{:.1},",
            h50.as_secs_f64() * 1e3,
            l50.as_secs_f64() * 1e3,
            lmax.as_secs_f64() * 1e3
        );
    }
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 5. Memory: RSS before and after 100,000 jobs (after a warm-up that fills the pools).
fn memory(b: &mut Bench) {
    let work = Work::new(4096);
    let engine = EngineSys::new(engine_builder(wgpu::Backends::VULKAN), 32, "engine");
    let count = |jobs: u64| {
        let per_thread = jobs / 8;
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut window = std::collections::VecDeque::new();
                    for _ in 0..per_thread {
                        window.push_back(engine.submit(&work));
                        if window.len() >= 32 {
                            window.pop_front().unwrap().wait().expect("job");
                        }
                    }
                    window
                        .into_iter()
                        .for_each(|h| drop(h.wait().expect("job")));
                });
            }
        });
    };
    count(10_000);
    let before = rss_kib();
    count(100_000);
    let after = rss_kib();
    let growth = (after as f64 - before as f64) / before as f64 * 100.0;
    b.md("\n### Memory on lavapipe: 8 threads x 32 outstanding, 4,096-element SAXPY\n".into());
    b.md(format!("RSS after a 10,000-job warm-up: {} MiB; after 100,000 more jobs: {} MiB; growth {growth:+.1}%", before / 1024, after / 1024));
    let _ = writeln!(
        b.csv,
        "memory,lavapipe,rss growth %,8,4096,{growth:.2},{before},{after},"
    );
}

fn main() {
    let _ = env_logger::try_init();
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.5);
    let reps = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut b = Bench {
        secs: Duration::from_secs_f64(secs),
        reps,
        csv: "section,backend,system,threads,elements,jobs_per_s_median,min,max,ratio\n".into(),
        md: String::new(),
    };
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |s: &str| only.as_deref().is_none_or(|o| s.contains(o));
    let start = Instant::now();
    println!(
        "wgpu-batch benchmark: {secs} s per measurement, {reps} repetitions, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if want("scaling") {
        scaling(&mut b, wgpu::Backends::NOOP, "noop");
        scaling(&mut b, wgpu::Backends::VULKAN, "lavapipe");
    }
    if want("overhead") {
        overhead(&mut b);
    }
    if want("batching") {
        batching(&mut b, wgpu::Backends::VULKAN, "lavapipe");
    }
    if want("devices") {
        two_devices(&mut b);
    }
    if want("balance") {
        balance(&mut b);
    }
    if want("latency") {
        latency(&mut b);
    }
    if want("memory") {
        memory(&mut b);
    }
    if want("priority") {
        priority(&mut b);
    }
    if only.as_deref() == Some("hot") {
        hot(&b);
    }
    if want("idle") {
        idle(&mut b);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench.csv");
    let _ = std::fs::write(&path, &b.csv);
    println!("\nwrote {} in {:.0?}", path.display(), start.elapsed());
}
