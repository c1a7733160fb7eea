//! Deadlines, priorities and cancellation: each proven on a device kept busy, so the
//! scheduler's choice (not luck) decides the outcome.

mod common;

use std::time::{Duration, Instant};

use common::{WAIT, data};
use wgpu_batch::{Engine, Error, JobHandle, Priority, kernels};

/// One device, one job per batch, so queued jobs really wait their turn.
fn one_at_a_time(b: wgpu_batch::EngineBuilder) -> Engine {
    common::build(
        b.adapter_name(common::engine().devices()[0].adapter.clone())
            .max_batch_jobs(1),
    )
}

/// Queues `n` jobs of about 20 ms each (cheap to submit, no deadline) to keep device 0
/// busy; returns them and how many jobs device 0 had encoded before them.
fn busy(engine: &Engine, n: usize) -> (Vec<JobHandle>, u64) {
    let spin = common::Spinner::new(engine, 0, Duration::from_millis(20));
    let before = encoded(engine);
    let handles = (0..n).map(|_| engine.submit(spin.job()).unwrap()).collect();
    (handles, before)
}

/// Jobs device 0 has put into batches so far.
fn encoded(engine: &Engine) -> u64 {
    let stats = engine.stats().devices[0];
    (stats.batches as f64 * stats.mean_batch).round() as u64
}

fn settle(handles: Vec<JobHandle>) {
    for h in handles {
        h.wait_timeout(WAIT).unwrap();
    }
}

#[test]
fn a_deadline_expires_while_the_device_is_busy() {
    let engine = one_at_a_time(common::builder());
    let k = engine.kernel(kernels::scale()).unwrap();
    let (blockers, before) = busy(&engine, 20);
    let start = Instant::now();
    let late = engine
        .submit(kernels::scale_job(&k, 2.0, &[1.0; 64]).timeout(Duration::from_millis(1)))
        .unwrap();
    assert_eq!(late.wait_timeout(WAIT).unwrap_err(), Error::DeadlineExpired);
    assert!(start.elapsed() < WAIT);
    settle(blockers);
    // The expired job was never encoded: exactly the 20 blockers went through batches.
    assert_eq!(encoded(&engine) - before, 20, "{:?}", engine.stats());
    // A job with room to spare still runs.
    let ok = engine
        .submit(kernels::scale_job(&k, 2.0, &[1.0; 64]).timeout(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(
        ok.wait_timeout(WAIT).unwrap().read::<f32>(1).unwrap()[0],
        2.0
    );
}

#[test]
fn the_engine_default_timeout_applies_to_jobs_without_one() {
    let engine = one_at_a_time(common::builder().default_timeout(Duration::from_millis(1)));
    let k = engine.kernel(kernels::scale()).unwrap();
    let (blockers, _) = busy(&engine, 20);
    let late = engine
        .submit(kernels::scale_job(&k, 2.0, &[1.0; 64]))
        .unwrap();
    assert_eq!(late.wait_timeout(WAIT).unwrap_err(), Error::DeadlineExpired);
    // The earliest blockers were encoded in time; later ones may have expired too.
    let ran = blockers
        .into_iter()
        .filter(|h| h.wait_timeout(WAIT).is_ok())
        .count();
    assert!(ran >= 1);
}

#[test]
fn a_high_priority_job_overtakes_a_thousand_low_priority_ones() {
    let engine = one_at_a_time(common::builder().priority_aging(Duration::from_secs(60)));
    let k = engine.kernel(kernels::scale()).unwrap();
    let x: std::sync::Arc<[f32]> = data(16_384, 2).into();
    let job = |p| {
        wgpu_batch::Job::new(&k)
            .uniform(0, &2.0f32)
            .inout_shared(1, x.clone())
            .workgroups_for(x.len())
            .priority(p)
    };
    let low: Vec<JobHandle> = (0..1000)
        .map(|_| engine.submit(job(Priority::Low)).unwrap())
        .collect();
    // What the device finished while the Low jobs were being submitted is no part of the
    // property (on a loaded machine the executor keeps up with a slow submitter); the Low
    // jobs still queued when the High one arrives must not run before it.
    let finished_early: Vec<bool> = low.iter().map(|h| h.try_get().is_some()).collect();
    let high = engine.submit(job(Priority::High)).unwrap();
    high.wait_timeout(WAIT).unwrap();
    let queued = finished_early.iter().filter(|&&f| !f).count();
    let overtook = (low.iter().zip(&finished_early))
        .filter(|(h, early)| !**early && h.try_get().is_some())
        .count();
    assert!(
        queued >= 100,
        "no backlog to overtake: {queued} Low jobs queued"
    );
    assert!(
        overtook < queued / 2,
        "{overtook} of the {queued} queued low-priority jobs finished before the High one"
    );
    for h in low {
        // try_get above took some results already; the rest must still arrive.
        match h.wait_timeout(WAIT) {
            Ok(_) | Err(Error::ResultTaken) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn aging_keeps_low_priority_jobs_from_starving() {
    // A steady stream of High jobs (8 outstanding at a time, for as long as it takes) must not
    // starve a Low job: once the stream's new jobs were submitted two aging intervals after
    // it, the Low job ranks first.
    let engine = one_at_a_time(common::builder().priority_aging(Duration::from_millis(20)));
    let k = engine.kernel(kernels::scale()).unwrap();
    let x: std::sync::Arc<[f32]> = data(1 << 16, 3).into();
    let job = |p| {
        wgpu_batch::Job::new(&k)
            .uniform(0, &2.0f32)
            .inout_shared(1, x.clone())
            .workgroups_for(x.len())
            .priority(p)
    };
    let low_done = std::sync::atomic::AtomicBool::new(false);
    let stream_end = Instant::now() + Duration::from_secs(60);
    let submitted = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            let mut window = std::collections::VecDeque::new();
            let mut submitted = 0;
            while !low_done.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < stream_end
            {
                window.push_back(engine.submit(job(Priority::High)).unwrap());
                if window.len() >= 8 {
                    window.pop_front().unwrap().wait_timeout(WAIT).unwrap();
                }
                submitted += 1;
            }
            window
                .into_iter()
                .for_each(|h| drop(h.wait_timeout(WAIT).unwrap()));
            submitted
        });
        std::thread::sleep(Duration::from_millis(50)); // the stream is running
        let low = engine.submit(job(Priority::Low)).unwrap();
        low.wait_timeout(WAIT).unwrap();
        low_done.store(true, std::sync::atomic::Ordering::SeqCst);
        stream.join().unwrap()
    });
    assert!(
        Instant::now() < stream_end,
        "the low job ran only once the high stream stopped ({submitted} high jobs)"
    );
}

#[test]
fn a_cancelled_queued_job_never_runs() {
    let engine = one_at_a_time(common::builder());
    let k = engine.kernel(kernels::scale()).unwrap();
    let (blockers, before) = busy(&engine, 10);
    let failed_before = engine.stats().devices[0].failed;
    // The victim doubles a resident buffer in place: if it ran, the buffer would show it.
    let counter = engine.upload(&[1.0f32; 64]).unwrap();
    let doubling = wgpu_batch::Job::new(&k)
        .uniform(0, &2.0f32)
        .buffer(1, &counter);
    let victim = engine.submit(doubling.workgroups(1, 1, 1)).unwrap();
    victim.cancel();
    assert_eq!(victim.wait_timeout(WAIT).unwrap_err(), Error::Cancelled);
    settle(blockers);
    let stats = engine.stats().devices[0];
    assert_eq!(
        encoded(&engine) - before,
        10,
        "the cancelled job was encoded: {stats:?}"
    );
    assert_eq!(stats.failed - failed_before, 1);
    assert_eq!(
        engine.read::<f32>(&counter).unwrap(),
        [1.0; 64],
        "the cancelled job's write is absent"
    );
}

/// One device (the first adapter's), holding partial batches open for `delay`.
fn delayed(delay: Duration) -> Engine {
    let name = common::engine().devices()[0].adapter.clone();
    common::build(common::builder().adapter_name(name).max_batch_delay(delay))
}

#[test]
fn max_batch_delay_gathers_late_jobs_into_one_batch() {
    let engine = delayed(Duration::from_millis(500));
    let k = engine.kernel(kernels::scale()).unwrap();
    let first = engine
        .submit(kernels::scale_job(&k, 2.0, &[1.0; 64]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let rest: Vec<JobHandle> = (0..9)
        .map(|_| {
            engine
                .submit(kernels::scale_job(&k, 2.0, &[1.0; 64]))
                .unwrap()
        })
        .collect();
    settle(rest);
    first.wait_timeout(WAIT).unwrap();
    let stats = engine.stats().devices[0];
    assert_eq!((stats.batches, stats.max_batch), (1, 10), "{stats:?}");
}

#[test]
fn max_batch_delay_never_holds_a_job_past_its_deadline() {
    let engine = delayed(Duration::from_secs(20));
    let k = engine.kernel(kernels::scale()).unwrap();
    let start = Instant::now();
    let h = engine
        .submit(kernels::scale_job(&k, 2.0, &[1.0; 64]).timeout(Duration::from_millis(100)))
        .unwrap();
    // The partial batch closes at the job's deadline, not after the 20 s delay.
    assert_eq!(
        h.wait_timeout(WAIT).unwrap().read::<f32>(1).unwrap()[0],
        2.0
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "held for {:?}",
        start.elapsed()
    );
}
