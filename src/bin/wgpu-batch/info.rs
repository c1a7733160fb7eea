//! `wgpu-batch info`: every adapter wgpu can see, as three tables that fit a 100-column
//! terminal: identity (one row per adapter), compute limits (one column per adapter) and the
//! compute-relevant features each adapter has.

use wgpu_batch::wgpu;

use crate::table::{Align, Table, bytes, count, wrap};
use crate::{Backend, INSTALL_HINT, Result, emit};

/// Arguments of `info`.
#[derive(clap::Args)]
pub struct Args {
    /// Print markdown tables (for issues and READMEs) instead of aligned columns.
    #[arg(long)]
    markdown: bool,
    /// Only this backend's adapters (default: every backend; noop only when named).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
}

/// What a limit's value counts, for formatting.
#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Count,
}

/// Reads one limit, widened to u64.
type Getter = fn(&wgpu::Limits) -> u64;

/// The limits that bound compute work, in the order a kernel author meets them.
const LIMITS: &[(&str, Unit, Getter)] = &[
    ("max_storage_buffer_binding_size", Unit::Bytes, |l| {
        l.max_storage_buffer_binding_size
    }),
    ("max_buffer_size", Unit::Bytes, |l| l.max_buffer_size),
    ("max_compute_workgroup_storage_size", Unit::Bytes, |l| {
        l.max_compute_workgroup_storage_size.into()
    }),
    ("max_compute_invocations_per_workgroup", Unit::Count, |l| {
        l.max_compute_invocations_per_workgroup.into()
    }),
    ("max_compute_workgroup_size_x", Unit::Count, |l| {
        l.max_compute_workgroup_size_x.into()
    }),
    ("max_compute_workgroup_size_y", Unit::Count, |l| {
        l.max_compute_workgroup_size_y.into()
    }),
    ("max_compute_workgroup_size_z", Unit::Count, |l| {
        l.max_compute_workgroup_size_z.into()
    }),
    ("max_compute_workgroups_per_dimension", Unit::Count, |l| {
        l.max_compute_workgroups_per_dimension.into()
    }),
    ("max_storage_buffers_per_shader_stage", Unit::Count, |l| {
        l.max_storage_buffers_per_shader_stage.into()
    }),
    (
        "max_dynamic_storage_buffers_per_pipeline_layout",
        Unit::Count,
        |l| l.max_dynamic_storage_buffers_per_pipeline_layout.into(),
    ),
];

/// Features a compute kernel or the runtime can use; only those an adapter has are listed.
const FEATURES: &[(&str, wgpu::Features)] = &[
    ("SHADER_F16", wgpu::Features::SHADER_F16),
    ("SHADER_F64", wgpu::Features::SHADER_F64),
    ("SHADER_I16", wgpu::Features::SHADER_I16),
    ("SHADER_INT64", wgpu::Features::SHADER_INT64),
    (
        "SHADER_INT64_ATOMIC_MIN_MAX",
        wgpu::Features::SHADER_INT64_ATOMIC_MIN_MAX,
    ),
    (
        "SHADER_INT64_ATOMIC_ALL_OPS",
        wgpu::Features::SHADER_INT64_ATOMIC_ALL_OPS,
    ),
    (
        "SHADER_FLOAT32_ATOMIC",
        wgpu::Features::SHADER_FLOAT32_ATOMIC,
    ),
    ("SUBGROUP", wgpu::Features::SUBGROUP),
    ("SUBGROUP_BARRIER", wgpu::Features::SUBGROUP_BARRIER),
    ("IMMEDIATES", wgpu::Features::IMMEDIATES),
    ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
    (
        "TIMESTAMP_QUERY_INSIDE_ENCODERS",
        wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
    ),
    (
        "TIMESTAMP_QUERY_INSIDE_PASSES",
        wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
    ),
    (
        "PIPELINE_STATISTICS_QUERY",
        wgpu::Features::PIPELINE_STATISTICS_QUERY,
    ),
    ("PIPELINE_CACHE", wgpu::Features::PIPELINE_CACHE),
    (
        "MAPPABLE_PRIMARY_BUFFERS",
        wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
    ),
    ("BUFFER_BINDING_ARRAY", wgpu::Features::BUFFER_BINDING_ARRAY),
    (
        "STORAGE_RESOURCE_BINDING_ARRAY",
        wgpu::Features::STORAGE_RESOURCE_BINDING_ARRAY,
    ),
    (
        "EXPERIMENTAL_COOPERATIVE_MATRIX",
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
    ),
];

/// Lists every adapter except noop's (which exists only when asked for by name).
pub fn run(args: &Args) -> Result<()> {
    let backends = args.backend.map_or_else(
        || wgpu::Backends::all() - wgpu::Backends::NOOP,
        Backend::backends,
    );
    let found = crate::adapters(backends);
    if found.is_empty() {
        eprintln!("error: no adapter found\nhint: {INSTALL_HINT}");
        return Err(crate::Failure::Reported);
    }
    let md = args.markdown;
    let mut out = String::new();
    out += heading("Adapters", md).trim_start();
    out += &identity(&found).render(md);
    out += &heading("Compute limits", md);
    out += &limits(&found).render(md);
    out += &heading("Compute features", md);
    out += &features(&found, md);
    emit(&out)
}

fn heading(title: &str, markdown: bool) -> String {
    if markdown {
        format!("\n### {title}\n\n")
    } else {
        format!("\n{title}\n\n")
    }
}

/// One row per adapter: who it is and whether it can run compute at all.
fn identity(found: &[wgpu::Adapter]) -> Table {
    let mut t = Table::new(&[
        ("#", Align::Right),
        ("adapter", Align::Left),
        ("backend", Align::Left),
        ("type", Align::Left),
        ("compute", Align::Left),
        ("driver", Align::Left),
    ]);
    for (i, adapter) in found.iter().enumerate() {
        let info = adapter.get_info();
        let driver = format!("{} {}", info.driver, info.driver_info);
        let compute = adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS);
        t.row(vec![
            i.to_string(),
            info.name,
            info.backend.to_str().to_owned(),
            device_type(info.device_type).to_owned(),
            if compute { "yes" } else { "no" }.to_owned(),
            match driver.trim() {
                "" => "-".to_owned(),
                d => d.to_owned(),
            },
        ]);
    }
    t
}

fn device_type(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::Other => "other",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Cpu => "CPU",
    }
}

/// One row per limit, one column per adapter: the limits are the long part, and adapters are
/// few, so this stays narrow where a row per adapter would be ten columns wide.
fn limits(found: &[wgpu::Adapter]) -> Table {
    let headers: Vec<String> = (0..found.len()).map(|i| format!("#{i}")).collect();
    let mut columns = vec![("limit", Align::Left)];
    columns.extend(headers.iter().map(|h| (h.as_str(), Align::Right)));
    let mut t = Table::new(&columns);
    let all: Vec<wgpu::Limits> = found.iter().map(wgpu::Adapter::limits).collect();
    for (name, unit, get) in LIMITS {
        let mut row = vec![(*name).to_owned()];
        row.extend(all.iter().map(|l| match unit {
            Unit::Bytes => bytes(get(l)),
            Unit::Count => count(get(l)),
        }));
        t.row(row);
    }
    t
}

/// Per adapter, the features of [`FEATURES`] it has, wrapped to 100 columns.
fn features(found: &[wgpu::Adapter], markdown: bool) -> String {
    let present = |a: &wgpu::Adapter| -> Vec<String> {
        let have = a.features();
        FEATURES
            .iter()
            .filter(|(_, f)| have.contains(*f))
            .map(|(name, _)| (*name).to_owned())
            .collect()
    };
    if markdown {
        let mut t = Table::new(&[("#", Align::Right), ("features", Align::Left)]);
        for (i, a) in found.iter().enumerate() {
            t.row(vec![i.to_string(), or_none(present(a)).join(", ")]);
        }
        return t.render(true);
    }
    let mut out = String::new();
    for (i, a) in found.iter().enumerate() {
        out += &format!("#{i} {}:\n", a.get_info().name);
        out += &wrap(&or_none(present(a)), "    ", 100);
    }
    out
}

fn or_none(list: Vec<String>) -> Vec<String> {
    if list.is_empty() {
        vec!["(none of the compute features)".to_owned()]
    } else {
        list
    }
}
