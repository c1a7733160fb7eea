//! Helpers for headless GPU test suites: run a check on every adapter of the machine, and
//! compare float results in ULPs.
//!
//! ```no_run
//! use wgpu_batch::{kernels, testing};
//!
//! #[test]
//! fn saxpy_is_right_everywhere() {
//!     testing::for_each_adapter(|engine, _device| {
//!         let k = engine.kernel(kernels::saxpy()).unwrap();
//!         let (x, y) = (vec![1.0f32; 1000], vec![2.0f32; 1000]);
//!         let got: Vec<f32> = engine.run(kernels::saxpy_job(&k, 3.0, &x, &y)).unwrap().read(2).unwrap();
//!         testing::assert_close(&got, &vec![5.0; 1000], 0);
//!     });
//! }
//! ```
//!
//! In CI without a GPU, install Mesa's software adapters first (Debian/Ubuntu:
//! `apt-get install mesa-vulkan-drivers libegl-mesa0`): lavapipe (Vulkan) and llvmpipe (GL)
//! are then two adapters, and every check runs on both.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::adapters;
use crate::adapters::DeviceInfo;
use crate::engine::Engine;

/// What a check did on one adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterReport {
    /// The adapter's name.
    pub adapter: String,
    /// Its backend.
    pub backend: wgpu::Backend,
    /// `Ok`, or why the check failed there (its panic message, or why no engine opened).
    pub outcome: Result<(), String>,
}

/// Runs `check` on every adapter of the machine (`WGPU_BACKEND` selects backends; by default
/// all but noop), each with an engine of its own, and returns what happened on each. Panics
/// when `check` failed (panicked) on any adapter, with one table naming every adapter and
/// what failed there, and when the machine has no adapter, saying how to get one.
///
/// Adapters with the same name on the same backend (two identical GPUs) share one engine.
pub fn for_each_adapter(mut check: impl FnMut(&Engine, &DeviceInfo)) -> Vec<AdapterReport> {
    let backends =
        wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all() - wgpu::Backends::NOOP);
    let found = match adapters::list(backends) {
        Ok(found) if !found.is_empty() => found,
        Ok(_) => panic!("no adapter for {backends:?}; {}", adapters::INSTALL_HINT),
        Err(e) => panic!("{e}"),
    };
    let mut reports = Vec::new();
    for info in found {
        let built = Engine::builder()
            .backends(info.backend.into())
            .adapter_name(info.name.clone())
            .build();
        let outcome = match built {
            Err(e) => Err(format!("no engine: {e}")),
            Ok(engine) => {
                let device = engine.devices().swap_remove(0);
                catch_unwind(AssertUnwindSafe(|| check(&engine, &device)))
                    .map_err(|p| panic_message(&*p))
            }
        };
        reports.push(AdapterReport {
            adapter: info.name,
            backend: info.backend,
            outcome,
        });
    }
    if reports.iter().any(|r| r.outcome.is_err()) {
        panic!(
            "the check failed on {} of {} adapters:\n{}",
            reports.iter().filter(|r| r.outcome.is_err()).count(),
            reports.len(),
            table(&reports)
        );
    }
    reports
}

/// The reports as a markdown table.
fn table(reports: &[AdapterReport]) -> String {
    let mut out = String::from("| adapter | backend | result |\n|---|---|---|\n");
    for r in reports {
        let result = match &r.outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("FAILED: {}", e.replace('\n', " ").replace('|', "\\|")),
        };
        out.push_str(&format!("| {} | {:?} | {result} |\n", r.adapter, r.backend));
    }
    out
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    crate::error::panic_message(p)
        .unwrap_or("panicked")
        .to_owned()
}

/// The distance between two floats in units in the last place: how many representable `f32`
/// lie between them (0 for equal values, `+0.0` and `-0.0`, or two NaNs; `u64::MAX` for a NaN
/// against a number).
pub fn ulps(a: f32, b: f32) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    // Map the bits to integers that order like the floats they encode.
    let ordered = |x: f32| {
        let bits = x.to_bits() as i32;
        i64::from(if bits < 0 {
            i32::MIN.wrapping_sub(bits)
        } else {
            bits
        })
    };
    ordered(a).abs_diff(ordered(b))
}

/// Asserts that `got` and `want` have the same length and every element is within
/// `max_ulps` units in the last place (see [`ulps`]); the message shows how many differ and
/// the first differing indices with both values.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], max_ulps: u64) {
    assert_eq!(
        got.len(),
        want.len(),
        "lengths differ: got {}, want {}",
        got.len(),
        want.len()
    );
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| ulps(got[i], want[i]) > max_ulps)
        .collect();
    if bad.is_empty() {
        return;
    }
    let first: Vec<String> = (bad.iter().take(8))
        .map(|&i| {
            format!(
                "[{i}] got {:e}, want {:e} ({} ULPs)",
                got[i],
                want[i],
                ulps(got[i], want[i])
            )
        })
        .collect();
    panic!(
        "{} of {} elements differ by more than {max_ulps} ULPs; first: {}",
        bad.len(),
        got.len(),
        first.join("; ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulps_count_representable_floats_between() {
        assert_eq!(ulps(1.0, 1.0), 0);
        assert_eq!(ulps(0.0, -0.0), 0);
        assert_eq!(ulps(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
        assert_eq!(
            ulps(-f32::MIN_POSITIVE, f32::MIN_POSITIVE),
            2 * u64::from(f32::MIN_POSITIVE.to_bits())
        );
        assert_eq!(
            (ulps(f32::NAN, f32::NAN), ulps(f32::NAN, 1.0)),
            (0, u64::MAX)
        );
    }

    #[test]
    fn assert_close_names_the_first_differences() {
        assert_close(&[1.0, 2.0], &[1.0, f32::from_bits(2.0f32.to_bits() + 1)], 1);
        let err = catch_unwind(|| assert_close(&[1.0, 2.0, 3.0], &[1.0, 2.5, 3.5], 4)).unwrap_err();
        let msg = panic_message(&*err);
        assert!(
            msg.starts_with(
                "2 of 3 elements differ by more than 4 ULPs; first: [1] got 2e0, want 2.5e0"
            ),
            "{msg}"
        );
    }

    #[test]
    fn the_table_names_each_adapter() {
        let reports = [
            AdapterReport {
                adapter: "a".into(),
                backend: wgpu::Backend::Vulkan,
                outcome: Ok(()),
            },
            AdapterReport {
                adapter: "b".into(),
                backend: wgpu::Backend::Gl,
                outcome: Err("x | y".into()),
            },
        ];
        let t = table(&reports);
        assert!(
            t.contains("| a | Vulkan | ok |") && t.contains("| b | Gl | FAILED: x \\| y |"),
            "{t}"
        );
    }
}
