//! 16 threads x 1,000 jobs of mixed kernels and sizes across two devices: every result is
//! checked, none is lost or duplicated, and every wait is bounded.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{WAIT, data};
use wgpu_batch::{Job, JobHandle, Kernel, kernels};

const THREADS: usize = 16;
const JOBS: usize = 1000;

struct Kernels {
    saxpy: Kernel,
    add: Kernel,
    scale: Kernel,
    sum: Kernel,
}

/// Job `id`: a kernel and size chosen from the id, and the CPU result it must give.
fn job(k: &Kernels, id: usize) -> (Job, u32, Vec<f32>) {
    let n = [1, 64, 255, 256, 1000, 4096, 10_007][id % 7];
    let x = data(n, id as u64);
    // The id itself is part of every job's data, so a result delivered to the wrong
    // handle (a duplicate or a swap) cannot match.
    let tag = id as f32;
    match id % 4 {
        0 => {
            let y = vec![tag; n];
            let want = x.iter().zip(&y).map(|(x, y)| 0.5 * x + y).collect();
            (kernels::saxpy_job(&k.saxpy, 0.5, &x, &y), 2, want)
        }
        1 => {
            let b = vec![tag; n];
            (
                kernels::add_job(&k.add, &x, &b),
                2,
                x.iter().map(|v| v + tag).collect(),
            )
        }
        2 => {
            let s = 1.0 + tag;
            (
                kernels::scale_job(&k.scale, s, &x),
                1,
                x.iter().map(|v| v * s).collect(),
            )
        }
        _ => {
            let v: Vec<f32> = x.iter().map(|v| v + tag).collect();
            let want = v
                .chunks(kernels::SUM_ELEMENTS_PER_WORKGROUP)
                .map(|c| c.iter().sum())
                .collect();
            (kernels::sum_job(&k.sum, &v), 1, want)
        }
    }
}

#[test]
fn sixteen_threads_thousand_jobs_each_on_two_devices() {
    let engine = common::build(common::builder().devices_per_adapter(2).queue_capacity(256));
    assert!(
        engine.devices().len() >= 2,
        "need two devices, got {:?}",
        engine.devices()
    );
    let k = Arc::new(Kernels {
        saxpy: engine.kernel(kernels::saxpy()).unwrap(),
        add: engine.kernel(kernels::add()).unwrap(),
        scale: engine.kernel(kernels::scale()).unwrap(),
        sum: engine.kernel(kernels::sum()).unwrap(),
    });
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (engine, k) = (engine.clone(), k.clone());
            std::thread::spawn(move || {
                // Keep up to 64 jobs outstanding per thread, then check the oldest.
                let mut pending: std::collections::VecDeque<(usize, JobHandle, u32, Vec<f32>)> =
                    Default::default();
                let mut devices = HashSet::new();
                for i in 0..JOBS {
                    let id = t * JOBS + i;
                    let (job, binding, want) = job(&k, id);
                    pending.push_back((id, engine.submit(job).unwrap(), binding, want));
                    if pending.len() == 64 || i == JOBS - 1 {
                        while let Some((id, h, binding, want)) = pending.pop_front() {
                            let out = h
                                .wait_timeout(WAIT)
                                .unwrap_or_else(|e| panic!("job {id}: {e}"));
                            devices.insert(out.device());
                            let got: Vec<f32> = out.read(binding).unwrap();
                            assert_eq!(got.len(), want.len(), "job {id}");
                            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                                assert!(
                                    (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                                    "job {id} element {j}: {g} != {w}"
                                );
                            }
                            if pending.len() < 32 && i != JOBS - 1 {
                                break;
                            }
                        }
                    }
                }
                devices
            })
        })
        .collect();
    let mut used = HashSet::new();
    for t in threads {
        used.extend(t.join().expect("a submitting thread panicked"));
    }
    let stats = engine.stats();
    let total = (THREADS * JOBS) as u64;
    assert_eq!(stats.completed(), total, "{stats:#?}");
    assert_eq!(stats.failed(), 0);
    assert_eq!(
        stats.devices.iter().map(|d| d.submitted).sum::<u64>(),
        total
    );
    assert!(used.len() >= 2, "all jobs ran on {used:?}");
    assert!(stats.batches() < total, "no batching happened: {stats:#?}");
}
