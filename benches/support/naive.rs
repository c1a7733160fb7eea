//! The benchmarks' baseline: plain wgpu, one SAXPY job at a time (write, one dispatch, copy
//! back, submit, map, wait, read), with buffers and bind groups pooled per size so it pays
//! only what one-at-a-time costs.

use std::collections::HashMap;

use wgpu_batch::wgpu;

const SAXPY: &str = include_str!("../../shaders/saxpy.wgsl");

/// Plain wgpu, one job at a time: the baseline.
pub struct Naive {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    /// Per element count: (a, x, y, readback buffers, bind group), created once.
    pool: HashMap<
        usize,
        (
            wgpu::Buffer,
            wgpu::Buffer,
            wgpu::Buffer,
            wgpu::Buffer,
            wgpu::BindGroup,
        ),
    >,
}

impl Naive {
    pub fn new(backend: wgpu::Backends) -> Naive {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backend;
        desc.flags = wgpu::InstanceFlags::empty();
        desc.backend_options.noop = wgpu::NoopBackendOptions::enabled();
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.enumerate_adapters(backend))
            .into_iter()
            .next()
            .expect("no adapter");
        let mut limits = adapter.limits();
        limits.max_bind_groups = limits.max_bind_groups.min(8); // wgpu-core tracks at most 8
        let desc = wgpu::DeviceDescriptor {
            required_limits: limits,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).expect("no device");
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(SAXPY.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Naive {
            device,
            queue,
            pipeline,
            pool: HashMap::new(),
        }
    }

    fn buffers(
        &mut self,
        n: usize,
    ) -> &(
        wgpu::Buffer,
        wgpu::Buffer,
        wgpu::Buffer,
        wgpu::Buffer,
        wgpu::BindGroup,
    ) {
        let (device, pipeline) = (&self.device, &self.pipeline);
        self.pool.entry(n).or_insert_with(|| {
            use wgpu::BufferUsages as U;
            let buf = |size: u64, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let bytes = 4 * n as u64;
            let a = buf(4, U::UNIFORM | U::COPY_DST);
            let x = buf(bytes, U::STORAGE | U::COPY_DST);
            let y = buf(bytes, U::STORAGE | U::COPY_DST | U::COPY_SRC);
            let rb = buf(bytes, U::MAP_READ | U::COPY_DST);
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
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
            (a, x, y, rb, group)
        })
    }

    /// `a * x + y` the plain way; blocks until the result is on the host.
    pub fn run(&mut self, a: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
        let n = y.len();
        self.buffers(n);
        let (ab, xb, yb, rb, group) = &self.pool[&n];
        self.queue.write_buffer(ab, 0, bytemuck::bytes_of(&a));
        self.queue.write_buffer(xb, 0, bytemuck::cast_slice(x));
        self.queue.write_buffer(yb, 0, bytemuck::cast_slice(y));
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups((n as u32).div_ceil(256), 1, 1);
        }
        enc.copy_buffer_to_buffer(yb, 0, rb, 0, 4 * n as u64);
        let index = self.queue.submit([enc.finish()]);
        rb.map_async(wgpu::MapMode::Read, .., |r| r.expect("map failed"));
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .expect("poll");
        let out = bytemuck::pod_collect_to_vec(&rb.get_mapped_range(..).expect("mapped"));
        rb.unmap();
        out
    }
}
