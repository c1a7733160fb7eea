use std::time::Instant;
use wgpu::util::DeviceExt;
use wgpu_batch::wgpu;

const SAXPY: &str = include_str!("../shaders/saxpy.wgsl");
const CEIL: &str = "
struct Rec { x: u32, y: u32, n: u32, a: f32 }
@group(0) @binding(0) var<storage, read> jobs: array<Rec>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    let j = jobs[w.z];
    if g.x < j.n { y[j.y + g.x] = j.a * x[j.x + g.x] + y[j.y + g.x]; }
}";

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let jobs = 64usize;
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(inst.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    use wgpu::BufferUsages as U;
    let init = |d: &[u8], u| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: d,
            usage: u,
        })
    };
    let xs: Vec<f32> = (0..n * jobs + 2).map(|i| (i % 97) as f32).collect();
    let x = init(bytemuck::cast_slice(&xs), U::STORAGE);
    let y = init(bytemuck::cast_slice(&xs), U::STORAGE);
    let a = init(
        bytemuck::cast_slice(&vec![2.0f32; jobs * 64 + 64]),
        U::STORAGE | U::UNIFORM,
    );
    let pipe = |src: &str, entry: &str| {
        let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &m,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let time = |name: &str, f: &dyn Fn(&mut wgpu::ComputePass)| {
        for rep in 0..3 {
            let t = Instant::now();
            let iters = 20;
            for _ in 0..iters {
                let mut enc = device.create_command_encoder(&Default::default());
                {
                    let mut p = enc.begin_compute_pass(&Default::default());
                    f(&mut p);
                }
                let i = queue.submit([enc.finish()]);
                device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(i),
                        timeout: None,
                    })
                    .unwrap();
            }
            if rep == 2 {
                println!(
                    "{name}: {:.1} us per job",
                    t.elapsed().as_secs_f64() * 1e6 / (iters * jobs) as f64
                );
            }
        }
    };
    // 64 separate dispatches, one bind group each.
    let p1 = pipe(SAXPY, "main");
    let groups: Vec<_> = (0..jobs)
        .map(|j| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &p1.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &a,
                            offset: 0,
                            size: wgpu::BufferSize::new(4),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &x,
                            offset: (j * n * 4) as u64,
                            size: wgpu::BufferSize::new((n * 4) as u64),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &y,
                            offset: (j * n * 4) as u64,
                            size: wgpu::BufferSize::new((n * 4) as u64),
                        }),
                    },
                ],
            })
        })
        .collect();
    time("separate", &|p| {
        p.set_pipeline(&p1);
        for g in &groups {
            p.set_bind_group(0, g, &[]);
            p.dispatch_workgroups((n as u32).div_ceil(256), 1, 1);
        }
    });
    // Ceiling.
    let csrc = std::env::var("CEIL")
        .map(|f| std::fs::read_to_string(f).unwrap())
        .unwrap_or(CEIL.into());
    let p2 = pipe(&csrc, "main");
    let table: Vec<u32> = (0..jobs)
        .flat_map(|j| [(j * n) as u32, (j * n) as u32, n as u32, 2.0f32.to_bits()])
        .collect();
    let tb = init(bytemuck::cast_slice(&table), U::STORAGE);
    let g2 = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &p2.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: tb.as_entire_binding(),
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
    time("ceiling", &|p| {
        p.set_pipeline(&p2);
        p.set_bind_group(0, &g2, &[]);
        p.dispatch_workgroups((n as u32).div_ceil(256), 1, jobs as u32);
    });
    // Fused kernels, interleaved: median of 7 rounds.
    let files: Vec<String> = std::env::var("FUSED")
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let wg = (n as u32).div_ceil(256);
    let mut t: Vec<u32> = vec![
        wg * jobs as u32,
        jobs as u32,
        (n * jobs) as u32,
        (n * jobs) as u32,
    ];
    for j in 0..jobs as u32 {
        t.extend([wg, 1, 1, j * n as u32, n as u32, j * n as u32, n as u32]);
    }
    for j in 0..jobs as u32 {
        for w in 0..wg {
            t.extend([j, w, 0, 0]);
        }
    }
    t.resize(16384, 0);
    let tb3 = init(bytemuck::cast_slice(&t), U::STORAGE | U::UNIFORM);
    let setups: Vec<_> = files
        .iter()
        .map(|f| {
            let p3 = pipe(
                &std::fs::read_to_string(format!("/tmp/exp/{f}.wgsl")).unwrap(),
                "wgpu_batch_fused",
            );
            let g3 = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &p3.get_bind_group_layout(0),
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
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: tb3.as_entire_binding(),
                    },
                ],
            });
            (p3, g3)
        })
        .collect();
    let mut samples = vec![Vec::new(); files.len()];
    for _ in 0..7 {
        for (k, (p3, g3)) in setups.iter().enumerate() {
            let t0 = Instant::now();
            for _ in 0..10 {
                let mut enc = device.create_command_encoder(&Default::default());
                {
                    let mut p = enc.begin_compute_pass(&Default::default());
                    p.set_pipeline(p3);
                    p.set_bind_group(0, g3, &[]);
                    p.dispatch_workgroups(wg * jobs as u32, 1, 1);
                }
                let i = queue.submit([enc.finish()]);
                device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(i),
                        timeout: None,
                    })
                    .unwrap();
            }
            samples[k].push(t0.elapsed().as_secs_f64() * 1e6 / (10 * jobs) as f64);
        }
    }
    for (f, mut v) in files.iter().zip(samples) {
        v.sort_by(f64::total_cmp);
        println!("{f}: {:.1} us per job (min {:.1})", v[3], v[0]);
    }
}
