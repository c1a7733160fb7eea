//! Bad input gives its own typed error, never a panic, and the engine serves the next job.

mod common;

use wgpu_batch::{Engine, Error, Job, KernelSource, kernels};

/// After any error the engine must still run a correct job.
fn still_serves(engine: &Engine) {
    let k = engine.kernel(kernels::scale()).unwrap();
    let out = engine
        .run(kernels::scale_job(&k, 2.0, &[1.0, 2.0, 3.0]))
        .unwrap();
    assert_eq!(out.read::<f32>(1).unwrap(), [2.0, 4.0, 6.0]);
}

fn binding_problem(err: Error) -> (u32, String) {
    match err {
        Error::Binding {
            binding, problem, ..
        } => (binding, problem),
        other => panic!("expected Error::Binding, got {other:?}"),
    }
}

#[test]
fn invalid_wgsl_names_line_and_column() {
    let engine = common::engine();
    let src = "@compute @workgroup_size(1)\nfn main() {\n    let x: f32 = 1u;\n}\n";
    let err = engine
        .kernel(KernelSource::wgsl("broken", src))
        .unwrap_err();
    match &err {
        Error::Shader { kernel, message } => {
            assert_eq!(kernel, "broken");
            assert!(message.contains(":3:"), "no line:column in {message}");
        }
        other => panic!("expected Error::Shader, got {other:?}"),
    }
    still_serves(&engine);
}

#[test]
fn missing_entry_point() {
    let engine = common::engine();
    let err = engine
        .kernel(kernels::saxpy().entry_point("nope"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shader { message, .. } if message.contains("`nope`")),
        "{err}"
    );
    still_serves(&engine);
}

#[test]
fn missing_binding() {
    let engine = common::engine();
    let k = engine.kernel(kernels::saxpy()).unwrap();
    let err = engine
        .submit(
            Job::new(&k)
                .uniform(0, &1.0f32)
                .inout(2, &[1.0f32; 4])
                .workgroups(1, 1, 1),
        )
        .unwrap_err();
    let (binding, problem) = binding_problem(err);
    assert_eq!(binding, 1);
    assert!(problem.contains("missing"), "{problem}");
    still_serves(&engine);
}

#[test]
fn unknown_binding() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let err = engine
        .submit(kernels::scale_job(&k, 1.0, &[1.0; 4]).input(7, &[0u32]))
        .unwrap_err();
    let (binding, problem) = binding_problem(err);
    assert_eq!(binding, 7);
    assert!(problem.contains("unknown"), "{problem}");
    still_serves(&engine);
}

#[test]
fn uniform_given_for_storage_binding() {
    let engine = common::engine();
    let k = engine.kernel(kernels::add()).unwrap();
    let job = Job::new(&k)
        .uniform(0, &[1.0f32; 4])
        .input(1, &[1.0f32; 4])
        .output::<f32>(2, 4)
        .workgroups(1, 1, 1);
    let (binding, problem) = binding_problem(engine.submit(job).unwrap_err());
    assert_eq!(binding, 0);
    assert!(problem.contains("uniform given"), "{problem}");
    still_serves(&engine);
}

#[test]
fn input_given_for_read_write_binding() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let job = Job::new(&k)
        .uniform(0, &1.0f32)
        .input(1, &[1.0f32; 4])
        .workgroups(1, 1, 1);
    let (binding, problem) = binding_problem(engine.submit(job).unwrap_err());
    assert_eq!(binding, 1);
    assert!(
        problem.contains("input given") && problem.contains("StorageReadWrite"),
        "{problem}"
    );
    still_serves(&engine);
}

#[test]
fn size_not_a_multiple_of_the_element_size() {
    const SRC: &str = "
        @group(0) @binding(0) var<storage, read_write> v: array<vec4<f32>>;
        @compute @workgroup_size(1) fn main() { v[0] = vec4(1.0); }";
    let engine = common::engine();
    let k = engine.kernel(KernelSource::wgsl("vec4", SRC)).unwrap();
    let (binding, problem) = binding_problem(
        engine
            .submit(Job::new(&k).inout(0, &[0.0f32; 6]).workgroups(1, 1, 1))
            .unwrap_err(),
    );
    assert_eq!(binding, 0);
    assert!(problem.contains("16-byte elements"), "{problem}");
    let odd = Job::new(&k).inout(0, &[0u8; 18]).workgroups(1, 1, 1);
    assert!(
        binding_problem(engine.submit(odd).unwrap_err())
            .1
            .contains("multiple of 4")
    );
    still_serves(&engine);
}

#[test]
fn buffer_over_the_binding_limit() {
    let engine = common::engine();
    let limit = engine.devices()[0].max_storage_binding;
    let k = engine.kernel(kernels::add()).unwrap();
    let elements = (limit / 4 + 1) as usize;
    let job = Job::new(&k)
        .input(0, &[1.0f32])
        .input(1, &[1.0f32])
        .output::<f32>(2, elements)
        .workgroups(1, 1, 1);
    match engine.submit(job).unwrap_err() {
        Error::Limit {
            requested,
            limit: l,
            ..
        } => {
            assert_eq!(requested, elements as u64 * 4);
            assert!(l <= limit);
        }
        other => panic!("expected Error::Limit, got {other:?}"),
    }
    still_serves(&engine);
}

#[test]
fn zero_workgroups() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let err = engine
        .submit(
            Job::new(&k)
                .uniform(0, &1.0f32)
                .inout(1, &[1.0f32])
                .workgroups(4, 0, 1),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Workgroups { y: 0, .. }), "{err:?}");
    let never_set = Job::new(&k).uniform(0, &1.0f32).inout(1, &[1.0f32]);
    assert!(matches!(
        engine.submit(never_set).unwrap_err(),
        Error::Workgroups { .. }
    ));
    still_serves(&engine);
}

#[test]
fn workgroups_over_the_limit() {
    let engine = common::engine();
    let limit = engine.devices()[0].max_workgroups_per_dimension;
    let k = engine.kernel(kernels::scale()).unwrap();
    let err = engine
        .submit(
            Job::new(&k)
                .uniform(0, &1.0f32)
                .inout(1, &[1.0f32])
                .workgroups(limit + 1, 1, 1),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                what: "workgroups per dimension",
                ..
            }
        ),
        "{err:?}"
    );
    still_serves(&engine);
}

#[test]
fn empty_input() {
    let engine = common::engine();
    let k = engine.kernel(kernels::add()).unwrap();
    let (binding, problem) = binding_problem(
        engine
            .submit(kernels::add_job(&k, &[], &[]).workgroups(1, 1, 1))
            .unwrap_err(),
    );
    assert_eq!(binding, 0);
    assert!(problem.contains("empty"), "{problem}");
    still_serves(&engine);
}

#[test]
fn binding_given_twice() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let job = kernels::scale_job(&k, 1.0, &[1.0]).uniform(0, &2.0f32);
    assert!(
        binding_problem(engine.submit(job).unwrap_err())
            .1
            .contains("more than once")
    );
    still_serves(&engine);
}

#[test]
fn unknown_device_index() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let err = engine
        .submit(kernels::scale_job(&k, 1.0, &[1.0]).on_device(99))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                what: "device index",
                requested: 99,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn reading_a_binding_that_was_not_read_back() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    let out = engine
        .run(kernels::scale_job(&k, 1.0, &[1.0, 2.0]))
        .unwrap();
    assert!(matches!(
        out.read::<f32>(0),
        Err(Error::Binding { binding: 0, .. })
    ));
    assert!(matches!(
        out.read::<[f32; 3]>(1),
        Err(Error::Binding { binding: 1, .. })
    ));
}

#[test]
fn submit_after_shutdown() {
    let engine = common::engine();
    let k = engine.kernel(kernels::scale()).unwrap();
    engine.shutdown();
    assert_eq!(
        engine
            .submit(kernels::scale_job(&k, 1.0, &[1.0]))
            .unwrap_err(),
        Error::Shutdown
    );
    let rejected = engine
        .try_submit(kernels::scale_job(&k, 1.0, &[1.0]))
        .unwrap_err();
    assert_eq!(rejected.error, Error::Shutdown);
    assert_eq!(rejected.job.kernel().label(), "scale");
}

#[test]
fn adapter_name_matching_nothing() {
    let err = common::builder()
        .adapter_name("no-such-adapter-xyz")
        .build()
        .unwrap_err();
    match err {
        Error::NoAdapter(msg) => {
            assert!(msg.contains("no-such-adapter-xyz"), "{msg}");
            assert!(msg.contains("adapters found:"), "{msg}");
            assert!(msg.contains("mesa-vulkan-drivers"), "{msg}");
        }
        other => panic!("expected Error::NoAdapter, got {other:?}"),
    }
}

#[test]
fn kernel_without_usable_entry_point() {
    let engine = common::engine();
    let src = "@vertex fn vs() -> @builtin(position) vec4<f32> { return vec4(0.0); }";
    let err = engine
        .kernel(KernelSource::wgsl("vertex-only", src))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shader { message, .. } if message.contains("no @compute")),
        "{err}"
    );
}
