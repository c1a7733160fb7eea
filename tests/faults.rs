//! Fault stress: many threads submit jobs while random cancels, deadlines, a device loss (by
//! wgpu's callback, by the engine's hook, or by an executor panic; the lost device reopened or
//! not) and a shutdown strike at random moments. Every handle must resolve exactly once, with an outcome the faults allow,
//! and every result that arrives must be right.
//!
//! CI runs `FAULT_CASES` (default 8) cases; set it higher to search longer.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::WAIT;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use wgpu_batch::{Engine, Error, Job, JobHandle, Kernel, KernelSource};

#[derive(Debug, Clone, Copy)]
enum Loss {
    None,
    /// wgpu's own lost callback (`destroy_device`).
    Destroy,
    /// The engine's hook (`lose_device`).
    Hook,
    /// The executor panics.
    Panic,
}

#[derive(Debug, Clone, Copy)]
enum Wait {
    Block,
    Timeout,
    Poll,
    Await,
}

#[derive(Debug, Clone)]
struct Case {
    threads: usize,
    jobs: usize,
    loss: Loss,
    loss_after_ms: u64,
    shutdown_after_ms: Option<u64>,
    cancel_every: usize,
    deadline_every: usize,
    max_jobs: usize,
    /// Reopen the lost device (`EngineBuilder::reopen_lost_devices`).
    reopen: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        2usize..=8,
        20usize..150,
        prop_oneof![
            Just(Loss::None),
            Just(Loss::Destroy),
            Just(Loss::Hook),
            Just(Loss::Panic)
        ],
        0u64..40,
        prop::option::of(0u64..80),
        2usize..9,
        2usize..9,
        prop::sample::select(vec![1usize, 4, 64]),
        any::<bool>(),
    )
        .prop_map(
            |(
                threads,
                jobs,
                loss,
                loss_after_ms,
                shutdown_after_ms,
                cancel_every,
                deadline_every,
                max_jobs,
                reopen,
            )| Case {
                threads,
                jobs,
                loss,
                loss_after_ms,
                shutdown_after_ms,
                cancel_every,
                deadline_every,
                max_jobs,
                reopen,
            },
        )
}

/// What a job was given, so its outcome can be judged.
struct Sent {
    id: u32,
    cancelled: bool,
    deadline: bool,
    how: Wait,
}

fn job(k: &Kernel, id: u32, n: usize) -> Job {
    let x: Vec<u32> = (0..n as u32).map(|i| id.wrapping_mul(7919) ^ i).collect();
    Job::new(k)
        .input(0, &x)
        .output::<u32>(1, n)
        .workgroups(n.div_ceil(64) as u32, 1, 1)
}

fn want(id: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (id.wrapping_mul(7919) ^ i).wrapping_add(1))
        .collect()
}

/// Waits for `h` the way `how` says; every wait is bounded.
fn resolve(h: &mut Option<JobHandle>, how: Wait) -> wgpu_batch::Result<wgpu_batch::JobOutput> {
    match how {
        Wait::Block | Wait::Timeout => h.as_ref().unwrap().wait_timeout(WAIT),
        Wait::Poll => {
            let start = Instant::now();
            loop {
                if let Some(r) = h.as_ref().unwrap().try_get() {
                    return r;
                }
                assert!(start.elapsed() < WAIT, "a polled job never resolved");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Wait::Await => {
            let handle = h.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(pollster::block_on(handle));
            });
            rx.recv_timeout(WAIT)
                .expect("an awaited job never resolved")
        }
    }
}

fn run(c: &Case) -> Result<(), TestCaseError> {
    let name = common::engine().devices()[0].adapter.clone();
    let engine = common::build(
        common::builder()
            .adapter_name(name)
            .devices_per_adapter(2)
            .max_batch_jobs(c.max_jobs)
            .reopen_lost_devices(c.reopen)
            .reopen_backoff(Duration::from_millis(1)),
    );
    let k = engine
        .kernel(KernelSource::wgsl("inc", common::INC))
        .unwrap();
    let lost = AtomicBool::new(false);
    let shut = AtomicBool::new(false);
    let n = 300;
    std::thread::scope(|s| -> Result<(), TestCaseError> {
        s.spawn(|| inject(&engine, c, &lost, &shut));
        let workers: Vec<_> = (0..c.threads)
            .map(|t| {
                let (engine, k, lost, shut) = (&engine, &k, &lost, &shut);
                s.spawn(move || worker(engine, k, c, t, n, lost, shut))
            })
            .collect();
        for w in workers {
            w.join().unwrap()?;
        }
        Ok(())
    })
}

/// Strikes the case's faults at their moments.
fn inject(engine: &Engine, c: &Case, lost: &AtomicBool, shut: &AtomicBool) {
    let start = Instant::now();
    let mut loss = Some(c.loss).filter(|l| !matches!(l, Loss::None));
    let mut shutdown = c.shutdown_after_ms;
    while loss.is_some() || shutdown.is_some() {
        let now = start.elapsed();
        if let Some(l) = loss.filter(|_| now >= Duration::from_millis(c.loss_after_ms)) {
            lost.store(true, Ordering::SeqCst);
            match l {
                Loss::Destroy => engine.destroy_device(0),
                Loss::Hook => engine.lose_device(0),
                Loss::Panic => engine.panic_executor(0),
                Loss::None => {}
            }
            loss = None;
        }
        if shutdown.is_some_and(|ms| now >= Duration::from_millis(ms)) {
            shut.store(true, Ordering::SeqCst);
            engine.shutdown();
            shutdown = None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn worker(
    engine: &Engine,
    k: &Kernel,
    c: &Case,
    t: usize,
    n: usize,
    lost: &AtomicBool,
    shut: &AtomicBool,
) -> Result<(), TestCaseError> {
    let mut sent: Vec<(Sent, Option<JobHandle>)> = Vec::new();
    for j in 0..c.jobs {
        let id = (t * 10_000 + j) as u32;
        let deadline = j % c.deadline_every == 0;
        let mut job = job(k, id, n);
        if deadline {
            job = job.timeout(Duration::from_micros((j as u64 * 397) % 3_000));
        }
        let h = match engine.submit(job) {
            Ok(h) => h,
            Err(Error::Shutdown) => {
                prop_assert!(shut.load(Ordering::SeqCst), "Shutdown without a shutdown");
                continue;
            }
            Err(Error::DeviceLost { .. }) => {
                prop_assert!(lost.load(Ordering::SeqCst), "DeviceLost without a loss");
                continue;
            }
            Err(e) => return Err(TestCaseError::fail(format!("submit: {e}"))),
        };
        let cancelled = j % c.cancel_every == 1;
        if cancelled {
            h.cancel();
        }
        let how = [Wait::Block, Wait::Timeout, Wait::Poll, Wait::Await][(j + t) % 4];
        sent.push((
            Sent {
                id,
                cancelled,
                deadline,
                how,
            },
            Some(h),
        ));
    }
    for (s, mut h) in sent {
        let r = resolve(&mut h, s.how);
        match r {
            Ok(out) => prop_assert_eq!(out.read::<u32>(1).unwrap(), want(s.id, n)),
            Err(Error::Cancelled) => prop_assert!(s.cancelled, "Cancelled without a cancel"),
            Err(Error::DeadlineExpired) => prop_assert!(s.deadline, "DeadlineExpired without one"),
            Err(Error::DeviceLost { device: 0, .. }) => {
                prop_assert!(lost.load(Ordering::SeqCst), "DeviceLost without a loss")
            }
            Err(Error::Shutdown) => prop_assert!(false, "a queued job was dropped by shutdown"),
            Err(e) => return Err(TestCaseError::fail(format!("job {}: {e}", s.id))),
        }
        // Exactly once: the handle has nothing more to give.
        if let Some(h) = h {
            prop_assert_eq!(h.try_get().map(|r| r.err()), Some(Some(Error::ResultTaken)));
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        max_shrink_iters: 50,
        ..Config::default()
    })]

    #[test]
    fn every_handle_resolves_once_with_an_allowed_outcome(c in case()) {
        run(&c)?;
    }
}
