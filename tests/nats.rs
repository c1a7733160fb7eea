//! Many hosts, one queue (feature `nats`): clients and workers on a real `nats-server` with
//! JetStream (started per test on a free port; `apt-get install nats-server`), workers in
//! this process and as separate `wgpu-batch worker` processes. Every result is checked
//! against the CPU and every wait is bounded.
#![cfg(all(feature = "nats", feature = "cli"))]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use wgpu_batch::remote::{
    Client, NatsServer, Queue, RemoteHandle, RemoteJob, Worker, WorkerOptions, wire,
};
use wgpu_batch::{Engine, Error, Kernel, KernelSource};

const WAIT: Duration = Duration::from_secs(60);

fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn queue(server: &NatsServer) -> Queue {
    let mut q = Queue::new(server.url());
    q.ack_wait = Duration::from_secs(2); // a dead worker's jobs come back quickly
    q
}

/// The crate's `shaders/` directory: the kernels the workers serve by name.
fn shaders() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

fn kernels(engine: &Engine) -> HashMap<String, Kernel> {
    ["saxpy", "add", "scale"]
        .into_iter()
        .map(|name| {
            let src = std::fs::read_to_string(shaders().join(format!("{name}.wgsl"))).unwrap();
            (
                name.to_owned(),
                engine.kernel(KernelSource::wgsl(name, src)).unwrap(),
            )
        })
        .collect()
}

fn worker(q: &Queue) -> Worker {
    let engine = common::engine();
    let kernels = kernels(&engine);
    Worker::start(engine, kernels, q.clone(), WorkerOptions::default()).unwrap()
}

/// A `wgpu-batch worker` process, killed when dropped (a failing test leaves none behind).
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker_process(q: &Queue) -> Proc {
    worker_process_with(q, &shaders(), &[])
}

/// A worker process serving the kernels in `kernels`, with `extra` arguments.
fn worker_process_with(q: &Queue, kernels: &std::path::Path, extra: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_wgpu-batch"))
        .args([
            "worker",
            "--nats",
            &q.url,
            "--backend",
            "vulkan",
            "--ack-wait",
            "2",
        ])
        .args(extra)
        .arg("--kernels")
        .arg(kernels)
        .spawn()
        .expect("start a worker process");
    Proc(child)
}

/// Job `i` of a mix of kernels and sizes, and the result it must give (binding, values).
fn job(i: usize) -> (RemoteJob, u32, Vec<f32>) {
    let n = [1, 64, 1000, 4096][i % 4] + i % 7;
    let x: Vec<f32> = (0..n).map(|k| (k * 3 + i) as f32 % 97.0).collect();
    let y: Vec<f32> = (0..n).map(|k| (k + 2 * i) as f32 % 89.0).collect();
    let groups = n.div_ceil(64) as u32;
    match i % 3 {
        0 => {
            let a = (i % 5) as f32;
            let want = x.iter().zip(&y).map(|(x, y)| a * x + y).collect();
            let job = RemoteJob::new("saxpy")
                .uniform(0, &a)
                .input(1, &x)
                .inout(2, &y);
            (job.workgroups(groups, 1, 1), 2, want)
        }
        1 => {
            let want = x.iter().zip(&y).map(|(a, b)| a + b).collect();
            let job = RemoteJob::new("add")
                .input(0, &x)
                .input(1, &y)
                .output::<f32>(2, n);
            (job.workgroups(groups, 1, 1), 2, want)
        }
        _ => {
            let s = 0.5f32;
            let want = x.iter().map(|v| v * s).collect();
            let job = RemoteJob::new("scale").uniform(0, &s).inout(1, &x);
            (job.workgroups(groups, 1, 1), 1, want)
        }
    }
}

/// Submits `n` jobs and checks every result; the client's count of duplicate results.
fn run_jobs(client: &Client, n: usize, during: impl FnOnce(usize)) {
    let mut during = Some(during);
    let handles: Vec<(RemoteHandle, u32, Vec<f32>)> = (0..n)
        .map(|i| {
            if i == n / 3 {
                (during.take().unwrap())(i);
            }
            let (job, binding, want) = job(i);
            (client.submit(job).unwrap(), binding, want)
        })
        .collect();
    for (i, (h, binding, want)) in handles.into_iter().enumerate() {
        let out = h
            .wait_timeout(WAIT)
            .unwrap_or_else(|e| panic!("job {i}: {e}"));
        assert_eq!(out.read::<f32>(binding).unwrap(), want, "job {i}");
    }
}

#[test]
fn a_client_and_an_in_process_worker_run_mixed_jobs() {
    let server = server();
    let q = queue(&server);
    let w = worker(&q);
    let client = Client::connect(q.clone()).unwrap();
    run_jobs(&client, 300, |_| {});
    assert_eq!(client.duplicates(), 0);
    let stats = w.drain().unwrap();
    assert_eq!((stats.ok, stats.failed, stats.dead), (300, 0, 0));
}

#[test]
fn two_worker_processes_serve_2000_jobs() {
    let server = server();
    let q = queue(&server);
    let client = Client::connect(q.clone()).unwrap();
    let mut workers = [worker_process(&q), worker_process(&q)];
    run_jobs(&client, 2000, |_| {});
    assert_eq!(client.duplicates(), 0);
    for w in &mut workers {
        terminate(w);
    }
}

#[test]
fn a_worker_killed_mid_run_loses_nothing_and_each_result_arrives_once() {
    let server = server();
    let q = queue(&server);
    let client = Client::connect(q.clone()).unwrap();
    let mut victim = worker_process(&q);
    let mut other = worker_process(&q);
    std::thread::sleep(Duration::from_millis(500)); // both are fetching
    run_jobs(&client, 1500, |_| {
        victim.kill().unwrap(); // SIGKILL: no drain, jobs held unacknowledged
    });
    let _ = victim.wait();
    eprintln!("duplicates after the kill: {}", client.duplicates());
    terminate(&mut other);
}

#[test]
fn a_worker_told_to_stop_drains_and_runs_nothing_twice() {
    let server = server();
    let q = queue(&server);
    let client = Client::connect(q.clone()).unwrap();
    let mut drained = worker_process(&q);
    let mut other = worker_process(&q);
    std::thread::sleep(Duration::from_millis(500));
    let mut status = None;
    run_jobs(&client, 1500, |_| {
        status = Some(terminate_async(&drained));
    });
    let code = drained.wait().unwrap();
    assert!(
        code.success(),
        "the drained worker exits 0: {code:?} ({status:?})"
    );
    assert_eq!(
        client.duplicates(),
        0,
        "a drained worker acknowledges what it ran"
    );
    terminate(&mut other);
}

#[test]
fn a_server_restart_mid_run_loses_no_stored_job() {
    let mut server = server();
    let q = queue(&server);
    let mut w = Some(worker_process(&q));
    let client = Client::connect(q.clone()).unwrap();
    let mut handles = Vec::new();
    for i in 0..600 {
        if i == 300 {
            server.restart().unwrap();
        }
        let (job, binding, want) = job(i);
        // A submit while the server is down fails; the client retries it.
        let start = Instant::now();
        let h = loop {
            match client.submit(job.clone()) {
                Ok(h) => break h,
                Err(e) => {
                    assert!(start.elapsed() < WAIT, "submit kept failing: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        handles.push((h, binding, want));
    }
    // A job the server did not store while it was down resolves with a NATS failure: the
    // client submits it again. Every stored job's result arrives.
    // (The client itself publishes every unanswered job again once it has reconnected, as a
    // result published during the outage is lost; a result still missing after 20 s counts
    // as lost and the job is submitted again, at most 3 times in all.)
    let (mut resubmitted, mut lost) = (0, 0);
    for (i, (mut h, binding, want)) in handles.into_iter().enumerate() {
        let out = loop {
            match h.wait_timeout(Duration::from_secs(20)) {
                Err(Error::Remote { code, .. }) if code == wgpu_batch::remote::NATS_FAILURE => {
                    resubmitted += 1;
                    h = client.submit(job(i).0).unwrap();
                }
                Err(Error::Timeout) if lost < 3 => {
                    lost += 1;
                    h = client.submit(job(i).0).unwrap();
                }
                other => break other.unwrap_or_else(|e| panic!("job {i}: {e}")),
            }
        };
        assert_eq!(out.read::<f32>(binding).unwrap(), want, "job {i}");
    }
    eprintln!("{resubmitted} jobs not stored submitted again; {lost} results lost");
    terminate(w.as_mut().unwrap());
}

#[test]
fn bad_input_gets_an_error_result_and_the_worker_serves_on() {
    let server = server();
    let q = queue(&server);
    let w = worker(&q);
    let client = Client::connect(q.clone()).unwrap();
    let code = |h: RemoteHandle| match h.wait_timeout(WAIT) {
        Err(Error::Remote { code, .. }) => code,
        other => panic!("want a remote error, got {other:?}"),
    };
    // Malformed bytes, a kernel the worker lacks, bindings that do not match, inline WGSL.
    assert_eq!(
        code(client.submit_encoded(b"hello".to_vec()).unwrap()),
        wire::MALFORMED
    );
    assert_eq!(
        code(client.submit(RemoteJob::new("nope")).unwrap()),
        wire::UNKNOWN_KERNEL
    );
    let wrong = RemoteJob::new("saxpy")
        .input(0, &[1.0f32; 4])
        .workgroups(1, 1, 1);
    assert_eq!(
        code(client.submit(wrong).unwrap()),
        4,
        "Error::Binding's code"
    );
    let inline = RemoteJob::new(format!("wgsl:{}", common::INC));
    assert_eq!(code(client.submit(inline).unwrap()), wire::INLINE_REFUSED);
    // Over the server's payload limit (1 MiB by default): refused before it is sent.
    let big = RemoteJob::new("scale")
        .uniform(0, &1.0f32)
        .inout(1, &vec![0f32; 300_000]);
    assert!(matches!(client.submit(big), Err(Error::Limit { .. })));
    // And the worker still serves.
    run_jobs(&client, 30, |_| {});
    let stats = w.drain().unwrap();
    assert_eq!((stats.ok, stats.failed), (30, 4));
}

#[test]
fn a_job_whose_deadline_passes_in_the_queue_never_runs() {
    let server = server();
    let q = queue(&server);
    let client = Client::connect(q.clone()).unwrap();
    let (job, _, _) = job(0);
    let late = client
        .submit(job.timeout(Duration::from_millis(1)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let w = worker(&q); // no worker until the deadline has passed
    assert_eq!(late.wait_timeout(WAIT).unwrap_err(), Error::DeadlineExpired);
    let stats = w.drain().unwrap();
    assert_eq!((stats.ok, stats.failed), (0, 1));
}

/// A kernel that runs for seconds on lavapipe: a job a worker "dies on" when killed meanwhile.
const SPIN: &str = "
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = f32(id.x);
    for (var k = 0u; k < 60000u; k++) { acc = acc * 0.999 + 1.0; }
    if id.x < arrayLength(&out) { out[id.x] = acc; }
}";

#[test]
fn a_job_that_keeps_killing_workers_goes_to_the_dead_letter_subject() {
    let server = server();
    let mut q = queue(&server);
    q.max_deliver = 3;
    let dir = std::env::temp_dir().join(format!("wgpu-batch-spin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spin.wgsl"), SPIN).unwrap();
    let client = Client::connect(q.clone()).unwrap();
    let spin = RemoteJob::new("spin")
        .output::<f32>(0, 64)
        .workgroups(65_535, 1, 1);
    let h = client.submit(spin).unwrap();
    // Two workers die while running it, so it is delivered a third time ...
    for _ in 0..2 {
        let mut victim = worker_process_with(&q, &dir, &["--max-deliver", "3"]);
        // It starts (an engine on lavapipe: about a second), fetches the job and runs it.
        std::thread::sleep(Duration::from_millis(4000));
        victim.kill().unwrap();
        let _ = victim.wait();
    }
    // ... where it is not run but goes to the dead-letter subject, with an error result.
    let engine = common::engine();
    let mut kernels = kernels(&engine);
    let k = engine.kernel(KernelSource::wgsl("spin", SPIN)).unwrap();
    kernels.insert("spin".into(), k);
    let w = Worker::start(engine, kernels, q.clone(), WorkerOptions::default()).unwrap();
    match h.wait_timeout(WAIT) {
        Err(Error::Remote { code, .. }) => assert_eq!(code, wire::DEAD_LETTER),
        other => panic!("want a dead-letter error, got {:?}", other.map(|_| ())),
    }
    assert_eq!(w.drain().unwrap().dead, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM; what `kill` said.
fn terminate_async(child: &Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
}

/// SIGTERM, then waits (bounded) for a clean exit.
fn terminate(child: &mut Child) {
    terminate_async(child);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "worker exit: {status:?}");
            return;
        }
        assert!(start.elapsed() < WAIT, "the worker did not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_python_client_example_submits_a_job_in_the_wire_format() {
    let server = server();
    let q = queue(&server);
    let w = worker(&q);
    Client::connect(q.clone()).unwrap(); // creates the stream the example publishes to
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nats_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(server.url())
        .output()
        .expect("python3 (with `pip install nats-py`)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed (needs `pip install nats-py`):\n{text}"
    );
    assert!(text.contains("all right"), "{text}");
    eprintln!("{text}");
    assert_eq!(w.drain().unwrap().ok, 1);
}

#[test]
fn a_worker_whose_consumer_vanishes_subscribes_again_and_serves_on() {
    let server = server();
    let q = queue(&server);
    let w = worker(&q);
    let client = Client::connect(q.clone()).unwrap();
    let check = |i: usize| {
        let (job, binding, want) = job(i);
        let out = client.submit(job).unwrap().wait_timeout(WAIT).unwrap();
        assert_eq!(out.read::<f32>(binding).unwrap(), want, "job {i}");
    };
    check(0);
    // The server loses the shared consumer (as when it restarts before storing it): the
    // worker's job stream ends, and the worker must make the consumer again, not sit idle.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let nats = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(nats);
        let stream = js.get_stream(&q.stream).await.unwrap();
        assert!(stream.delete_consumer(&q.consumer).await.unwrap().success);
    });
    for i in 1..20 {
        check(i);
    }
    assert_eq!(w.drain().unwrap().ok, 20);
}
