//! One device's pipeline cache: a compute pipeline per kernel, built on first use (normally at
//! [`Engine::kernel`](crate::Engine::kernel)) and evicted once the kernel is dropped.
//!
//! A kernel can have two pipelines: one whose bindings all take dynamic offsets, so the jobs
//! of a batch that bind the same buffers at different offsets share one bind group (see
//! `batch.rs`), and one with plain bindings, for kernels with more bindings than the device
//! allows dynamic offsets for, for engines built with `shared_bind_groups(false)`, and for a
//! lone job whose arguments lie past the 4 GiB a dynamic offset can reach.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::{Error, Result, scoped};
use crate::kernel::{BindingInfo, BindingKind, Kernel, KernelInner};

/// A pipeline ready to bind: what encoding one step needs from the cache.
#[derive(Clone)]
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    /// `None` for a kernel without bindings.
    pub(crate) layout: Option<wgpu::BindGroupLayout>,
    /// Every binding takes a dynamic offset.
    pub(crate) dynamic: bool,
    /// The kernel's id: with the bound buffers and sizes, the key of a shared bind group.
    pub(crate) kernel: u64,
}

/// A pipeline in the cache, with a weak link to its kernel so dead kernels can be evicted.
struct Cached {
    pipeline: Pipeline,
    kernel: Weak<KernelInner>,
}

/// The pipelines of one device.
pub(crate) struct PipelineCache {
    device: wgpu::Device,
    /// Whether the engine shares bind groups (`EngineBuilder::shared_bind_groups`).
    shared_bind_groups: bool,
    /// By (kernel id, dynamic offsets). Taken to look up or insert; pipelines are created
    /// outside it, and nothing else is taken while it is held.
    map: Mutex<HashMap<(u64, bool), Cached>>,
}

impl PipelineCache {
    pub(crate) fn new(device: wgpu::Device, shared_bind_groups: bool) -> PipelineCache {
        PipelineCache {
            device,
            shared_bind_groups,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `kernel`'s jobs bind with dynamic offsets on this device by default.
    pub(crate) fn dynamic_for(&self, kernel: &Kernel) -> bool {
        self.shared_bind_groups && fits_dynamic_offsets(kernel.bindings(), &self.device.limits())
    }

    /// `kernel`'s pipeline, created on the calling thread when missing. Inserting evicts the
    /// pipelines of kernels that no longer exist.
    pub(crate) fn get(&self, kernel: &Kernel, dynamic: bool) -> Result<Pipeline> {
        let key = (kernel.id(), dynamic);
        if let Some(c) = self.map.lock().get(&key) {
            return Ok(c.pipeline.clone());
        }
        let pipeline = create(&self.device, kernel, dynamic)?;
        let mut map = self.map.lock();
        map.retain(|_, c| c.kernel.strong_count() > 0);
        let cached = Cached {
            pipeline: pipeline.clone(),
            kernel: Arc::downgrade(kernel.inner()),
        };
        map.insert(key, cached);
        Ok(pipeline)
    }
}

fn create(device: &wgpu::Device, kernel: &Kernel, dynamic: bool) -> Result<Pipeline> {
    let inner = kernel.inner();
    let constants: Vec<(&str, f64)> = inner
        .constants
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let (pipeline, err) = scoped(device, || {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&inner.label),
            source: wgpu::ShaderSource::Wgsl(inner.source.clone()),
        });
        let explicit = dynamic.then(|| dynamic_layout(device, &inner.bindings));
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&inner.label),
            layout: explicit.as_ref().map(|(_, layout)| layout),
            module: &module,
            entry_point: Some(&inner.entry_point),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                ..Default::default()
            },
            cache: None,
        });
        let layout = match explicit {
            Some((group, _)) => Some(group),
            None => (!inner.bindings.is_empty()).then(|| pipeline.get_bind_group_layout(0)),
        };
        Pipeline {
            pipeline,
            layout,
            dynamic,
            kernel: inner.id,
        }
    });
    match err {
        Some(e) => Err(Error::Shader {
            kernel: inner.label.clone(),
            message: e.to_string(),
        }),
        None => Ok(pipeline),
    }
}

/// Whether every binding of a kernel can take a dynamic offset on this device.
fn fits_dynamic_offsets(bindings: &[BindingInfo], limits: &wgpu::Limits) -> bool {
    let uniforms = bindings
        .iter()
        .filter(|b| b.kind == BindingKind::Uniform)
        .count();
    let storage = bindings.len() - uniforms;
    let fits = |n: usize, limit: u32| u32::try_from(n).is_ok_and(|n| n <= limit);
    !bindings.is_empty()
        && fits(
            uniforms,
            limits.max_dynamic_uniform_buffers_per_pipeline_layout,
        )
        && fits(
            storage,
            limits.max_dynamic_storage_buffers_per_pipeline_layout,
        )
}

/// A bind group layout with a dynamic offset on every binding, and its pipeline layout.
fn dynamic_layout(
    device: &wgpu::Device,
    bindings: &[BindingInfo],
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|b| wgpu::BindGroupLayoutEntry {
            binding: b.binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b.kind {
                    BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                    BindingKind::StorageRead => {
                        wgpu::BufferBindingType::Storage { read_only: true }
                    }
                    BindingKind::StorageReadWrite => {
                        wgpu::BufferBindingType::Storage { read_only: false }
                    }
                },
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &entries,
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&group)],
        immediate_size: 0,
    });
    (group, layout)
}
