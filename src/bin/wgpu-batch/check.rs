//! `wgpu-batch check kernel.wgsl`: validates a kernel with naga on the CPU (no device needed)
//! and prints what the runtime reflects from it: entry point, workgroup size and memory, every
//! binding with its size rule, and whether its jobs fuse. `--device` also builds the pipeline
//! on the adapters, which catches device limits naga cannot know.

use std::path::PathBuf;

use wgpu_batch::wgpu::naga;
use wgpu_batch::{BindingKind, Engine, Kernel, KernelSource, Shape};

use crate::table::{Align, Table, bytes};
use crate::{Backend, Failure, Result, emit, fail};

/// Arguments of `check`.
#[derive(clap::Args)]
pub struct Args {
    /// The WGSL file to check.
    file: PathBuf,
    /// The @compute entry point; needed only when the module has several.
    #[arg(long, value_name = "NAME")]
    entry: Option<String>,
    /// A value for an `override` constant, by name or @id number (repeatable). Booleans
    /// take true/false.
    #[arg(long = "constant", value_name = "NAME=VALUE", value_parser = parse_constant)]
    constants: Vec<(String, f64)>,
    /// Also build the pipeline on every adapter (as the engine does), reporting device limits
    /// such as too much workgroup memory.
    #[arg(long)]
    device: bool,
    /// With --device: the backend to open (default: WGPU_BACKEND, else every backend).
    #[arg(long, value_enum, requires = "device")]
    backend: Option<Backend>,
}

/// `NAME=VALUE`, VALUE a number or true/false (overrides take f64, booleans as 0 or 1).
fn parse_constant(text: &str) -> std::result::Result<(String, f64), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{text}` has no name before `=`"));
    }
    let value = match value.trim() {
        "true" => 1.0,
        "false" => 0.0,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("`{v}` is not a number (nor true/false)"))?,
    };
    Ok((name.to_owned(), value))
}

/// Checks the file; a broken kernel prints naga's located report and fails.
pub fn run(args: &Args) -> Result<()> {
    let path = args.file.display().to_string();
    let source = std::fs::read_to_string(&args.file)
        .map_err(|e| fail(format!("cannot read kernel file `{path}`: {e}")))?;
    let label = args
        .file
        .file_name()
        .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned());
    let mut src = KernelSource::wgsl(label, source.clone());
    if let Some(entry) = &args.entry {
        src = src.entry_point(entry.as_str());
    }
    for (name, value) in &args.constants {
        src = src.constant(name.as_str(), *value);
    }
    let kernel = match Kernel::compile(src.clone()) {
        Ok(k) => k,
        Err(e) => return Err(located(&source, &path, e)),
    };
    emit(&describe(&kernel, &path))?;
    if args.device {
        on_devices(src, args.backend)?;
    }
    Ok(())
}

/// The compile error with the file's own path in its location. The library reports naga's
/// diagnostic against the name `wgsl`, so a parse or validation error is reproduced here with
/// naga against the real path (`file.wgsl:3:5` and the source excerpt); other errors (no such
/// entry point, a bad override) have no location and print as they are.
/// Only a located report (naga's, against `wgsl:`) is reproduced, and on a thread with the
/// library's large stack: the source parsed once already, so it parses again the same way.
fn located(source: &str, path: &str, error: wgpu_batch::Error) -> Failure {
    let naga_report =
        matches!(&error, wgpu_batch::Error::Shader { message, .. } if message.contains("wgsl:"));
    let report = naga_report
        .then(|| {
            std::thread::scope(|s| {
                let reparse = std::thread::Builder::new()
                    .stack_size(256 << 20)
                    .spawn_scoped(s, || report(source, path));
                reparse.ok().and_then(|t| t.join().ok()).flatten()
            })
        })
        .flatten();
    match (report, error) {
        (Some(text), _) => {
            // naga's report already starts with `error:`.
            eprintln!("{}", text.trim_end_matches('\n'));
            Failure::Reported
        }
        // The kernel's label is the file name, already in `path`.
        (None, wgpu_batch::Error::Shader { message, .. }) => fail(format!("{path}: {message}")),
        (None, other) => fail(format!("{path}: {other}")),
    }
}

/// naga's report on `source`, located against `path`; `None` when naga finds no fault.
fn report(source: &str, path: &str) -> Option<String> {
    match naga::front::wgsl::parse_str(source) {
        Err(e) => Some(e.emit_to_string_with_path(source, path)),
        Ok(module) => naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .err()
        .map(|e| e.emit_to_string_with_path(source, path)),
    }
}

/// The reflection, as aligned lines and a bindings table.
fn describe(kernel: &Kernel, path: &str) -> String {
    let [x, y, z] = kernel.workgroup_size();
    let invocations = u64::from(x) * u64::from(y) * u64::from(z);
    let mut out = format!(
        "kernel:           {} ({path})\n\
         entry point:      {}\n\
         workgroup size:   {x} x {y} x {z} ({invocations} invocations)\n\
         workgroup memory: {}\n",
        kernel.label(),
        kernel.entry_point(),
        memory(kernel.workgroup_memory()),
    );
    if kernel.bindings().is_empty() {
        out += "bindings:         none\n";
    } else {
        out += "bindings:\n";
        out += &indent(&bindings(kernel).plain(), "  ");
    }
    match kernel.unfused_reason() {
        None => out += &format!("fuses: yes\n{}", fused_shapes(kernel)),
        Some(reason) => out += &format!("fuses: no — {reason}\n"),
    }
    out
}

/// "0 bytes", "512 bytes", "65,536 bytes (64 KiB)".
fn memory(n: u64) -> String {
    let exact = format!("{} bytes", crate::table::count(n));
    if n < 1024 {
        exact
    } else {
        format!("{exact} ({})", bytes(n))
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// One row per `@group(0)` binding: kind and the sizes a buffer bound there may have.
fn bindings(kernel: &Kernel) -> Table {
    let mut t = Table::new(&[
        ("binding", Align::Right),
        ("kind", Align::Left),
        ("fixed size", Align::Right),
        ("element stride", Align::Right),
        ("min binding size", Align::Right),
    ]);
    for b in kernel.bindings() {
        t.row(vec![
            b.binding.to_string(),
            kind(b.kind).to_owned(),
            bytes(b.fixed_size),
            b.stride.map_or_else(|| "-".to_owned(), bytes),
            bytes(b.min_size),
        ]);
    }
    t
}

fn kind(k: BindingKind) -> &'static str {
    match k {
        BindingKind::Uniform => "uniform",
        BindingKind::StorageRead => "storage, read",
        BindingKind::StorageReadWrite => "storage, read_write",
    }
}

/// How each binding's jobs share it in the fused dispatch, one indented line per binding.
fn fused_shapes(kernel: &Kernel) -> String {
    let Some(fused) = kernel.fused_bindings() else {
        return String::new();
    };
    fused
        .iter()
        .map(|f| match f.shape {
            Shape::Slice { stride, .. } => format!(
                "  binding {}: each job's slice of {stride}-byte elements, back to back\n",
                f.binding
            ),
            Shape::PerJob { stride } => {
                format!(
                    "  binding {}: one {stride}-byte element per job\n",
                    f.binding
                )
            }
        })
        .collect()
}

/// Builds the kernel's pipelines on the adapters the engine opens, and says where.
fn on_devices(src: KernelSource, backend: Option<Backend>) -> Result<()> {
    let mut builder = Engine::builder();
    if let Some(b) = backend {
        builder = builder.backends(b.backends());
    }
    let engine = builder.build()?;
    let devices = engine.devices();
    match engine.kernel(src) {
        Ok(_) => {
            let mut out = String::new();
            for d in &devices {
                out += &format!(
                    "device {}: pipeline built on {} ({})\n",
                    d.index,
                    d.adapter,
                    d.backend.to_str()
                );
            }
            emit(&out)
        }
        Err(e) => {
            let names: Vec<String> = devices
                .iter()
                .map(|d| format!("{} ({})", d.adapter, d.backend.to_str()))
                .collect();
            Err(fail(format!("on {}: {e}", names.join(", "))))
        }
    }
}
