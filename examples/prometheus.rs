//! Metrics for Prometheus: the engine publishes its per-device counters, gauges and latency
//! histograms through the `metrics` facade (feature `metrics`), and Prometheus' exporter
//! serves them over HTTP.
//!
//! `cargo run --release --features metrics --example prometheus -- 9898`
//!
//! then `curl http://127.0.0.1:9898/metrics` while it runs SAXPY jobs from 4 threads for 30
//! seconds. (A tiny HTTP server on `std` keeps the example free of an async runtime; the
//! exporter's own `http-listener` feature serves it too.)

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use wgpu_batch::{Engine, kernels};

/// Serves `handle`'s rendering at `/metrics` to every connection on `listener`, on a thread;
/// another runs the exporter's upkeep every 5 s (it drains histogram samples, which
/// otherwise pile up between scrapes).
fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        }
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, &handle);
        }
    });
}

fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut request_line = String::new();
    BufReader::new(&stream).read_line(&mut request_line)?;
    let (status, body) = if request_line.starts_with("GET /metrics ") {
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", "try /metrics\n".to_owned())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Runs `jobs` verified SAXPY jobs on each of `threads` threads (or until `until`).
fn work(engine: &Engine, threads: usize, jobs: usize, until: Instant) -> Result<(), String> {
    let saxpy = engine.kernel(kernels::saxpy()).map_err(|e| e.to_string())?;
    let x: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    let y = vec![1.0f32; 4096];
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..jobs {
                        if Instant::now() >= until {
                            break;
                        }
                        let out = engine.run(kernels::saxpy_job(&saxpy, 2.0, &x, &y));
                        let got: Vec<f32> =
                            out.and_then(|o| o.read(2)).map_err(|e| e.to_string())?;
                        if got[7] != 15.0 {
                            return Err(format!("wrong result {}", got[7]));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("worker"))
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let port: u16 = std::env::args().nth(1).map_or(Ok(9898), |p| p.parse())?;
    let handle = PrometheusBuilder::new().install_recorder()?;
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("serving http://{}/metrics for 30 s", listener.local_addr()?);
    serve(listener, handle);
    let engine = Engine::builder()
        .metrics_interval(Duration::from_millis(500))
        .build()?;
    work(
        &engine,
        4,
        usize::MAX,
        Instant::now() + Duration::from_secs(30),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn scrape(addr: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        response
    }

    /// The endpoint serves the engine's counters with the jobs it ran, and its latency
    /// histogram.
    #[test]
    fn scrape_finds_the_counters() {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .expect("recorder");
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a free port");
        let addr = listener.local_addr().expect("address");
        serve(listener, handle);
        let engine = Engine::builder()
            .backends(wgpu_batch::wgpu::Backends::VULKAN)
            .build()
            .expect("an engine (needs lavapipe: apt install mesa-vulkan-drivers)");
        let far = Instant::now() + Duration::from_secs(60);
        work(&engine, 2, 50, far).expect("jobs");
        engine.publish_metrics();
        let body = scrape(addr);
        let completed = body
            .lines()
            .find(|l| l.starts_with("wgpu_batch_jobs_completed_total{"))
            .unwrap_or_else(|| panic!("no completed counter in\n{body}"));
        assert!(completed.contains("device=\"0\"") && completed.contains("backend=\"vulkan\""));
        assert!(completed.ends_with(" 100"), "{completed}");
        for name in [
            "wgpu_batch_jobs_submitted_total",
            "wgpu_batch_batches_total",
            "wgpu_batch_dispatches_total",
            "wgpu_batch_outstanding_jobs",
            "wgpu_batch_job_latency_seconds_count",
            "wgpu_batch_queue_wait_seconds",
        ] {
            assert!(body.contains(name), "{name} missing in\n{body}");
        }
        let count = body
            .lines()
            .find(|l| l.starts_with("wgpu_batch_job_latency_seconds_count{"))
            .expect("latency count");
        assert!(count.ends_with(" 100"), "every job's latency once: {count}");
        // Published again with nothing new: the histogram does not count a job twice.
        engine.publish_metrics();
        assert!(scrape(addr).contains(count), "samples forwarded once");
    }
}
