//! `wgpu-batch`, the runtime's command-line tool: `info` lists the adapters and the limits that
//! matter for compute, `check` validates and reflects a WGSL kernel on the CPU, and `bench`
//! measures SAXPY throughput of plain wgpu against the engine, unfused and fused.
//!
//! Every failure ends as one `error: ...` line on stderr (or naga's own located report for a
//! shader) and a nonzero exit status; bad input never panics.

mod bench;
mod chart;
mod check;
mod info;
mod plain;
mod report;
mod systems;
mod table;
#[cfg(feature = "nats")]
mod worker;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use wgpu_batch::wgpu;

/// The tool's arguments.
#[derive(Parser)]
#[command(
    name = "wgpu-batch",
    version,
    about = "Inspect adapters, check WGSL kernels and benchmark the wgpu-batch runtime",
    long_about = "Inspect adapters, check WGSL kernels and benchmark the wgpu-batch runtime.\n\n\
        Logging goes to stderr at `warn` by default; set RUST_LOG (e.g. RUST_LOG=info) for more. \
        `check --device` without --backend honours WGPU_BACKEND and WGPU_ADAPTER_NAME, as the \
        engine does."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter: identity, compute limits and compute-relevant features.
    Info(info::Args),
    /// Validate a WGSL kernel on the CPU and show its reflection (bindings, fusion).
    Check(check::Args),
    /// Measure SAXPY jobs/s: plain wgpu behind a lock vs the engine, unfused and fused.
    Bench(bench::Args),
    /// Serve jobs from a NATS JetStream queue on this host's engine (feature `nats`).
    #[cfg(feature = "nats")]
    Worker(worker::Args),
}

/// Why a command failed. The message is printed as `error: ...`; `Reported` means the command
/// already printed its own diagnostic (naga's located shader errors start with `error:` too).
#[derive(Debug)]
pub enum Failure {
    Message(String),
    Reported,
}

/// Shorthand for a command's result.
pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// A failure with this message.
pub fn fail(message: impl Into<String>) -> Failure {
    Failure::Message(message.into())
}

impl From<wgpu_batch::Error> for Failure {
    fn from(e: wgpu_batch::Error) -> Self {
        Failure::Message(e.to_string())
    }
}

/// The graphics APIs a command can be pointed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Vulkan (lavapipe, the software adapter, on machines without a GPU).
    Vulkan,
    /// OpenGL / GLES (llvmpipe without a GPU).
    Gl,
    /// Metal (macOS).
    Metal,
    /// Direct3D 12 (Windows).
    Dx12,
    /// wgpu's noop backend: accepts everything, executes nothing (host overhead only).
    Noop,
}

impl Backend {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Gl => wgpu::Backends::GL,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Noop => wgpu::Backends::NOOP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Vulkan => "vulkan",
            Backend::Gl => "gl",
            Backend::Metal => "metal",
            Backend::Dx12 => "dx12",
            Backend::Noop => "noop",
        }
    }
}

/// The hint printed wherever no adapter was found.
pub const INSTALL_HINT: &str = "no GPU? install the lavapipe software Vulkan adapter: \
    `sudo apt install mesa-vulkan-drivers` (Debian/Ubuntu)";

/// Every adapter of `backends`, in wgpu's order.
pub fn adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    pollster::block_on(plain::instance(backends).enumerate_adapters(backends))
}

/// Writes `text` to stdout. A closed pipe (`wgpu-batch info | head`) is not an error worth a
/// message, and `println!` would panic on it.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(fail(format!("writing to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Mesa's implicit device-select Vulkan layer talks to Wayland to order GPUs, and on a headless
/// machine (no `XDG_RUNTIME_DIR`) libwayland prints an `error:` line for every Vulkan instance.
/// wgpu-batch orders adapters itself, so there the layer is switched off, as the crate's
/// `.cargo/config.toml` does for everything cargo runs.
fn quiet_device_select() {
    let unset = |k: &str| std::env::var_os(k).is_none();
    if unset("NODEVICE_SELECT") && unset("XDG_RUNTIME_DIR") {
        // SAFETY: called first thing in `main`, before any thread exists that could read the
        // environment concurrently.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

fn main() -> ExitCode {
    quiet_device_select();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Bench(args) => bench::run(&args),
        #[cfg(feature = "nats")]
        Command::Worker(args) => worker::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Reported) => ExitCode::FAILURE,
    }
}
