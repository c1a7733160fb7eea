//! Jobs through NATS JetStream (feature `nats`) against the same jobs on an in-process engine:
//! throughput and latency on lavapipe (4,096-element SAXPY), the idle round trip, the
//! worker's host cost per job and the bytes on the wire (noop backend: host cost alone), and
//! two workers against one on this machine. A real `nats-server` is started on a free port.
//!
//! `cargo bench --features nats --bench nats` (about a minute). Every result is checked.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use wgpu_batch::remote::{Client, NatsServer, Queue, RemoteJob, Worker, WorkerOptions};
use wgpu_batch::{Engine, Kernel, kernels, wgpu};

const N: usize = 4096;
const WAIT: Duration = Duration::from_secs(60);

fn engine(backends: wgpu::Backends) -> Engine {
    Engine::builder()
        .backends(backends)
        .build()
        .expect("an engine (lavapipe: apt-get install mesa-vulkan-drivers)")
}

fn worker(backends: wgpu::Backends, q: &Queue) -> Worker {
    let engine = engine(backends);
    let k = engine.kernel(kernels::saxpy()).unwrap();
    let kernels = HashMap::from([("saxpy".to_owned(), k)]);
    Worker::start(engine, kernels, q.clone(), WorkerOptions::default()).unwrap()
}

fn data() -> (Vec<f32>, Vec<f32>) {
    ((0..N).map(|i| i as f32).collect(), vec![1.0; N])
}

fn remote_job(x: &[f32], y: &[f32]) -> RemoteJob {
    RemoteJob::new("saxpy")
        .uniform(0, &2.0f32)
        .input(1, x)
        .inout(2, y)
        .workgroups((N / 64) as u32, 1, 1)
}

fn check(got: &[f32], x: &[f32], y: &[f32]) {
    assert!(
        got.iter()
            .zip(x.iter().zip(y))
            .all(|(g, (x, y))| *g == 2.0 * x + y),
        "wrong result"
    );
}

/// Jobs/s and sorted latencies of `jobs` jobs with `window` outstanding.
fn through_nats(client: &Client, jobs: usize, window: usize) -> (f64, Vec<Duration>) {
    let (x, y) = data();
    let mut flight = VecDeque::new();
    let mut lat = Vec::with_capacity(jobs);
    let start = Instant::now();
    for i in 0..jobs + window {
        if flight.len() == window || i >= jobs {
            let Some((t, h)): Option<(Instant, wgpu_batch::remote::RemoteHandle)> =
                flight.pop_front()
            else {
                break;
            };
            let out = h.wait_timeout(WAIT).unwrap();
            lat.push(t.elapsed());
            check(&out.read::<f32>(2).unwrap(), &x, &y);
        }
        if i < jobs {
            flight.push_back((Instant::now(), client.submit(remote_job(&x, &y)).unwrap()));
        }
    }
    lat.sort();
    (jobs as f64 / start.elapsed().as_secs_f64(), lat)
}

/// `check`: compare results (not on the noop backend, which runs nothing).
fn in_process(
    engine: &Engine,
    k: &Kernel,
    jobs: usize,
    window: usize,
    checked: bool,
) -> (f64, Vec<Duration>) {
    let (x, y) = data();
    let mut flight = VecDeque::new();
    let mut lat = Vec::with_capacity(jobs);
    let start = Instant::now();
    for i in 0..jobs + window {
        if flight.len() == window || i >= jobs {
            let Some((t, h)): Option<(Instant, wgpu_batch::JobHandle)> = flight.pop_front() else {
                break;
            };
            let out = h.wait_timeout(WAIT).unwrap();
            lat.push(t.elapsed());
            if checked {
                check(&out.read::<f32>(2).unwrap(), &x, &y);
            }
        }
        if i < jobs {
            flight.push_back((
                Instant::now(),
                engine.submit(kernels::saxpy_job(k, 2.0, &x, &y)).unwrap(),
            ));
        }
    }
    lat.sort();
    (jobs as f64 / start.elapsed().as_secs_f64(), lat)
}

fn pct(v: &[Duration], p: usize) -> f64 {
    v[(v.len() * p).div_ceil(100).clamp(1, v.len()) - 1].as_secs_f64() * 1e3
}

fn main() {
    let server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
    println!("| lavapipe, 4,096-element SAXPY | jobs/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    let local = engine(wgpu::Backends::VULKAN);
    let k = local.kernel(kernels::saxpy()).unwrap();
    in_process(&local, &k, 200, 64, true); // warm-up
    let (ips, ilat) = in_process(&local, &k, 2000, 64, true);
    println!(
        "| in-process engine, 64 outstanding | {ips:.0} | {:.2} | {:.2} |",
        pct(&ilat, 50),
        pct(&ilat, 99)
    );
    drop(local);
    let mut memory = Queue::new(server.url());
    (memory.stream, memory.subject, memory.in_memory) = ("MEM".into(), "mem.jobs".into(), true);
    {
        let w = worker(wgpu::Backends::VULKAN, &memory);
        let client = Client::connect(memory.clone()).unwrap();
        through_nats(&client, 200, 64);
        let (mps, mlat) = through_nats(&client, 2000, 64);
        println!(
            "| through NATS (stream in memory), one worker, 64 outstanding | {mps:.0} | {:.2} | {:.2} |",
            pct(&mlat, 50),
            pct(&mlat, 99)
        );
        drop((w, client));
    }
    let q = Queue::new(server.url());
    let w = worker(wgpu::Backends::VULKAN, &q);
    let client = Client::connect(q.clone()).unwrap();
    through_nats(&client, 200, 64);
    let (nps, nlat) = through_nats(&client, 2000, 64);
    println!(
        "| through NATS (stream on disk, the default), one worker, 64 outstanding | {nps:.0} | {:.2} | {:.2} |",
        pct(&nlat, 50),
        pct(&nlat, 99)
    );
    println!("\nThroughput through NATS / in-process: {:.2}x", nps / ips);
    let (_, idle_nats) = through_nats(&client, 200, 1);
    drop(w);
    let local = engine(wgpu::Backends::VULKAN);
    let k = local.kernel(kernels::saxpy()).unwrap();
    let (_, idle_local) = in_process(&local, &k, 200, 1, true);
    let mut rtt: Vec<Duration> = (0..200).map(|_| client.round_trip().unwrap()).collect();
    rtt.sort();
    println!(
        "Idle round trip (one job at a time, 200 jobs): p50 {:.2} ms through NATS, {:.2} ms in-process; the server's loopback round trip p50 {:.3} ms",
        pct(&idle_nats, 50),
        pct(&idle_local, 50),
        pct(&rtt, 50)
    );
    drop(local);
    noop_section(&server);
}

/// Host cost per job through a worker on the noop backend, bytes on the wire, and two
/// workers against one.
fn noop_section(server: &NatsServer) {
    let (x, y) = data();
    let job_bytes = remote_job(&x, &y);
    let encoded = wgpu_batch::remote::wire::WireResult::Ok(vec![(2, vec![0; N * 4])])
        .encode()
        .len();
    let _ = job_bytes;
    let mut q = Queue::new(server.url());
    q.stream = "NOOP".into();
    q.subject = "noop.jobs".into();
    let local = engine(wgpu::Backends::NOOP);
    let k = local.kernel(kernels::saxpy()).unwrap();
    in_process(&local, &k, 500, 64, false);
    let (ips, _) = in_process(&local, &k, 4000, 64, false);
    drop(local);
    let client = Client::connect(q.clone()).unwrap();
    let one = worker(wgpu::Backends::NOOP, &q);
    noop_through(&client, 500);
    let one_rate = noop_through(&client, 4000);
    let two = worker(wgpu::Backends::NOOP, &q);
    noop_through(&client, 500);
    let two_rate = noop_through(&client, 4000);
    drop((one, two));
    println!(
        "\nNoop backend (host cost alone): in-process {:.1} µs/job; through NATS with one worker {:.1} µs/job ({:.2}x the in-process rate); two workers {:.2}x one",
        1e6 / ips,
        1e6 / one_rate,
        one_rate / ips,
        two_rate / one_rate
    );
    let wire_job = 4 + 2 + 2 + 8 + 12 + 2 + 5 + 2 + (4 + 1 + 8 + 4) + 2 * (4 + 1 + 8 + N * 4);
    println!(
        "Bytes on the wire per job: {wire_job} job + {encoded} result (payloads; NATS headers add about 150 each way), for {} bytes of input and {} of output",
        2 * N * 4 + 4,
        N * 4
    );
}

/// Jobs/s through NATS with 64 outstanding, results unchecked (the noop backend runs nothing).
fn noop_through(client: &Client, jobs: usize) -> f64 {
    let (x, y) = data();
    let mut flight = VecDeque::new();
    let start = Instant::now();
    for i in 0..jobs + 64 {
        if flight.len() == 64 || i >= jobs {
            let Some(h): Option<wgpu_batch::remote::RemoteHandle> = flight.pop_front() else {
                break;
            };
            h.wait_timeout(WAIT).unwrap();
        }
        if i < jobs {
            flight.push_back(client.submit(remote_job(&x, &y)).unwrap());
        }
    }
    jobs as f64 / start.elapsed().as_secs_f64()
}
