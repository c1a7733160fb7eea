//! Finding adapters and opening devices, under the one process-wide lock.
//!
//! [`ENUMERATION`] serializes instance creation, adapter enumeration and device requests
//! across every engine of the process: drivers are least tested (and some are not safe) when
//! several threads enumerate or open devices at once, and engines built at once on several
//! threads then open their devices one at a time. It is taken only in
//! [`EngineBuilder::build`](crate::EngineBuilder::build) and when a lost device is reopened
//! (`station.rs`), never on the submit path, and nothing else is taken while it is held.

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// The one global lock (see the module docs).
static ENUMERATION: Mutex<()> = Mutex::new(());

/// How to get a software adapter, for every "no adapter" message.
pub(crate) const INSTALL_HINT: &str = "on Debian/Ubuntu without a GPU, `apt-get install \
     mesa-vulkan-drivers` provides the lavapipe software Vulkan adapter";

/// Runs `f` under the enumeration lock.
pub(crate) fn enumerating<T>(f: impl FnOnce() -> T) -> T {
    let _guard = ENUMERATION.lock();
    #[cfg(feature = "test-hooks")]
    let _inside = hooks::Inside::enter();
    f()
}

/// Test hooks: how many threads have been inside the enumeration lock at once.
#[cfg(feature = "test-hooks")]
pub(crate) mod hooks {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static INSIDE: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    /// Counts a thread inside the lock while it lives.
    pub(crate) struct Inside;

    impl Inside {
        pub(crate) fn enter() -> Inside {
            let now = INSIDE.fetch_add(1, Ordering::SeqCst) + 1;
            MOST.fetch_max(now, Ordering::SeqCst);
            Inside
        }
    }

    impl Drop for Inside {
        fn drop(&mut self) {
            INSIDE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The most threads ever inside at once.
    pub(crate) fn most() -> usize {
        MOST.load(Ordering::SeqCst)
    }
}

/// Lists adapters for `backends` and keeps those that match `filter` and can run compute.
pub(crate) fn pick_adapters(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    filter: Option<&str>,
) -> Result<Vec<wgpu::Adapter>> {
    let all = pollster::block_on(instance.enumerate_adapters(backends));
    let names: Vec<String> = all.iter().map(|a| describe(&a.get_info())).collect();
    let needle = filter.map(str::to_lowercase);
    let picked: Vec<wgpu::Adapter> = all
        .into_iter()
        .filter(|a| {
            needle
                .as_ref()
                .is_none_or(|n| a.get_info().name.to_lowercase().contains(n))
        })
        .filter(|a| {
            let ok = a
                .get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS);
            if !ok {
                log::warn!("skipping {}: no compute shaders", describe(&a.get_info()));
            }
            ok
        })
        .collect();
    if picked.is_empty() {
        let found = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join("; ")
        };
        let wanted = filter
            .map(|f| format!(" matching name `{f}`"))
            .unwrap_or_default();
        return Err(Error::NoAdapter(format!(
            "no compute-capable adapter{wanted} for backends {backends:?} (adapters found: {found}); {INSTALL_HINT}"
        )));
    }
    Ok(picked)
}

/// Every compute-capable adapter for `backends` (under the enumeration lock; no device is
/// opened).
pub(crate) fn list(backends: wgpu::Backends) -> Result<Vec<wgpu::AdapterInfo>> {
    enumerating(|| {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        match pick_adapters(&instance, backends, None) {
            Ok(found) => Ok(found.iter().map(wgpu::Adapter::get_info).collect()),
            Err(Error::NoAdapter(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    })
}

pub(crate) fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// Opens a device on `adapter` (under the enumeration lock, with the caller holding it).
pub(crate) fn request_device(
    adapter: &wgpu::Adapter,
    gpu_timing: bool,
    map_storage: Option<bool>,
    pipeline_cache: bool,
) -> Result<(wgpu::Device, wgpu::Queue)> {
    let mut features = wgpu::Features::empty();
    if pipeline_cache {
        features |= adapter.features() & wgpu::Features::PIPELINE_CACHE;
    }
    if gpu_timing {
        features |= timing_features(adapter);
    }
    if maps_storage(adapter, map_storage) {
        features |= wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
    }
    let desc = wgpu::DeviceDescriptor {
        label: Some("wgpu-batch"),
        required_features: features,
        required_limits: limits_for(adapter),
        ..Default::default()
    };
    pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::RequestDevice {
        adapter: adapter.get_info().name,
        message: e.to_string(),
    })
}

/// How the engine describes device `index`, opened on `adapter`.
pub(crate) fn device_info(
    adapter: &wgpu::Adapter,
    device: &wgpu::Device,
    index: usize,
) -> DeviceInfo {
    let info = adapter.get_info();
    let limits = device.limits();
    DeviceInfo {
        index,
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_owned(),
        adapter: info.name,
        backend: info.backend,
        device_type: info.device_type,
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        maps_storage: device
            .features()
            .contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        state: DeviceState::Up,
        generation: 0,
    }
}

/// Whether jobs on `adapter` get their own mapped, directly bound buffers (see `device/mapped.rs`):
/// when it can map storage buffers (`MAPPABLE_PRIMARY_BUFFERS`) and the setting asks for it,
/// or by default on adapters that share the host's memory (CPU and integrated GPUs), where a
/// mapped buffer is as fast to compute on as any.
pub(crate) fn maps_storage(adapter: &wgpu::Adapter, setting: Option<bool>) -> bool {
    let can = adapter
        .features()
        .contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS);
    let shared = matches!(
        adapter.get_info().device_type,
        wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu
    );
    can && setting.unwrap_or(shared)
}

/// The timestamp-query features for per-job GPU time (queries inside compute passes), those of
/// them the adapter has.
pub(crate) fn timing_features(adapter: &wgpu::Adapter) -> wgpu::Features {
    adapter.features() & crate::config::TIMING_FEATURES
}

/// Everything the adapter offers, so large jobs fit; except bind groups, which wgpu-core can
/// only track up to 8 of (the noop adapter reports more, and pipeline creation would panic).
pub(crate) fn limits_for(adapter: &wgpu::Adapter) -> wgpu::Limits {
    let mut limits = adapter.limits();
    limits.max_bind_groups = limits.max_bind_groups.min(8);
    limits
}

/// Description of one opened device, as [`Engine::devices`](crate::Engine::devices) reports it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The device's index: what [`Job::on_device`](crate::Job::on_device) and
    /// [`JobOutput::device`](crate::JobOutput::device) refer to.
    pub index: usize,
    /// The adapter's name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub adapter: String,
    /// The graphics API behind it.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, CPU, ...
    pub device_type: wgpu::DeviceType,
    /// The driver's name and version.
    pub driver: String,
    /// Largest storage buffer binding, in bytes.
    pub max_storage_binding: u64,
    /// Largest workgroup count per dimension.
    pub max_workgroups_per_dimension: u32,
    /// Whether jobs here keep their data in their own mapped buffers that the kernel uses
    /// directly (see [`EngineBuilder::map_storage`](crate::EngineBuilder::map_storage)).
    pub maps_storage: bool,
    /// Whether the device serves jobs now.
    pub state: DeviceState,
    /// How many times this position's device was reopened after a loss (0: the first one; see
    /// [`EngineBuilder::reopen_lost_devices`](crate::EngineBuilder::reopen_lost_devices)).
    pub generation: u32,
}

/// Whether a device serves jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// It takes jobs.
    Up,
    /// It was lost and a new device is on its way: being opened on its adapter, or, for an
    /// adopted device, awaited from the application
    /// ([`Engine::replace_device`](crate::Engine::replace_device)). Jobs that only it can take
    /// wait for it.
    Recovering,
    /// It was lost and is not coming back (reopening is off, failed, or its budget is spent).
    Down,
}

/// `adopted` if its device can run compute work; the error says why not.
pub(crate) fn computes(
    adopted: (wgpu::Adapter, wgpu::Device, wgpu::Queue),
) -> Result<(wgpu::Adapter, wgpu::Device, wgpu::Queue)> {
    let limits = adopted.1.limits();
    if limits.max_compute_workgroups_per_dimension == 0
        || limits.max_compute_invocations_per_workgroup == 0
    {
        return Err(Error::RequestDevice {
            adapter: adopted.0.get_info().name,
            message: "the device was opened without compute shaders (its limits allow no \
                      compute workgroups); request it with limits that do, such as \
                      `wgpu::Limits::downlevel_defaults()`"
                .into(),
        });
    }
    Ok(adopted)
}
