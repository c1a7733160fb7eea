//! One test per defect of the trust review: each reproduces the defect's exact scenario and
//! asserts the guarantee the README makes. (The randomized model tests in `model.rs` and
//! `faults.rs` search for more; the watchdog has its own binary, `watchdog.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{Spinner, WAIT};
use wgpu_batch::{Engine, Error, Job, JobHandle, KernelSource, Priority, kernels};

const COPY: &str = "
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&dst) && id.x < arrayLength(&src) { dst[id.x] = src[id.x]; }
}";
const ACC: &str = "
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> acc: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&acc) && id.x < arrayLength(&x) { acc[id.x] += x[id.x]; }
}";
const SEVEN: &str = "
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&out) { out[id.x] = 7u; }
}";

/// One device; batches of exactly `jobs` jobs (held open until full).
fn batches_of(jobs: usize, shared: bool) -> Engine {
    let name = common::engine().devices()[0].adapter.clone();
    common::build(
        common::builder()
            .adapter_name(name)
            .shared_bind_groups(shared)
            .max_batch_jobs(jobs)
            .max_batch_delay(Duration::from_secs(30)),
    )
}

fn k(engine: &Engine, label: &str, src: &'static str) -> wgpu_batch::Kernel {
    engine.kernel(KernelSource::wgsl(label, src)).unwrap()
}

// Defect 1: shared bind groups were keyed without the buffers they point into.

#[test]
fn one_kernel_twice_in_a_job_binds_each_steps_own_scratch() {
    for shared in [true, false] {
        let engine = batches_of(1, shared);
        let (copy, inc) = (k(&engine, "copy", COPY), k(&engine, "inc", common::INC));
        let n = 100;
        let x: Vec<u32> = (0..n as u32).map(|i| i * 10).collect();
        let job = Job::new(&copy)
            .input(0, &x)
            .scratch::<u32>(1, 0, n)
            .workgroups_for(n)
            .then(&inc)
            .scratch::<u32>(0, 0, n)
            .scratch::<u32>(1, 1, n)
            .workgroups_for(n)
            .then(&inc)
            .scratch::<u32>(0, 1, n)
            .scratch::<u32>(1, 0, n)
            .workgroups_for(n)
            .then(&copy)
            .scratch::<u32>(0, 0, n)
            .output::<u32>(1, n)
            .workgroups_for(n);
        let out: Vec<u32> = engine.run(job).unwrap().read(1).unwrap();
        let want: Vec<u32> = x.iter().map(|v| v + 2).collect();
        assert_eq!(out, want, "shared_bind_groups({shared})");
    }
}

#[test]
fn a_jobs_zeroed_scratch_never_holds_another_jobs_data() {
    for shared in [true, false] {
        let engine = batches_of(2, shared);
        let (acc, copy) = (k(&engine, "acc", ACC), k(&engine, "copy", COPY));
        let n = 64;
        let job = |v: u32| {
            Job::new(&acc)
                .input(0, &vec![v; n])
                .scratch::<u32>(1, 0, n)
                .workgroups_for(n)
                .then(&copy)
                .scratch::<u32>(0, 0, n)
                .output::<u32>(1, n)
                .workgroups_for(n)
        };
        let (a, b) = (
            engine.submit(job(1000)).unwrap(),
            engine.submit(job(5)).unwrap(),
        );
        let a: Vec<u32> = a.wait_timeout(WAIT).unwrap().read(1).unwrap();
        let b: Vec<u32> = b.wait_timeout(WAIT).unwrap().read(1).unwrap();
        assert_eq!(engine.stats().devices[0].max_batch, 2, "one batch");
        assert_eq!((a[0], b[0]), (1000, 5), "shared_bind_groups({shared})");
        assert!(a.iter().all(|&v| v == 1000) && b.iter().all(|&v| v == 5));
    }
}

#[test]
fn a_later_step_never_reads_another_jobs_input() {
    for shared in [true, false] {
        let engine = batches_of(2, shared);
        let (copy, seven) = (k(&engine, "copy", COPY), k(&engine, "seven", SEVEN));
        let n = 64;
        let a = Job::new(&copy)
            .input(0, &vec![0xDEAD_BEEFu32; n])
            .output::<u32>(1, n)
            .workgroups_for(n);
        let b = Job::new(&seven)
            .scratch::<u32>(0, 0, n)
            .workgroups_for(n)
            .then(&copy)
            .scratch::<u32>(0, 0, n)
            .output::<u32>(1, n)
            .workgroups_for(n);
        let (a, b) = (engine.submit(a).unwrap(), engine.submit(b).unwrap());
        let a: Vec<u32> = a.wait_timeout(WAIT).unwrap().read(1).unwrap();
        let b: Vec<u32> = b.wait_timeout(WAIT).unwrap().read(1).unwrap();
        assert_eq!(engine.stats().devices[0].max_batch, 2, "one batch");
        assert!(a.iter().all(|&v| v == 0xDEAD_BEEF));
        assert!(
            b.iter().all(|&v| v == 7),
            "shared_bind_groups({shared}): {b:x?}"
        );
    }
}

// Defect 3: deadlines were answered only where batches form.

/// One device, one job per batch, kept busy by `n` jobs of about `each`.
fn busy_device(each: Duration, n: usize) -> (Engine, Vec<JobHandle>) {
    let name = common::engine().devices()[0].adapter.clone();
    let engine = common::build(common::builder().adapter_name(name).max_batch_jobs(1));
    let spin = Spinner::new(&engine, 0, each);
    let blockers = (0..n).map(|_| engine.submit(spin.job()).unwrap()).collect();
    (engine, blockers)
}

fn settle(handles: Vec<JobHandle>) {
    for h in handles {
        h.wait_timeout(WAIT).unwrap();
    }
}

/// How late after `deadline` a caller learned of it.
fn lateness(deadline: Instant) -> Duration {
    Instant::now().saturating_duration_since(deadline)
}

#[test]
fn a_waiting_caller_gets_the_deadline_error_at_the_deadline() {
    let (engine, blockers) = busy_device(Duration::from_millis(50), 20);
    let scale = engine.kernel(kernels::scale()).unwrap();
    let counter = engine.upload(&[1.0f32; 64]).unwrap();
    let doubling = || {
        Job::new(&scale)
            .uniform(0, &2.0f32)
            .buffer(1, &counter)
            .workgroups(1, 1, 1)
    };
    let budget = Duration::from_millis(100);
    // Blocking wait, wait_timeout and .await each learn at the deadline.
    let h = engine.submit(doubling().timeout(budget)).unwrap();
    let at = Instant::now() + budget;
    assert_eq!(h.wait().unwrap_err(), Error::DeadlineExpired);
    let late = [lateness(at), Duration::ZERO, Duration::ZERO];
    let h = engine.submit(doubling().timeout(budget)).unwrap();
    let at2 = Instant::now() + budget;
    assert_eq!(h.wait_timeout(WAIT).unwrap_err(), Error::DeadlineExpired);
    let late = [late[0], lateness(at2), late[2]];
    let h = engine.submit(doubling().timeout(budget)).unwrap();
    let at3 = Instant::now() + budget;
    assert_eq!(pollster::block_on(h).unwrap_err(), Error::DeadlineExpired);
    let late = [late[0], late[1], lateness(at3)];
    for (how, l) in ["wait", "wait_timeout", ".await"].iter().zip(late) {
        assert!(
            l < Duration::from_millis(50),
            "{how} learned {l:?} after the deadline"
        );
    }
    settle(blockers);
    // None of the three ran: the resident counter was never doubled.
    assert_eq!(engine.read::<f32>(&counter).unwrap(), vec![1.0; 64]);
}

#[test]
fn a_deadline_and_a_wait_that_gave_up_are_different_errors() {
    let (engine, blockers) = busy_device(Duration::from_millis(50), 10);
    let scale = engine.kernel(kernels::scale()).unwrap();
    let h = engine
        .submit(kernels::scale_job(&scale, 2.0, &[1.0; 64]).timeout(Duration::from_secs(60)))
        .unwrap();
    // Still queued behind the blockers: the wait gives up, the job does not.
    assert_eq!(
        h.wait_timeout(Duration::from_millis(10)).unwrap_err(),
        Error::Timeout
    );
    let expired = engine
        .submit(kernels::scale_job(&scale, 2.0, &[1.0; 64]).timeout(Duration::from_millis(20)))
        .unwrap();
    assert_eq!(
        expired.wait_timeout(WAIT).unwrap_err(),
        Error::DeadlineExpired
    );
    assert_eq!(
        h.wait_timeout(WAIT).unwrap().read::<f32>(1).unwrap()[0],
        2.0
    );
    settle(blockers);
}

// Defect 4: priority inversion once the backlog was older than the aging interval.

#[test]
fn a_new_high_job_is_served_before_a_low_backlog_that_has_not_aged_past_it() {
    // The default aging, a backlog of 1,000 Low jobs (about 1 ms each) older than it: the
    // High job goes before every Low job that has not waited two aging intervals. (Under the
    // old rule every job older than one interval went first, Low before High.)
    let name = common::engine().devices()[0].adapter.clone();
    let engine = common::build(common::builder().adapter_name(name).max_batch_jobs(1));
    let spin = Spinner::new(&engine, 0, Duration::from_millis(1));
    let (low, at): (Vec<JobHandle>, Vec<Instant>) = (0..1000)
        .map(|_| {
            let at = Instant::now();
            (
                engine.submit(spin.job().priority(Priority::Low)).unwrap(),
                at,
            )
        })
        .unzip();
    std::thread::sleep(wgpu_batch::DEFAULT_PRIORITY_AGING + Duration::from_millis(50));
    // Counted by the device, not by scanning handles (taking results takes time).
    let completed = || engine.stats().devices[0].completed;
    let before = completed();
    let high_at = Instant::now();
    let high = engine.submit(spin.job().priority(Priority::High)).unwrap();
    high.wait_timeout(WAIT).unwrap();
    let ran = completed() - before - 1;
    // Low jobs run in submission order: the first `before` are done; of the rest, those
    // submitted two intervals before the High job rank ahead of it.
    let cutoff = high_at - 2 * wgpu_batch::DEFAULT_PRIORITY_AGING;
    let aged = at.iter().filter(|&&t| t < cutoff).count() as u64;
    let ahead = aged.saturating_sub(before);
    assert!(
        before + ahead < 900,
        "the test needs a backlog ({before} done, {ahead} aged)"
    );
    // Those, the batches already in flight, and a few finishing before this thread wakes.
    assert!(
        ran <= ahead + 10,
        "{ran} low jobs ran before the high one ({ahead} had aged past it)"
    );
    for h in low {
        h.wait_timeout(WAIT).unwrap();
    }
}

// Defect 5: panics on legal input.

#[test]
fn zero_sized_element_types_are_errors_not_panics() {
    let engine = common::engine();
    let scale = engine.kernel(kernels::scale()).unwrap();
    let out = engine
        .run(kernels::scale_job(&scale, 2.0, &[1.0; 8]))
        .unwrap();
    assert!(matches!(out.read::<()>(1), Err(Error::Binding { .. })));
    assert!(matches!(
        out.read_step::<[u32; 0]>(0, 1),
        Err(Error::Binding { .. })
    ));
    let buf = engine.upload(&[1u32; 8]).unwrap();
    assert!(matches!(
        engine.read::<[u32; 0]>(&buf),
        Err(Error::Binding { .. })
    ));
    let zst_output = Job::new(&scale)
        .uniform(0, &2.0f32)
        .output::<()>(1, 8)
        .workgroups(1, 1, 1);
    assert!(matches!(
        engine.submit(zst_output),
        Err(Error::Binding { .. })
    ));
    // The engine is unharmed.
    assert_eq!(engine.read::<u32>(&buf).unwrap(), [1; 8]);
}

#[test]
fn duration_max_means_no_limit_everywhere() {
    let name = common::engine().devices()[0].adapter.clone();
    let engine = common::build(
        common::builder()
            .adapter_name(name)
            .default_timeout(Duration::MAX)
            .max_batch_delay(Duration::MAX)
            .priority_aging(Duration::MAX)
            .gpu_timeout(Duration::MAX)
            .max_batch_jobs(2),
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    let job = || kernels::scale_job(&scale, 2.0, &[1.0; 8]);
    // A batch held open with no delay bound closes when full, or at a job's deadline.
    let a = engine.submit(job().timeout(Duration::MAX)).unwrap();
    let b = engine.submit(job().priority(Priority::Low)).unwrap();
    assert_eq!(
        a.wait_timeout(Duration::MAX)
            .unwrap()
            .read::<f32>(1)
            .unwrap()[0],
        2.0
    );
    assert_eq!(
        b.wait_timeout(Duration::MAX)
            .unwrap()
            .read::<f32>(1)
            .unwrap()[0],
        2.0
    );
    let start = Instant::now();
    let c = engine
        .submit(job().timeout(Duration::from_millis(200)))
        .unwrap();
    assert_eq!(
        c.wait_timeout(WAIT).unwrap().read::<f32>(1).unwrap()[0],
        2.0
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    let far = Instant::now() + Duration::from_secs(3600);
    let d = engine
        .submit(job().deadline(far).timeout(Duration::MAX))
        .unwrap();
    let e = engine.submit(job()).unwrap();
    assert!(d.wait_timeout(WAIT).is_ok() && e.wait_timeout(WAIT).is_ok());
    assert!(
        engine.stats().devices[0].failed == 0,
        "the executor never failed"
    );
}

// Defect 6: errors of the wrong kind.

#[test]
fn jobs_dropped_by_an_executor_panic_get_device_lost() {
    let name = common::engine().devices()[0].adapter.clone();
    let engine = common::build(
        common::builder()
            .adapter_name(name)
            .max_batch_jobs(4)
            .reopen_lost_devices(false), // the device stays lost
    );
    let spin = Spinner::new(&engine, 0, Duration::from_millis(20));
    let handles: Vec<JobHandle> = (0..40)
        .map(|_| engine.submit(spin.job()).unwrap())
        .collect();
    engine.panic_executor(0);
    let mut lost = 0;
    for h in handles {
        match h.wait_timeout(WAIT) {
            Ok(_) => {}
            Err(Error::DeviceLost { device: 0, reason }) => {
                assert!(reason.contains("panic"), "{reason}");
                lost += 1;
            }
            Err(e) => panic!("a job dropped by the panic must get DeviceLost, got: {e}"),
        }
    }
    assert!(lost > 0, "the panic dropped no job");
    assert!(matches!(
        engine.submit(spin.job()),
        Err(Error::DeviceLost { .. })
    ));
}

// Defect 7: reflection and limits.

const OVERRIDE_WG: &str = "
override wg: u32 = 64;
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(wg) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&out) { out[id.x] = id.x * 3u; }
}";

#[test]
fn an_override_sized_workgroup_is_reflected_at_its_size() {
    let engine = common::engine();
    for (constant, size) in [(None, 64), (Some(128.0), 128)] {
        let mut src = KernelSource::wgsl("override", OVERRIDE_WG);
        if let Some(v) = constant {
            src = src.constant("wg", v);
        }
        let kernel = engine.kernel(src).unwrap();
        assert_eq!(kernel.workgroup_size(), [size, 1, 1]);
        let n = 1_000_000;
        let job = Job::new(&kernel).output::<u32>(0, n).workgroups_for(n);
        let out: Vec<u32> = engine.run(job).unwrap().read(0).unwrap();
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32 * 3));
    }
    let unknown = engine.kernel(KernelSource::wgsl("o", OVERRIDE_WG).constant("nope", 1.0));
    assert!(matches!(unknown, Err(Error::Shader { .. })), "{unknown:?}");
}

#[test]
fn workgroup_memory_over_the_device_limit_is_a_limit_error() {
    let engine = common::engine();
    let limit = 16 * 1024 * 1024; // no device offers 16 MiB of workgroup memory
    let src = format!(
        "var<workgroup> big: array<f32, {}>;
         @group(0) @binding(0) var<storage, read_write> out: array<f32>;
         @compute @workgroup_size(1) fn main() {{ big[0] = 1.0; out[0] = big[0]; }}",
        limit / 4
    );
    match engine.kernel(KernelSource::wgsl("big", src)) {
        Err(Error::Limit {
            what, requested, ..
        }) => {
            assert!(what.contains("workgroup"), "{what}");
            assert_eq!(requested, limit);
        }
        other => panic!("want Error::Limit, got {other:?}"),
    }
}

const HEADER: &str = "
struct S { h: vec4<f32>, data: array<u32> }
@group(0) @binding(0) var<storage, read_write> s: S;
@compute @workgroup_size(1) fn main() { s.data[0] = arrayLength(&s.data); }";

#[test]
fn a_struct_with_a_runtime_array_needs_its_minimum_binding_size() {
    let engine = common::engine();
    let kernel = engine.kernel(KernelSource::wgsl("header", HEADER)).unwrap();
    assert_eq!(kernel.bindings()[0].min_size, 32);
    for bytes in [20usize, 24, 28] {
        let job = Job::new(&kernel).output::<u8>(0, bytes).workgroups(1, 1, 1);
        match engine.submit(job) {
            Err(Error::Binding { problem, .. }) => assert!(problem.contains("32"), "{problem}"),
            other => panic!("{bytes} bytes: want Error::Binding, got {other:?}"),
        }
    }
    let out = engine
        .run(Job::new(&kernel).output::<u32>(0, 8).workgroups(1, 1, 1))
        .unwrap();
    assert_eq!(
        out.read::<u32>(0).unwrap()[4],
        4,
        "four elements after the header"
    );
}

// Defect 8: replicated buffers drifted apart.

#[test]
fn a_replicated_buffer_cannot_be_bound_read_write() {
    let engine = common::build(common::builder().devices_per_adapter(2));
    let scale = engine.kernel(kernels::scale()).unwrap();
    let shared = engine.replicate(&[1.0f32; 16]).unwrap();
    assert!(shared.is_replicated());
    let write = Job::new(&scale)
        .uniform(0, &2.0f32)
        .buffer(1, &shared)
        .workgroups(1, 1, 1);
    match engine.submit(write) {
        Err(Error::Binding { problem, .. }) => assert!(problem.contains("replicated"), "{problem}"),
        other => panic!("want Error::Binding, got {other:?}"),
    }
    // Read-only use is fine on every device, and the copies stay equal.
    let add = engine.kernel(kernels::add()).unwrap();
    for device in 0..2 {
        let job = Job::new(&add)
            .buffer(0, &shared)
            .input(1, &[1.0f32; 16])
            .output::<f32>(2, 16)
            .workgroups_for(16)
            .on_device(device);
        assert_eq!(engine.run(job).unwrap().read::<f32>(2).unwrap(), [2.0; 16]);
    }
}

// Defect 9: completed batches waited while a partial batch was held open.

#[test]
fn completion_never_waits_for_batch_formation() {
    let name = common::engine().devices()[0].adapter.clone();
    let engine = common::build(
        common::builder()
            .adapter_name(name)
            .max_batch_jobs(2)
            .max_batch_delay(Duration::from_secs(5)),
    );
    let scale = engine.kernel(kernels::scale()).unwrap();
    let job = || kernels::scale_job(&scale, 2.0, &[1.0; 64]);
    let start = Instant::now();
    let (a, b) = (engine.submit(job()).unwrap(), engine.submit(job()).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    let c = engine.submit(job()).unwrap(); // opens a batch held up to 5 s
    a.wait_timeout(WAIT).unwrap();
    b.wait_timeout(WAIT).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the full batch was answered after {:?}",
        start.elapsed()
    );
    c.wait_timeout(WAIT).unwrap();
}

// Defect 11: the pool never shrank.

#[test]
fn the_pool_keeps_its_budget_and_frees_it_when_idle() {
    let name = common::engine().devices()[0].adapter.clone();
    let budget = 4 << 20;
    let engine = common::build(common::builder().adapter_name(name).pool_budget(budget));
    let scale = engine.kernel(kernels::scale()).unwrap();
    let handles: Vec<JobHandle> = (1..=24)
        .map(|i| {
            let x = vec![1.0f32; (i * 97 + 1) << 12]; // distinct sizes, up to ~9 MiB
            engine.submit(kernels::scale_job(&scale, 2.0, &x)).unwrap()
        })
        .collect();
    settle(handles);
    let held = engine.stats().devices[0].pool_bytes;
    assert!(
        held <= budget,
        "the pool keeps {held} bytes over its {budget}-byte budget"
    );
    let start = Instant::now();
    while engine.stats().devices[0].pool_bytes > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the idle pool kept its buffers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Defect 12: the global lock.

#[test]
fn engines_built_at_once_enumerate_one_at_a_time() {
    let engines: Vec<Engine> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4).map(|_| s.spawn(common::engine)).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(Engine::max_concurrent_enumerations(), 1);
    let scale = engines[3].kernel(kernels::scale()).unwrap();
    assert!(
        engines[3]
            .run(kernels::scale_job(&scale, 2.0, &[1.0; 4]))
            .is_ok()
    );
}
