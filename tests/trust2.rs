//! Trust, round 2: one test per defect of the second independent review, each reproducing its
//! scenario (a spurious `QueueFull`, an abort, a hang, a wrong error kind, fusion refused for
//! a false reason), plus the misleading messages it listed.

mod common;

use std::time::{Duration, Instant};

use common::{Spinner, WAIT};
use wgpu_batch::{Balance, Engine, Error, Job, Kernel, KernelSource, kernels, wgpu};

/// Reads `src` into `dst`, both read-only and read-write at once when bound to one buffer.
const READ_INTO: &str = "
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&dst) && id.x < arrayLength(&src) { dst[id.x] = src[id.x] + 1u; }
}";

/// One adapter (the first the tests' backends give), `devices` devices on it.
fn devices(n: usize) -> wgpu_batch::EngineBuilder {
    let name = common::engine().devices()[0].adapter.clone();
    common::builder().adapter_name(name).devices_per_adapter(n)
}

// Defect 1: try_submit refused with QueueFull while another eligible device had room.

#[test]
fn try_submit_is_full_only_when_every_eligible_device_is() {
    let mut groups = None;
    for balance in [
        Balance::RoundRobin,
        Balance::Weighted,
        Balance::LeastOutstanding,
    ] {
        // The long job must outlast filling device 0's queue, which takes longer on a loaded
        // machine: when it ended too soon to test anything, run again with it twice as long.
        let mut while_full = 0;
        for _ in 0..3 {
            let g;
            (while_full, g) = full_device_avoided(balance, groups);
            groups = Some(g);
            if while_full >= 2 {
                break;
            }
            groups = Some((g.0, (g.1 * 2).min(65_535)));
        }
        assert!(
            while_full >= 2,
            "{balance:?}: the long job ended too soon for the test, three times"
        );
    }
}

/// Keeps device 0 busy with a long job (`groups`, or calibrated to 4 s) and its queue full,
/// then checks that jobs go to device 1 without refusal; how many did while device 0 was
/// still busy, and the long job's groups.
fn full_device_avoided(balance: Balance, groups: Option<(u32, u32)>) -> (usize, (u32, u32)) {
    let engine = common::build(devices(2).queue_capacity(8).balance(balance));
    let spin = match groups {
        None => long_spinner(&engine, Duration::from_secs(4)),
        Some(g) => Spinner {
            groups: g,
            ..Spinner::new(&engine, 0, Duration::from_millis(1))
        },
    };
    let inc = engine
        .kernel(KernelSource::wgsl("inc", common::INC))
        .unwrap();
    let job = || {
        Job::new(&inc)
            .input(0, &[1u32; 4])
            .output::<u32>(1, 4)
            .workgroups(1, 1, 1)
    };
    let busy = engine.submit(spin.job().on_device(0)).unwrap();
    // Fill device 0's queue while it runs the long job, until it stays full (its
    // executor moves queued jobs onto its board for a while).
    let mut held = Vec::new();
    let mut refused = 0;
    while refused < 3 && held.len() < 10_000 {
        match engine.try_submit(job().on_device(0)) {
            Ok(h) => (held.push(h), refused = 0).1,
            Err(r) => {
                assert_eq!(r.error, Error::QueueFull);
                refused += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // Device 1 always has room (each job is waited for): no job is refused, and while
    // device 0 is still full (its long job not done), none goes there, blocking or not.
    let mut while_full = 0;
    let mut done = false;
    for i in 0..8 {
        let handle = if i % 2 == 0 {
            engine
                .try_submit(job())
                .unwrap_or_else(|r| panic!("{balance:?}, job {i}: {} with device 1 free", r.error))
        } else {
            engine.submit(job()).unwrap()
        };
        done = done || busy.try_get().is_some();
        if !done {
            assert_eq!(
                handle.device(),
                1,
                "{balance:?}: job {i} went to the full device"
            );
            while_full += 1;
        }
        assert_eq!(
            handle.wait_timeout(WAIT).unwrap().read::<u32>(1).unwrap(),
            [2; 4]
        );
    }
    for h in held {
        h.cancel();
    }
    busy.cancel();
    (while_full, spin.groups)
}

/// A job that keeps device 0 busy for at least about `at_least` (measured, then scaled).
fn long_spinner(engine: &Engine, at_least: Duration) -> Spinner {
    let mut spin = Spinner::new(engine, 0, at_least);
    for _ in 0..8 {
        let started = Instant::now();
        engine.run(spin.job().on_device(0)).unwrap();
        let took = started.elapsed();
        if took >= at_least {
            break;
        }
        let scale = (at_least.as_secs_f64() / took.as_secs_f64()).clamp(1.5, 64.0);
        spin.groups.1 = ((spin.groups.1 as f64 * scale).ceil() as u32).min(65_535);
    }
    spin
}

// Defect 2: an adopted device destroyed by its application gave Error::Wgpu, and stayed in use.

#[test]
fn an_adopted_device_the_app_destroys_is_lost_not_a_wgpu_error() {
    let (adapter, device, queue) = common::app_device();
    let engine = Engine::builder()
        .with_device(&adapter, device.clone(), queue)
        .build()
        .unwrap();
    let k = engine.kernel(kernels::scale()).unwrap();
    let x = vec![1.0f32; 300];
    engine.run(kernels::scale_job(&k, 2.0, &x)).unwrap();
    device.destroy();
    assert!(matches!(
        engine.upload(&[1u32; 4]),
        Err(Error::DeviceLost { .. })
    ));
    for (i, via_run) in [(0, true), (1, false), (2, true), (3, false)] {
        let result = if via_run {
            engine.run(kernels::scale_job(&k, 2.0, &x))
        } else {
            engine
                .submit(kernels::scale_job(&k, 2.0, &x))
                .and_then(|h| h.wait_timeout(WAIT))
        };
        assert!(
            matches!(result, Err(Error::DeviceLost { device: 0, .. })),
            "job {i}: {result:?}"
        );
    }
    assert!(matches!(
        engine.upload(&[1u32; 4]),
        Err(Error::DeviceLost { .. })
    ));
    engine.shutdown();
}

// Defect 3: @binding(4294967295) overflowed the fusion's job table number.

#[test]
fn a_binding_number_at_the_end_of_u32_is_refused_not_wrapped() {
    let src = "
        @group(0) @binding(4294967295) var<storage, read_write> x: array<u32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&x) { x[id.x] = 1u; }
        }";
    let kernel = Kernel::compile(KernelSource::wgsl("far", src)).unwrap();
    assert!(kernel.unfused_reason().is_some(), "it claims to fuse");
    match common::engine().kernel(KernelSource::wgsl("far", src)) {
        Err(Error::Limit {
            what, requested, ..
        }) => {
            assert_eq!((what, requested), ("binding number", u64::from(u32::MAX)));
        }
        other => panic!("{other:?}"),
    }
}

// Defect 4: a struct whose name ends in a digit was refused fusion for a layout it lacks.

#[test]
fn structs_named_with_a_final_digit_fuse() {
    let src = "
        struct P2 { scale: f32, bias: f32 }
        struct Light0 { a: vec4<f32>, b: f32 }
        @group(0) @binding(0) var<uniform> p: P2;
        @group(0) @binding(1) var<storage, read> l: Light0;
        @group(0) @binding(2) var<storage, read_write> y: array<f32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&y) { y[id.x] = y[id.x] * p.scale + p.bias + l.b; }
        }";
    let kernel = Kernel::compile(KernelSource::wgsl("p2", src)).unwrap();
    assert_eq!(kernel.unfused_reason(), None);
    // A real @size still refuses, for its real reason.
    let sized = src.replace("scale: f32,", "@size(8) scale: f32,");
    let kernel = Kernel::compile(KernelSource::wgsl("sized", sized)).unwrap();
    let reason = kernel.unfused_reason().unwrap();
    assert!(reason.contains("`P2`"), "{reason}");
}

// Defect 5: the common counter pattern was refused fusion with a naga-internal message.

#[test]
fn atomic_counters_and_compare_exchange_fuse() {
    let counter = "
        @group(0) @binding(0) var<storage, read> x: array<u32>;
        @group(0) @binding(1) var<storage, read_write> count: atomic<u32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&x) && x[id.x] > 5u { atomicAdd(&count, 1u); }
        }";
    let exchange = "
        @group(0) @binding(0) var<storage, read> x: array<u32>;
        @group(0) @binding(1) var<storage, read_write> best: atomic<u32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x >= arrayLength(&x) { return; }
            var old = atomicLoad(&best);
            loop {
                if x[id.x] <= old { break; }
                let r = atomicCompareExchangeWeak(&best, old, x[id.x]);
                if r.exchanged { break; }
                old = r.old_value;
            }
        }";
    for (name, src) in [("counter", counter), ("exchange", exchange)] {
        let k = Kernel::compile(KernelSource::wgsl(name, src)).unwrap();
        assert_eq!(k.unfused_reason(), None, "{name}");
    }
    // Fused with each other in one batch, every job counts its own elements.
    let engine = common::build(
        devices(1)
            .max_batch_jobs(8)
            .max_batch_delay(Duration::from_secs(30)),
    );
    let k = engine
        .kernel(KernelSource::wgsl("counter", counter))
        .unwrap();
    let handles: Vec<_> = (0..8u32)
        .map(|j| {
            let x: Vec<u32> = (0..100 + j * 37).map(|i| (i * 7 + j) % 11).collect();
            let want = x.iter().filter(|&&v| v > 5).count() as u32;
            let job = Job::new(&k)
                .input(0, &x)
                .output::<u32>(1, 1)
                .workgroups_for(x.len());
            (engine.submit(job).unwrap(), want)
        })
        .collect();
    for (h, want) in handles {
        assert_eq!(
            h.wait_timeout(WAIT).unwrap().read::<u32>(1).unwrap(),
            [want]
        );
    }
    assert!(
        engine.stats().devices[0].jobs_per_dispatch() > 1.0,
        "nothing fused"
    );
}

/// A valid kernel whose one expression has `terms` terms.
fn long_expression(terms: usize) -> String {
    let sum = vec!["x[id.x]"; terms].join(" + ");
    format!(
        "@group(0) @binding(0) var<storage, read_write> x: array<f32>;
         @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {{
             if id.x < arrayLength(&x) {{ x[id.x] = {sum}; }}
         }}"
    )
}

#[test]
fn long_expressions_fuse() {
    // 400 terms: the rewritten kernel used to nest past naga's parser limit of 200 levels.
    for terms in [400, 5_000] {
        let k = Kernel::compile(KernelSource::wgsl("long", long_expression(terms))).unwrap();
        assert_eq!(k.unfused_reason(), None, "{terms} terms");
    }
}

// Defect 6: a deep expression overflowed the stack inside naga and aborted the process.

#[test]
fn a_deep_expression_is_an_error_or_a_kernel_never_an_abort() {
    // On a 2 MiB thread, as a worker pool's thread might be.
    let engine = common::engine();
    let on_small_stack = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for terms in [5_000, 20_000, 200_000] {
                let src = long_expression(terms);
                match engine.kernel(KernelSource::wgsl("deep", src)) {
                    Ok(_) | Err(Error::Shader { .. }) => {}
                    Err(e) => panic!("{terms} terms: {e}"),
                }
            }
        })
        .unwrap();
    on_small_stack.join().unwrap();
}

// Defect 7: a named pipe in place of the pipeline cache file made build() block forever.

#[test]
fn a_named_pipe_in_the_cache_directory_does_not_hang_the_engine() {
    let dir = std::env::temp_dir().join(format!("wgpu-batch-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = common::build(common::builder().pipeline_cache_dir(&dir));
    engine.kernel(kernels::saxpy()).unwrap();
    engine.shutdown();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        !files.is_empty(),
        "no cache file was written (does the adapter cache?)"
    );
    for file in &files {
        std::fs::remove_file(file).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(file)
            .status()
            .unwrap();
        assert!(made.success());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    std::thread::spawn(move || {
        let engine = common::build(common::builder().pipeline_cache_dir(&d));
        let k = engine.kernel(kernels::saxpy()).unwrap();
        let out = engine
            .run(kernels::saxpy_job(&k, 2.0, &[1.0], &[1.0]))
            .map(|o| o.read::<f32>(2));
        engine.shutdown();
        let _ = tx.send(out.is_ok());
    });
    let done = rx.recv_timeout(Duration::from_secs(60));
    assert_eq!(done, Ok(true), "the engine hung on a named pipe");
    let _ = std::fs::remove_dir_all(&dir);
}

// Defect 8: one buffer bound read-only and read-write in one step was accepted at submit.

#[test]
fn one_buffer_read_and_written_in_one_step_is_a_binding_error_at_submit() {
    let engine = common::engine();
    let k = engine
        .kernel(KernelSource::wgsl("read_into", READ_INTO))
        .unwrap();
    let buf = engine.upload(&[1u32; 64]).unwrap();
    let both = Job::new(&k)
        .buffer(0, &buf)
        .buffer(1, &buf)
        .workgroups(1, 1, 1);
    let scratch = Job::new(&k)
        .scratch::<u32>(0, 7, 64)
        .scratch::<u32>(1, 7, 64)
        .workgroups(1, 1, 1);
    for job in [both, scratch] {
        match engine.submit(job) {
            Err(Error::Binding {
                binding, problem, ..
            }) => {
                assert_eq!(binding, 1);
                assert!(problem.contains("binding 0"), "{problem}");
            }
            Err(e) => panic!("{e}"),
            Ok(h) => panic!("accepted; it resolved {:?}", h.wait_timeout(WAIT).err()),
        }
    }
    // The same buffer in two steps, read in one and written in the other, is fine.
    let out = Job::new(&k)
        .buffer(0, &buf)
        .output::<u32>(1, 64)
        .workgroups(1, 1, 1);
    assert_eq!(engine.run(out).unwrap().read::<u32>(1).unwrap(), [2; 64]);
    assert_eq!(engine.stats().devices[0].failed, 0);
}

// The misleading messages.

#[test]
fn messages_name_what_the_user_did() {
    let engine = common::build(devices(2));
    let empty = engine.upload::<u32>(&[]).unwrap_err().to_string();
    assert!(!empty.contains("kernel `upload`"), "{empty}");
    assert!(empty.contains("empty"), "{empty}");

    let k = engine
        .kernel(KernelSource::wgsl("inc", common::INC))
        .unwrap();
    let job = Job::new(&k)
        .input(0, &[1u32])
        .output::<u32>(1, 1)
        .workgroups(1, 1, 1);
    let pinned = engine.submit(job.on_device(5)).unwrap_err().to_string();
    assert!(
        pinned.contains("device 5") && pinned.contains("2 devices"),
        "{pinned}"
    );

    let buf = engine.upload(&[1u32, 2, 3]).unwrap();
    let read = engine.read::<u64>(&buf).unwrap_err().to_string();
    assert!(!read.contains("wgpu-batch read"), "{read}");
    assert!(read.contains("12 bytes"), "{read}");
}

#[test]
fn an_adopted_device_without_compute_says_so() {
    let (adapter, _, _) = common::app_device();
    let limits = wgpu::Limits::downlevel_webgl2_defaults();
    assert_eq!(limits.max_compute_workgroups_per_dimension, 0);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap();
    let error = Engine::builder()
        .with_device(&adapter, device, queue)
        .build()
        .unwrap_err()
        .to_string();
    assert!(!error.contains("workgroup_size"), "{error}");
    assert!(error.contains("compute"), "{error}");
}
