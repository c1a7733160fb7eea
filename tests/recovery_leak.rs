//! Reopening a lost device again and again leaks no threads and no memory. Alone in its test
//! binary: the resident memory it watches is the whole process's.

mod common;

use std::time::{Duration, Instant};

use wgpu_batch::{DeviceState, Engine, kernels};

/// Waits (bounded) until device 0 is up as `generation`.
fn wait_up(engine: &Engine, generation: u32) {
    let start = Instant::now();
    loop {
        let d = &engine.devices()[0];
        if d.state == DeviceState::Up && d.generation == generation {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never reopened: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Threads of this process, and its resident memory in KiB (Linux `/proc`).
fn threads_and_rss() -> (usize, u64) {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    (threads, rss)
}

#[test]
fn a_hundred_losses_and_recoveries_leak_no_threads_and_little_memory() {
    let engine = common::build(
        common::builder()
            .devices_per_adapter(1)
            .reopen_lost_devices(true)
            .reopen_budget(1_000, Duration::from_secs(60))
            .reopen_backoff(Duration::ZERO),
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    let x = common::data(1024, 3);
    let mut before = None;
    for generation in 1..=100u32 {
        engine.lose_device(0);
        wait_up(&engine, generation);
        let out = engine.run(kernels::scale_job(&scale, 3.0, &x)).unwrap();
        common::assert_close(
            &out.read::<f32>(1).unwrap(),
            &x.iter().map(|v| v * 3.0).collect::<Vec<_>>(),
            0.0,
        );
        if generation == 10 {
            // Counted once the first recoveries' threads and caches have settled.
            std::thread::sleep(Duration::from_millis(50));
            before = Some(threads_and_rss());
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let ((t0, m0), (t1, m1)) = (before.unwrap(), threads_and_rss());
    eprintln!("threads {t0} -> {t1}, RSS {m0} -> {m1} KiB over 90 recoveries");
    // A leak of one thread per recovery would add 90 here.
    assert!(t1 <= t0 + 5, "threads {t0} -> {t1} over 90 recoveries");
    assert!(
        m1 <= m0 + 64 * 1024,
        "RSS {m0} KiB -> {m1} KiB over 90 recoveries"
    );
}
