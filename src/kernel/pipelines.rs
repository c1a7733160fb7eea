//! One device's pipeline cache: a compute pipeline per kernel, built on first use (normally at
//! [`Engine::kernel`](crate::Engine::kernel)) and evicted once the kernel is dropped.
//!
//! A kernel can have two pipelines: one whose bindings all take dynamic offsets, so the jobs
//! of a batch that bind the same buffers at different offsets share one bind group (see
//! `batch/mod.rs`), and one with plain bindings, for kernels with more bindings than the device
//! allows dynamic offsets for, for engines built with `shared_bind_groups(false)`, and for a
//! lone job whose arguments lie past the 4 GiB a dynamic offset can reach.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;

use crate::error::{Error, Result, scoped};
use crate::kernel::binding::{BindingInfo, BindingKind};
use crate::kernel::compile::{Kernel, KernelInner};
use crate::kernel::fusion::{Bounds, FUSED_ENTRY, TABLE_WORDS};
use crate::kernel::warm::DiskCache;

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

/// Which of a kernel's pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Variant {
    /// Every binding takes a dynamic offset.
    Dynamic,
    /// Plain bindings.
    Plain,
    /// The fused kernel (see `kernel/fusion.rs`), dynamic offsets where the device allows them.
    Fused,
}

/// A pipeline in the cache (built once: whoever comes first builds it, the others wait for
/// it), with a weak link to its kernel so dead kernels can be evicted.
struct Cached {
    pipeline: Arc<OnceLock<std::result::Result<Pipeline, Error>>>,
    kernel: Weak<KernelInner>,
}

/// The pipelines of one device.
pub(crate) struct PipelineCache {
    device: wgpu::Device,
    /// Whether the engine shares bind groups (`EngineBuilder::shared_bind_groups`).
    shared_bind_groups: bool,
    /// How the device bounds out-of-bounds accesses (see `device/probe.rs`); `None`: run nothing
    /// fused.
    bounds: Option<Bounds>,
    /// By (kernel id, variant); a fused pipeline that could not be built is cached as its
    /// error, so it is tried once. Taken to look up or insert a key's cell; pipelines are
    /// created outside it (in the cell, once per key), and nothing else is taken while it is
    /// held.
    map: Mutex<HashMap<(u64, Variant), Cached>>,
    /// wgpu's pipeline cache, kept on disk (`EngineBuilder::pipeline_cache_dir`).
    disk: Option<DiskCache>,
    /// Pipelines built so far (what the tests check: one per key).
    #[cfg(test)]
    built: std::sync::atomic::AtomicUsize,
}

impl PipelineCache {
    pub(crate) fn new(
        device: wgpu::Device,
        shared_bind_groups: bool,
        bounds: Option<Bounds>,
        disk: Option<DiskCache>,
    ) -> PipelineCache {
        PipelineCache {
            device,
            shared_bind_groups,
            bounds,
            map: Mutex::new(HashMap::new()),
            disk,
            #[cfg(test)]
            built: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Writes the on-disk pipeline cache if it changed (see `kernel/warm.rs`); a no-op without one.
    pub(crate) fn save(&self) {
        if let Some(disk) = &self.disk {
            disk.save();
        }
    }

    /// Whether `kernel`'s jobs bind with dynamic offsets on this device by default.
    pub(crate) fn dynamic_for(&self, kernel: &Kernel) -> bool {
        self.shared_bind_groups && fits_dynamic_offsets(kernel.bindings(), &self.device.limits())
    }

    /// `kernel`'s pipeline, created on the calling thread when missing. Inserting evicts the
    /// pipelines of kernels that no longer exist.
    pub(crate) fn get(&self, kernel: &Kernel, dynamic: bool) -> Result<Pipeline> {
        let variant = if dynamic {
            Variant::Dynamic
        } else {
            Variant::Plain
        };
        self.get_variant(kernel, variant)
    }

    /// `kernel`'s fused pipeline, if it has a fused form and this device can build it (a
    /// failure is logged once and the kernel then runs unfused here).
    pub(crate) fn fused(&self, kernel: &Kernel) -> Option<Pipeline> {
        let table = kernel.inner().fused.as_ref().ok()?.table;
        self.bounds?;
        let limits = self.device.limits();
        if limits.max_uniform_buffer_binding_size < 4 * u64::from(TABLE_WORDS)
            || table >= limits.max_bindings_per_bind_group
        {
            return None; // the job table does not fit, or has no binding number here
        }
        self.get_variant(kernel, Variant::Fused).ok()
    }

    /// The pipeline of `key`, built once: the first caller builds it (outside the map's
    /// lock), and a caller that comes meanwhile waits for that build instead of repeating it.
    fn get_variant(&self, kernel: &Kernel, variant: Variant) -> Result<Pipeline> {
        let key = (kernel.id(), variant);
        let cell = {
            let mut map = self.map.lock();
            match map.get(&key) {
                Some(c) => c.pipeline.clone(),
                None => {
                    map.retain(|_, c| c.kernel.strong_count() > 0);
                    let cell = Arc::new(OnceLock::new());
                    let cached = Cached {
                        pipeline: cell.clone(),
                        kernel: Arc::downgrade(kernel.inner()),
                    };
                    map.insert(key, cached);
                    cell
                }
            }
        };
        cell.get_or_init(|| self.create(kernel, variant)).clone()
    }

    /// Builds `kernel`'s `variant` pipeline on the calling thread.
    fn create(&self, kernel: &Kernel, variant: Variant) -> Result<Pipeline> {
        #[cfg(test)]
        self.built.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let on = On {
            device: &self.device,
            cache: self.disk.as_ref().map(DiskCache::cache),
        };
        let pipeline = match variant {
            Variant::Fused => {
                let bounds = self.bounds.unwrap_or(Bounds::ZeroSkip);
                create_fused(on, kernel, self.shared_bind_groups, bounds)
            }
            v => create(on, kernel, v == Variant::Dynamic),
        };
        if let (Variant::Fused, Err(e)) = (variant, &pipeline) {
            log::info!(
                "kernel `{}` runs unfused on this device: {e}",
                kernel.label()
            );
        }
        pipeline
    }
}

/// The fused kernel's pipeline: its bindings as the rewrite declares them, plus the job table.
fn create_fused(on: On<'_>, kernel: &Kernel, shared: bool, bounds: Bounds) -> Result<Pipeline> {
    let inner = kernel.inner();
    let fused = inner.fused.as_ref().map_err(|e| Error::Shader {
        kernel: inner.label.clone(),
        message: e.clone(),
    })?;
    let mut bindings: Vec<BindingInfo> = fused
        .bindings
        .iter()
        .map(|b| BindingInfo {
            binding: b.binding,
            name: String::new(),
            element: String::new(),
            kind: b.kind,
            fixed_size: 0,
            stride: None,
            min_size: 0,
        })
        .collect();
    bindings.push(BindingInfo {
        binding: fused.table,
        name: String::new(),
        element: String::new(),
        kind: BindingKind::Uniform,
        fixed_size: 0,
        stride: None,
        min_size: 0,
    });
    let dynamic = shared && fits_dynamic_offsets(&bindings, &on.device.limits());
    build(
        on,
        &inner.label,
        wgpu::ShaderSource::Wgsl(fused.source(bounds).to_owned().into()),
        FUSED_ENTRY,
        &[],
        &bindings,
        dynamic,
        inner.id,
    )
}

fn create(on: On<'_>, kernel: &Kernel, dynamic: bool) -> Result<Pipeline> {
    let inner = kernel.inner();
    let constants: Vec<(&str, f64)> = inner
        .constants
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let source = wgpu::ShaderSource::Naga(Cow::Owned((*inner.module).clone()));
    let (label, entry, bindings) = (&inner.label, &inner.entry_point, &inner.bindings);
    build(
        on, label, source, entry, &constants, bindings, dynamic, inner.id,
    )
}

/// Where a pipeline is built: the device, and the pipeline cache to build it with.
#[derive(Clone, Copy)]
struct On<'a> {
    device: &'a wgpu::Device,
    cache: Option<&'a wgpu::PipelineCache>,
}

/// A compute pipeline for `source`'s `entry`: with a layout whose every binding takes a
/// dynamic offset when `dynamic`, else wgpu's own layout.
#[allow(clippy::too_many_arguments)] // each is one thing the pipeline is made of
fn build(
    On { device, cache }: On<'_>,
    label: &str,
    source: wgpu::ShaderSource<'_>,
    entry: &str,
    constants: &[(&str, f64)],
    bindings: &[BindingInfo],
    dynamic: bool,
    kernel: u64,
) -> Result<Pipeline> {
    let (pipeline, err) = scoped(device, || {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source,
        });
        let explicit = dynamic.then(|| dynamic_layout(device, bindings));
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: explicit.as_ref().map(|(_, layout)| layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                ..Default::default()
            },
            cache,
        });
        let layout = match explicit {
            Some((group, _)) => Some(group),
            None => (!bindings.is_empty()).then(|| pipeline.get_bind_group_layout(0)),
        };
        Pipeline {
            pipeline,
            layout,
            dynamic,
            kernel,
        }
    });
    match err {
        Some(e) => Err(Error::Shader {
            kernel: label.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_asking_at_once_get_one_pipeline_built_once() {
        let (device, _queue) = wgpu::Device::noop(&Default::default());
        let cache = PipelineCache::new(device, true, None, None);
        let kernel = Kernel::compile(crate::kernels::saxpy()).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| cache.get(&kernel, true).unwrap());
            }
        });
        cache.get(&kernel, false).unwrap();
        let built = cache.built.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(built, 2, "one dynamic and one plain pipeline");
    }
}
