//! What a device does with an out-of-bounds access to a storage buffer, measured once when
//! the device opens, so that fused kernels (see `kernel/fusion.rs`) bound their accesses the same way
//! and a job gets the same bits fused and unfused.
//!
//! The answer depends on the backend and the driver, not on anything wgpu reports: Vulkan
//! clamps the index in the shader (naga's `Restrict`) unless the device has
//! `robustBufferAccess2`, whose hardware checks read zero and drop writes (as DX12 and Metal
//! do); the GL backend does not check at all. One dispatch of a tiny kernel that reads and
//! writes past a binding placed in the middle of a buffer tells which.

use std::time::Duration;

use wgpu::util::DeviceExt;

use crate::device::poll::poll_wait;
use crate::error::scoped;
use crate::kernel::fusion::Bounds;

const PROBE: &str = "
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1)
fn main() {
    let n = arrayLength(&a);
    out[0] = a[n + 1u];
    a[n + 2u] = 0xdeadu;
}";

/// Elements of the probed binding.
const BOUND: u64 = 4;

/// How `device` bounds out-of-bounds storage accesses, or why that could not be told (the
/// device then runs nothing fused). Waits at most `timeout` for the GPU; on a device `shared`
/// with an application, without timed waits (see `device/poll.rs`).
pub(crate) fn bounds(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    timeout: Duration,
    shared: bool,
    disk: Option<&crate::kernel::warm::DiskCache>,
) -> Result<Bounds, String> {
    let cache = disk.map(|d| d.cache());
    let (result, error) = scoped(device, || run(device, queue, timeout, shared, cache));
    if let Some(e) = error {
        return Err(format!("the bounds probe failed: {e}"));
    }
    let (read, words) = result?;
    let first = (device.limits().min_storage_buffer_offset_alignment as usize / 4).max(1);
    // Element i of the buffer holds i + 1; the binding is elements first..first + BOUND.
    let last = (first + BOUND as usize) as u32;
    let written = words.iter().position(|&w| w == 0xdead);
    match (read, written) {
        (0, None) => Ok(Bounds::ZeroSkip),
        (r, Some(at)) if r == last && at as u32 + 1 == last => Ok(Bounds::Clamp),
        (r, w) => {
            // Unchecked (or something else): fused kernels still keep every access inside its
            // job; unfused, this device lets one reach past its binding.
            log::warn!(
                "this device does not bound out-of-bounds storage accesses (read {r}, write at {w:?}); \
                 fused kernels read zero and drop writes there"
            );
            Ok(Bounds::ZeroSkip)
        }
    }
}

/// Runs the probe: the value read out of bounds, and the probed buffer afterwards.
fn run(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    timeout: Duration,
    shared: bool,
    cache: Option<&wgpu::PipelineCache>,
) -> Result<(u32, Vec<u32>), String> {
    let align = u64::from(device.limits().min_storage_buffer_offset_alignment).max(4);
    let len = (2 * align + 4 * BOUND).div_ceil(4);
    let values: Vec<u32> = (1..=len as u32).collect();
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let a = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("wgpu-batch bounds probe"),
        contents: bytemuck::cast_slice(&values),
        usage,
    });
    let out = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("wgpu-batch bounds probe out"),
        contents: &[0; 16],
        usage,
    });
    let read = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu-batch bounds probe read"),
        size: 4 * len + 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("wgpu-batch bounds probe"),
        source: wgpu::ShaderSource::Wgsl(PROBE.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("wgpu-batch bounds probe"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache,
    });
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &a,
                    offset: align,
                    size: wgpu::BufferSize::new(4 * BOUND),
                }),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: out.as_entire_binding(),
            },
        ],
    });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    enc.copy_buffer_to_buffer(&a, 0, &read, 0, 4 * len);
    enc.copy_buffer_to_buffer(&out, 0, &read, 4 * len, 16);
    let index = queue.submit([enc.finish()]);
    let (tx, rx) = flume::bounded(1);
    read.slice(..)
        .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
    poll_wait(device, Some(&index), timeout, shared, || !rx.is_empty())
        .map_err(|e| format!("the bounds probe did not finish: {e}"))?;
    // The wait ran the map callback once the submission was done.
    rx.try_recv()
        .map_err(|_| "the bounds probe was never mapped".to_string())?
        .map_err(|e| format!("the bounds probe could not be read: {e}"))?;
    let view = read.get_mapped_range(..).map_err(|e| e.to_string())?;
    let words: Vec<u32> = bytemuck::cast_slice(&view).to_vec();
    drop(view);
    read.unmap();
    let (buffer, out) = words.split_at(len as usize);
    Ok((out[0], buffer.to_vec()))
}
