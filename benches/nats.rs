//! Jobs through NATS JetStream (feature `nats`) against the same jobs on an in-process engine:
//! throughput and latency on lavapipe (4,096-element SAXPY), the idle round trip, the
//! worker's host cost per job and the bytes on the wire (noop backend: host cost alone), and
//! two workers against one on this machine. A real `nats-server` is started on a free port.
//!
//! `cargo bench --features nats --bench nats` (about a minute; `NATS_ONLY=noop` or
//! `NATS_ONLY=idle` runs one part). Every result is checked.

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

/// Jobs/s and sorted latencies of `jobs` jobs with `window` outstanding: `submit` starts one
/// and returns its handle, `finish` waits for it and checks it.
fn pipelined<H>(
    jobs: usize,
    window: usize,
    mut submit: impl FnMut() -> H,
    mut finish: impl FnMut(H),
) -> (f64, Vec<Duration>) {
    let mut flight: VecDeque<(Instant, H)> = VecDeque::new();
    let mut lat = Vec::with_capacity(jobs);
    let start = Instant::now();
    for i in 0..jobs + window {
        if flight.len() == window || i >= jobs {
            let Some((t, h)) = flight.pop_front() else {
                break;
            };
            finish(h);
            lat.push(t.elapsed());
        }
        if i < jobs {
            flight.push_back((Instant::now(), submit()));
        }
    }
    lat.sort();
    (jobs as f64 / start.elapsed().as_secs_f64(), lat)
}

/// Through NATS; `checked`: compare results (not on the noop backend, which runs nothing).
fn through_nats(
    client: &Client,
    jobs: usize,
    window: usize,
    checked: bool,
) -> (f64, Vec<Duration>) {
    let (x, y) = data();
    pipelined(
        jobs,
        window,
        || client.submit(remote_job(&x, &y)).unwrap(),
        |h| {
            let out = h.wait_timeout(WAIT).unwrap();
            if checked {
                check(&out.read::<f32>(2).unwrap(), &x, &y);
            }
        },
    )
}

/// On an in-process engine; `checked` as for [`through_nats`].
fn in_process(
    engine: &Engine,
    k: &Kernel,
    jobs: usize,
    window: usize,
    checked: bool,
) -> (f64, Vec<Duration>) {
    let (x, y) = data();
    pipelined(
        jobs,
        window,
        || engine.submit(kernels::saxpy_job(k, 2.0, &x, &y)).unwrap(),
        |h| {
            let out = h.wait_timeout(WAIT).unwrap();
            if checked {
                check(&out.read::<f32>(2).unwrap(), &x, &y);
            }
        },
    )
}

fn pct(v: &[Duration], p: usize) -> f64 {
    v[(v.len() * p).div_ceil(100).clamp(1, v.len()) - 1].as_secs_f64() * 1e3
}

fn main() {
    let server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
    match std::env::var("NATS_ONLY").as_deref() {
        Ok("noop") => noop_section(&server),
        Ok("idle") => {
            let q = Queue::new(server.url()); // the stream on disk, as in the full run
            let _w = worker(wgpu::Backends::VULKAN, &q);
            idle(&server, &Client::connect(q).unwrap());
        }
        _ => {
            lavapipe_section(&server);
            noop_section(&server);
        }
    }
}

fn row(what: &str, rate: f64, lat: &[Duration]) {
    println!(
        "| {what} | {rate:.0} | {:.2} | {:.2} |",
        pct(lat, 50),
        pct(lat, 99)
    );
}

/// Throughput and latency with 64 outstanding, and the idle round trip, on lavapipe.
fn lavapipe_section(server: &NatsServer) {
    println!("| lavapipe, 4,096-element SAXPY, 64 outstanding | jobs/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    let local = engine(wgpu::Backends::VULKAN);
    let k = local.kernel(kernels::saxpy()).unwrap();
    in_process(&local, &k, 200, 64, true); // warm-up
    let (ips, ilat) = in_process(&local, &k, 2000, 64, true);
    row("in-process engine", ips, &ilat);
    drop(local);
    let mut rates = Vec::new();
    for in_memory in [true, false] {
        let mut q = Queue::new(server.url());
        q.in_memory = in_memory;
        let storage = if in_memory {
            "in memory"
        } else {
            "on disk (the default)"
        };
        q.stream = format!("SAXPY{}", u8::from(in_memory));
        q.subject = format!("saxpy{}.jobs", u8::from(in_memory));
        let w = worker(wgpu::Backends::VULKAN, &q);
        let client = Client::connect(q.clone()).unwrap();
        through_nats(&client, 200, 64, true);
        let (rate, lat) = through_nats(&client, 2000, 64, true);
        row(
            &format!("through NATS, stream {storage}, one worker"),
            rate,
            &lat,
        );
        let (plain, plat) = plain_nats(&server.url(), in_memory, 2000, 64);
        let plain_rate = 1e6 / plain;
        row(
            &format!("plain NATS, the same messages, no engine, stream {storage}"),
            plain_rate,
            &plat,
        );
        rates.push((storage, rate / ips, plain_rate / ips));
        if !in_memory {
            idle(server, &client);
        }
        drop((w, client));
    }
    for (storage, ours, plain) in rates {
        println!(
            "Stream {storage}: through NATS {ours:.2}x the in-process rate; plain NATS alone {plain:.2}x"
        );
    }
}

/// The idle round trip (one job at a time) through NATS, in-process, plain NATS, and the
/// server's own round trip.
fn idle(server: &NatsServer, client: &Client) {
    through_nats(client, 50, 1, true);
    let (_, ours) = through_nats(client, 300, 1, true);
    let local = engine(wgpu::Backends::VULKAN);
    let k = local.kernel(kernels::saxpy()).unwrap();
    in_process(&local, &k, 50, 1, true);
    let (_, inproc) = in_process(&local, &k, 300, 1, true);
    let (_, plain) = plain_nats(&server.url(), false, 300, 1);
    let mut rtt: Vec<Duration> = (0..300).map(|_| client.round_trip().unwrap()).collect();
    rtt.sort();
    let target = 2.0 * pct(&inproc, 50) + pct(&rtt, 50);
    println!(
        "\nIdle round trip p50 (300 jobs one at a time, stream on disk): {:.2} ms through NATS; {:.2} ms in-process; {:.2} ms plain NATS (the same messages, no engine); the server's own round trip {:.3} ms. Target 2 x in-process + round trip = {target:.2} ms: {}\n",
        pct(&ours, 50),
        pct(&inproc, 50),
        pct(&plain, 50),
        pct(&rtt, 50),
        if pct(&ours, 50) <= target {
            "met"
        } else {
            "not met"
        }
    );
}

/// Host cost per job through a worker on the noop backend against plain NATS, bytes on the
/// wire, and two workers against one.
fn noop_section(server: &NatsServer) {
    let encoded = wgpu_batch::remote::wire::WireResult::Ok(vec![(2, vec![0; N * 4])])
        .encode()
        .len();
    let local = engine(wgpu::Backends::NOOP);
    let k = local.kernel(kernels::saxpy()).unwrap();
    in_process(&local, &k, 500, 64, false);
    let (ips, _) = in_process(&local, &k, 4000, 64, false);
    drop(local);
    println!(
        "\nNoop backend (host cost alone), 64 outstanding: in-process {:.1} µs/job",
        1e6 / ips
    );
    for in_memory in [true, false] {
        let mut q = Queue::new(server.url());
        q.in_memory = in_memory;
        q.stream = format!("NOOP{}", u8::from(in_memory));
        q.subject = format!("noop{}.jobs", u8::from(in_memory));
        let client = Client::connect(q.clone()).unwrap();
        let one = worker(wgpu::Backends::NOOP, &q);
        through_nats(&client, 500, 64, false);
        let (one_rate, _) = through_nats(&client, 4000, 64, false);
        let (plain, _) = plain_nats(&server.url(), in_memory, 4000, 64);
        let two = worker(wgpu::Backends::NOOP, &q);
        through_nats(&client, 500, 64, false);
        let (two_rate, _) = through_nats(&client, 4000, 64, false);
        drop((one, two));
        let storage = if in_memory { "in memory" } else { "on disk" };
        println!(
            "- stream {storage}: through NATS, one worker {:.1} µs/job; plain NATS (the same messages, no engine) {plain:.1} µs/job, so the worker and client add {:.1} µs/job; two workers {:.2}x one",
            1e6 / one_rate,
            1e6 / one_rate - plain,
            two_rate / one_rate
        );
    }
    let wire_job = 4 + 2 + 2 + 8 + 12 + 2 + 5 + 2 + (4 + 1 + 8 + 4) + 2 * (4 + 1 + 8 + N * 4);
    println!(
        "Bytes on the wire per job: {wire_job} job + {encoded} result (payloads; NATS headers add about 150 each way), for {} bytes of input and {} of output",
        2 * N * 4 + 4,
        N * 4
    );
}

/// The same messages through plain async-nats, with no engine and no encoding: a job's
/// 32,848 bytes published to a work-queue stream (the stream's acknowledgement awaited), pulled
/// by a consumer 64 at a time, answered with 16,406 bytes on the job's reply subject, then
/// acknowledged. Microseconds per job with `window` outstanding, and the sorted latencies (exact
/// with one outstanding): what NATS alone costs here.
fn plain_nats(url: &str, in_memory: bool, jobs: usize, window: usize) -> (f64, Vec<Duration>) {
    use async_nats::jetstream::{self, consumer, stream};
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "PLAIN{}",
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let nc = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(nc.clone());
        let storage = if in_memory {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        };
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.jobs")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage,
            ..Default::default()
        };
        let pulled: consumer::PullConsumer = (js.create_stream(config).await.unwrap())
            .create_consumer(consumer::pull::Config {
                durable_name: Some("workers".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: -1,
                ..Default::default()
            })
            .await
            .unwrap();
        let worker = async_nats::connect(url).await.unwrap();
        let serving = tokio::spawn(async move {
            let mut messages = pulled
                .stream()
                .max_messages_per_batch(64)
                .messages()
                .await
                .unwrap();
            while let Some(Ok(m)) = messages.next().await {
                let worker = worker.clone();
                tokio::spawn(async move {
                    let reply = m
                        .message
                        .headers
                        .as_ref()
                        .unwrap()
                        .get("R")
                        .unwrap()
                        .to_string();
                    worker
                        .publish(reply, vec![0u8; 16_406].into())
                        .await
                        .unwrap();
                    m.ack().await.unwrap();
                });
            }
        });
        let inbox = nc.new_inbox();
        let mut results = nc.subscribe(inbox.clone()).await.unwrap();
        let body = bytes::Bytes::from(vec![1u8; 32_848]);
        let start = Instant::now();
        let mut sent = VecDeque::new();
        let mut lat = Vec::with_capacity(jobs);
        for i in 0..jobs + window {
            if sent.len() == window || i >= jobs {
                let Some(t): Option<Instant> = sent.pop_front() else {
                    break;
                };
                results.next().await.unwrap();
                lat.push(t.elapsed()); // in order only with one outstanding
            }
            if i >= jobs {
                continue;
            }
            sent.push_back(Instant::now());
            let mut h = async_nats::HeaderMap::new();
            h.insert("R", inbox.as_str());
            h.insert("Nats-Msg-Id", i.to_string().as_str());
            let stored = js
                .publish_with_headers(format!("{name}.jobs"), h, body.clone())
                .await
                .unwrap();
            tokio::spawn(async move { stored.await.unwrap() });
        }
        let per_job = start.elapsed().as_secs_f64() * 1e6 / jobs as f64;
        serving.abort();
        lat.sort();
        (per_job, lat)
    })
}
