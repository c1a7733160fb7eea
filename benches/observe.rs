//! What the `metrics` and `tracing` features cost: engine throughput on noop (host cost alone)
//! at 8 threads x 32 outstanding, SAXPY 4,096 elements, with the features compiled out and
//! in. The two builds are two binaries, so `benches/observe.sh` runs them alternately and
//! prints the ratios; run by hand:
//!
//! `cargo bench --bench observe` (features off) and
//! `cargo bench --bench observe --features metrics,tracing -- <mode>` with `<mode>`:
//! - `quiet`: a Prometheus recorder and a tracing subscriber at INFO installed, as in
//!   production: metrics published every second, the engine's DEBUG spans not wanted (a
//!   registry at INFO, so its cost is the engine's call-site checks);
//! - `spans`: the same with the subscriber at DEBUG: every job and batch span and event is
//!   created and recorded (into `tracing-subscriber`'s registry, no layer that formats or
//!   writes: what the instrumentation itself costs, not an output's).
//!
//! Prints one line: `jobs/s <median> <min> <max>` over `BENCH_REPS` (default 5) runs of
//! `BENCH_SECS` (default 1) seconds each.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wgpu_batch::{Engine, Job, Kernel, kernels, wgpu};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Jobs per second from `threads` threads keeping `window` jobs each outstanding for `dur`.
fn drive(engine: &Engine, kernel: &Kernel, threads: usize, window: usize, dur: Duration) -> f64 {
    let x: Arc<[f32]> = (0..4096).map(|i| i as f32).collect();
    let job = || {
        Job::new(kernel)
            .uniform(0, &2.0f32)
            .input_shared(1, x.clone())
            .inout_shared(2, x.clone())
            .workgroups_for(4096)
    };
    let start = Instant::now();
    let end = start + dur;
    let done: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut q, mut done) = (VecDeque::new(), 0u64);
                    while Instant::now() < end {
                        while q.len() < window {
                            q.push_back(engine.submit(job()).expect("submit"));
                        }
                        q.pop_front().unwrap().wait().expect("job");
                        done += 1;
                    }
                    q.into_iter().for_each(|h| drop(h.wait().expect("job")));
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

/// Installs what `mode` asks for; returns a description of it.
#[cfg(all(feature = "metrics", feature = "tracing"))]
fn install(mode: &str) -> String {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    // The exporter's upkeep drains histogram samples, as a served exporter's would.
    let handle = recorder.handle();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            handle.run_upkeep();
        }
    });
    metrics::set_global_recorder(recorder).expect("recorder");
    let level = match mode {
        "spans" => LevelFilter::DEBUG,
        _ => LevelFilter::INFO,
    };
    let subscriber = tracing_subscriber::registry().with(level);
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
    format!("features on, recorder + subscriber at {level}")
}

#[cfg(not(all(feature = "metrics", feature = "tracing")))]
fn install(_mode: &str) -> String {
    "features off".into()
}

fn main() {
    let mode = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let what = install(mode.as_deref().unwrap_or("quiet"));
    let engine = Engine::builder()
        .backends(wgpu::Backends::NOOP)
        .build()
        .expect("noop engine");
    let saxpy = engine.kernel(kernels::saxpy()).expect("kernel");
    let (secs, reps) = (env("BENCH_SECS", 1.0), env("BENCH_REPS", 5usize));
    drive(&engine, &saxpy, 8, 32, Duration::from_millis(200)); // warm up
    let mut rates: Vec<f64> = (0..reps.max(1))
        .map(|_| drive(&engine, &saxpy, 8, 32, Duration::from_secs_f64(secs)))
        .collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "jobs/s {:.0} {:.0} {:.0} ({what})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}
