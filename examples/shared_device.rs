//! A desktop app's shape: the app owns the wgpu device (its renderer's), hands it to the
//! engine, steps a particle simulation with compute jobs on a resident buffer, then draws the
//! particles from that same buffer with its own render pipeline into an offscreen texture and
//! writes a PNG. Runs headless (lavapipe).
//!
//! `cargo run --release --example shared_device` writes `target/shared_device.png`.

use wgpu_batch::{Engine, Job, KernelSource, wgpu};

const PARTICLES: usize = 2048;
const STEPS: usize = 60;
const SIZE: u32 = 256;
const DT: f32 = 0.02;

/// One step: move by velocity, bounce off the walls of [-1, 1]^2. Particle = (x, y, vx, vy).
const STEP: &str = "
@group(0) @binding(0) var<uniform> dt: vec4<f32>;
@group(0) @binding(1) var<storage, read_write> p: array<vec4<f32>>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if g.x >= arrayLength(&p) { return; }
    var q = p[g.x];
    q.x = q.x + q.z * dt.x;
    q.y = q.y + q.w * dt.x;
    if abs(q.x) > 1.0 { q.z = -q.z; q.x = clamp(q.x, -1.0, 1.0); }
    if abs(q.y) > 1.0 { q.w = -q.w; q.y = clamp(q.y, -1.0, 1.0); }
    p[g.x] = q;
}";

/// The app's renderer: each particle a point, read straight from the particle buffer.
const DRAW: &str = "
@vertex fn vs(@location(0) p: vec4<f32>) -> @builtin(position) vec4<f32> {
    return vec4<f32>(p.xy, 0.0, 1.0);
}
@fragment fn fs() -> @location(0) vec4<f32> { return vec4<f32>(1.0, 0.8, 0.2, 1.0); }";

/// The same step on the CPU.
fn step_cpu(p: &mut [[f32; 4]]) {
    for q in p {
        q[0] += q[2] * DT;
        q[1] += q[3] * DT;
        for (pos, vel) in [(0, 2), (1, 3)] {
            if q[pos].abs() > 1.0 {
                q[vel] = -q[vel];
                q[pos] = q[pos].clamp(-1.0, 1.0);
            }
        }
    }
}

fn initial() -> Vec<[f32; 4]> {
    let mut s = 0x9E37_79B9u32;
    let mut r = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
    };
    (0..PARTICLES)
        .map(|_| [r() * 0.9, r() * 0.9, r(), r()])
        .collect()
}

/// What the app made: the final particles (GPU and CPU) and the RGBA image.
struct Frame {
    gpu: Vec<[f32; 4]>,
    cpu: Vec<[f32; 4]>,
    pixels: Vec<u8>,
}

fn run() -> Result<Frame, Box<dyn std::error::Error>> {
    // The app's own device, as its renderer would open it.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))?;
    let engine = Engine::builder()
        .with_device(&adapter, device.clone(), queue.clone())
        .build()?;

    // The simulation, on a resident buffer the renderer can also use as a vertex buffer.
    let mut cpu = initial();
    let particles = engine.upload_with_usage(0, &cpu, wgpu::BufferUsages::VERTEX)?;
    let step = engine.kernel(KernelSource::wgsl("step", STEP))?;
    for _ in 0..STEPS {
        let job = Job::new(&step)
            .uniform(0, &[DT, 0.0, 0.0, 0.0])
            .buffer(1, &particles)
            .workgroups_for(PARTICLES);
        engine.run(job)?; // resolved: its writes are done before the app's next submit
        step_cpu(&mut cpu);
    }
    let gpu: Vec<[f32; 4]> = engine.read(&particles)?;

    // The app's draw, reading the engine's buffer.
    let vertices = particles.wgpu_buffer(0).ok_or("no copy on device 0")?;
    let pixels = draw(&device, &queue, &vertices)?;
    Ok(Frame { gpu, cpu, pixels })
}

/// Draws every particle as a point into a `SIZE` x `SIZE` texture; returns its RGBA bytes.
fn draw(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    vertices: &wgpu::Buffer,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let format = wgpu::TextureFormat::Rgba8Unorm;
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("frame"),
        size: wgpu::Extent3d {
            width: SIZE,
            height: SIZE,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("draw"),
        source: wgpu::ShaderSource::Wgsl(DRAW.into()),
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("points"),
        layout: None,
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[Some(wgpu::VertexBufferLayout {
                array_stride: 16,
                step_mode: wgpu::VertexStepMode::Vertex,
                attributes: &wgpu::vertex_attr_array![0 => Float32x4],
            })],
        },
        primitive: wgpu::PrimitiveState {
            topology: wgpu::PrimitiveTopology::PointList,
            ..Default::default()
        },
        depth_stencil: None,
        multisample: Default::default(),
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs"),
            compilation_options: Default::default(),
            targets: &[Some(format.into())],
        }),
        multiview_mask: None,
        cache: None,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("frame readback"),
        size: u64::from(SIZE * SIZE * 4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let view = target.create_view(&Default::default());
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("points"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            ..Default::default()
        });
        pass.set_pipeline(&pipeline);
        pass.set_vertex_buffer(0, vertices.slice(..));
        pass.draw(0..PARTICLES as u32, 0..1);
    }
    enc.copy_texture_to_buffer(
        target.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(SIZE * 4),
                rows_per_image: None,
            },
        },
        target.size(),
    );
    queue.submit([enc.finish()]);
    readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let pixels = readback.get_mapped_range(..)?.to_vec();
    readback.unmap();
    Ok(pixels)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let frame = run()?;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/shared_device.png");
    let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut png = png::Encoder::new(file, SIZE, SIZE);
    png.set_color(png::ColorType::Rgba);
    png.set_depth(png::BitDepth::Eight);
    png.write_header()?.write_image_data(&frame.pixels)?;
    let lit = frame.pixels.chunks(4).filter(|p| p[0] > 0).count();
    let off = (frame.gpu.iter().zip(&frame.cpu))
        .flat_map(|(g, c)| g.iter().zip(c).map(|(a, b)| (a - b).abs()))
        .fold(0.0f32, f32::max);
    println!(
        "{PARTICLES} particles, {STEPS} compute steps on the app's device (largest difference \
         from the CPU {off:e}); {lit} pixels lit; wrote {}",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_draws_what_the_engine_computed() {
        let frame = run().expect("a GPU or lavapipe");
        // The simulation matches the CPU (a fused multiply-add may round differently).
        for (g, c) in frame.gpu.iter().zip(&frame.cpu) {
            assert!(
                g.iter().zip(c).all(|(a, b)| (a - b).abs() < 1e-3),
                "{g:?} vs {c:?}"
            );
        }
        // The image is not empty, and it shows the particles where the engine left them: the
        // draw was submitted after the last job resolved, so it read the final positions.
        let lit = |x: f32, y: f32| {
            let px = (((x + 1.0) / 2.0 * SIZE as f32) as u32).min(SIZE - 1);
            let py = (((1.0 - y) / 2.0 * SIZE as f32) as u32).min(SIZE - 1);
            frame.pixels[((py * SIZE + px) * 4) as usize] > 0
        };
        let shown = frame.gpu.iter().filter(|p| lit(p[0], p[1])).count();
        assert!(
            shown * 10 >= PARTICLES * 9,
            "{shown} of {PARTICLES} final positions lit"
        );
        let initial_only = initial().iter().filter(|p| lit(p[0], p[1])).count();
        assert!(
            initial_only < shown,
            "the frame shows the start, not the end"
        );
    }
}
