//! Devices and statistics as plain dicts (times in seconds).

use pyo3::prelude::*;
use pyo3::types::PyDict;
use wgpu_batch::{DeviceInfo, DeviceState, DeviceStatsSnapshot, EngineStats};

pub(crate) fn device_info<'py>(py: Python<'py>, d: &DeviceInfo) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("index", d.index)?;
    dict.set_item("adapter", &d.adapter)?;
    dict.set_item("backend", format!("{:?}", d.backend).to_lowercase())?;
    dict.set_item("device_type", format!("{:?}", d.device_type).to_lowercase())?;
    dict.set_item("driver", &d.driver)?;
    dict.set_item("max_storage_binding", d.max_storage_binding)?;
    dict.set_item(
        "max_workgroups_per_dimension",
        d.max_workgroups_per_dimension,
    )?;
    dict.set_item("maps_storage", d.maps_storage)?;
    let state = match d.state {
        DeviceState::Up => "up",
        DeviceState::Recovering => "recovering",
        _ => "down",
    };
    dict.set_item("state", state)?;
    dict.set_item("generation", d.generation)?;
    Ok(dict)
}

pub(crate) fn engine_stats<'py>(py: Python<'py>, s: &EngineStats) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let devices = (s.devices.iter())
        .map(|d| device_stats(py, d))
        .collect::<PyResult<Vec<_>>>()?;
    dict.set_item("devices", devices)?;
    dict.set_item("kept_copy_bytes", s.kept_copy_bytes)?;
    Ok(dict)
}

fn device_stats<'py>(py: Python<'py>, d: &DeviceStatsSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    macro_rules! put {
        ($($field:ident),*) => { $(dict.set_item(stringify!($field), d.$field)?;)* };
    }
    put!(
        device,
        submitted,
        completed,
        failed,
        batches,
        mean_batch,
        max_batch,
        dispatches,
        fused_jobs,
        losses,
        recoveries,
        replays,
        poisoned,
        queue_depth,
        outstanding,
        gpu_timed_jobs,
        pool_bytes
    );
    macro_rules! put_seconds {
        ($($field:ident),*) => { $(dict.set_item(stringify!($field), d.$field.as_secs_f64())?;)* };
    }
    put_seconds!(
        queue_wait_p50,
        queue_wait_p99,
        latency_p50,
        latency_p99,
        cost_per_job,
        gpu_time
    );
    dict.set_item("last_recovery", d.last_recovery.map(|t| t.as_secs_f64()))?;
    Ok(dict)
}
