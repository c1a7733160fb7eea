//! The baseline a user would write without the runtime: plain wgpu, one SAXPY job at a time
//! (write the inputs, one dispatch, copy to a readback buffer, submit, map, wait, read), with
//! buffers and bind groups pooled per size so it pays only what one-at-a-time costs.
//!
//! Every failure is an error rather than a panic, since here the adapter and backend come from
//! the command line. The crate's benchmarks measure against this same runner (they include
//! this file), so it uses nothing else of the tool.

use std::collections::HashMap;

use wgpu_batch::wgpu;

/// A failure, described.
type Result<T> = std::result::Result<T, String>;

fn fail(message: impl Into<String>) -> String {
    message.into()
}

/// A wgpu instance for `backends`, configured as the engine configures its own: no debug
/// layers unless the environment asks (they are slow and noisy), and the noop backend enabled
/// only when it is named.
pub fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    desc.backend_options = wgpu::BackendOptions::from_env_or_default();
    if backends.contains(wgpu::Backends::NOOP) {
        desc.backend_options.noop = wgpu::NoopBackendOptions::enabled();
    }
    wgpu::Instance::new(desc)
}

const SAXPY: &str = include_str!("../../../shaders/saxpy.wgsl");
/// `@workgroup_size` of the SAXPY kernel.
const WORKGROUP: u32 = 256;

/// The buffers for one element count: a, x, y, readback, and their bind group.
struct Buffers {
    a: wgpu::Buffer,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    readback: wgpu::Buffer,
    group: wgpu::BindGroup,
}

/// One device, one job at a time.
pub struct Plain {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    pool: HashMap<usize, Buffers>,
}

impl Plain {
    /// Opens a device on the first adapter of `backends` and builds the SAXPY pipeline.
    pub fn new(backends: wgpu::Backends) -> Result<Plain> {
        let adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
        let adapter = (adapters.into_iter().next())
            .ok_or_else(|| fail(format!("no {backends:?} adapter for plain wgpu")))?;
        let mut limits = adapter.limits();
        // wgpu-core tracks at most 8 bind groups; the noop adapter reports more.
        limits.max_bind_groups = limits.max_bind_groups.min(8);
        let desc = wgpu::DeviceDescriptor {
            label: Some("plain wgpu"),
            required_limits: limits,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| fail(format!("plain wgpu: opening a device: {e}")))?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("saxpy"),
            source: wgpu::ShaderSource::Wgsl(SAXPY.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("saxpy"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Ok(Plain {
            device,
            queue,
            pipeline,
            pool: HashMap::new(),
        })
    }

    /// Creates the buffers for `n` elements, once.
    fn buffers(device: &wgpu::Device, pipeline: &wgpu::ComputePipeline, n: usize) -> Buffers {
        use wgpu::BufferUsages as U;
        let buf = |label, size: u64, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let bytes = 4 * n as u64;
        let a = buf("a", 4, U::UNIFORM | U::COPY_DST);
        let x = buf("x", bytes, U::STORAGE | U::COPY_DST);
        let y = buf("y", bytes, U::STORAGE | U::COPY_DST | U::COPY_SRC);
        let readback = buf("readback", bytes, U::MAP_READ | U::COPY_DST);
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("saxpy"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: a.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: x.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: y.as_entire_binding(),
                },
            ],
        });
        Buffers {
            a,
            x,
            y,
            readback,
            group,
        }
    }

    /// `a * x + y` the plain way; blocks until the result is on the host.
    pub fn run(&mut self, a: f32, x: &[f32], y: &[f32]) -> Result<Vec<f32>> {
        let n = y.len();
        if n == 0 || x.len() != n {
            return Err(fail(
                "plain wgpu: x and y must have the same, nonzero length",
            ));
        }
        let (device, pipeline) = (&self.device, &self.pipeline);
        let b = self
            .pool
            .entry(n)
            .or_insert_with(|| Self::buffers(device, pipeline, n));
        self.queue.write_buffer(&b.a, 0, bytemuck::bytes_of(&a));
        self.queue.write_buffer(&b.x, 0, bytemuck::cast_slice(x));
        self.queue.write_buffer(&b.y, 0, bytemuck::cast_slice(y));
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &b.group, &[]);
            pass.dispatch_workgroups((n as u32).div_ceil(WORKGROUP), 1, 1);
        }
        enc.copy_buffer_to_buffer(&b.y, 0, &b.readback, 0, 4 * n as u64);
        let index = self.queue.submit([enc.finish()]);
        // The map callback runs inside `poll` on this thread; it hands its result over.
        let (tx, rx) = std::sync::mpsc::channel();
        b.readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| fail(format!("plain wgpu: waiting for the device: {e}")))?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail(format!("plain wgpu: mapping the result: {e}"))),
            Err(_) => return Err(fail("plain wgpu: the result was not mapped after the wait")),
        }
        let out = {
            let view = b
                .readback
                .get_mapped_range(..)
                .map_err(|e| fail(format!("plain wgpu: reading the result: {e}")))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        b.readback.unmap();
        Ok(out)
    }
}
