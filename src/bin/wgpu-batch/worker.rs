//! `wgpu-batch worker`: serves jobs from a NATS JetStream queue on this host's engine (see
//! `wgpu_batch::remote`), until SIGTERM or Ctrl-C, then drains and exits 0.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use wgpu_batch::remote::{Queue, Worker, WorkerOptions};
use wgpu_batch::{Engine, KernelSource};

use crate::{Backend, Result, fail};

/// `wgpu-batch worker`'s arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long)]
    nats: String,
    /// A directory of WGSL kernels: each `NAME.wgsl` serves jobs that name `NAME`.
    #[arg(long)]
    kernels: PathBuf,
    /// The JetStream stream (created if missing).
    #[arg(long, default_value = "WGPU_BATCH")]
    stream: String,
    /// The subject jobs are published on.
    #[arg(long, default_value = "wgpu-batch.jobs")]
    subject: String,
    /// The durable consumer every worker shares.
    #[arg(long, default_value = "workers")]
    consumer: String,
    /// Most jobs held at once (lowered to the engine's queue capacity, 4,096 per device).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds a job may stay unacknowledged before it goes to another worker.
    #[arg(long, default_value_t = 60)]
    ack_wait: u64,
    /// Deliveries after which a job goes to the dead-letter subject instead of running.
    #[arg(long, default_value_t = 5)]
    max_deliver: i64,
    /// Accept jobs that bring their own WGSL (code from the network: off by default).
    #[arg(long)]
    allow_inline_kernels: bool,
    /// Only this graphics API (default: WGPU_BACKEND, else every one but noop).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
}

/// Runs the worker until a signal, then drains.
pub fn run(args: &Args) -> Result<()> {
    let mut builder = Engine::builder();
    if let Some(b) = args.backend {
        builder = builder.backends(b.backends());
    }
    let engine = builder.build()?;
    let kernels = load(&engine, &args.kernels)?;
    let mut queue = Queue::new(&args.nats);
    queue.stream = args.stream.clone();
    queue.subject = args.subject.clone();
    queue.consumer = args.consumer.clone();
    queue.ack_wait = Duration::from_secs(args.ack_wait.max(1));
    queue.max_deliver = args.max_deliver;
    let options = WorkerOptions {
        concurrency: args.concurrency,
        allow_inline_kernels: args.allow_inline_kernels,
    };
    let names: Vec<&String> = kernels.keys().collect();
    eprintln!(
        "worker: serving {names:?} from {} on {}",
        args.subject, args.nats
    );
    let worker = Worker::start(engine, kernels, queue, options)?;
    let stats = worker.serve_until_signal()?;
    eprintln!(
        "worker: drained ({} ok, {} failed, {} dead-lettered)",
        stats.ok, stats.failed, stats.dead
    );
    Ok(())
}

/// Every `*.wgsl` kernel in `dir`, by file name less the extension.
fn load(engine: &Engine, dir: &PathBuf) -> Result<HashMap<String, wgpu_batch::Kernel>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        fail(format!(
            "reading the kernels directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut kernels = HashMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "wgsl") {
            continue;
        }
        let name = (path.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let source = std::fs::read_to_string(&path)
            .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
        let kernel = engine
            .kernel(KernelSource::wgsl(name.clone(), source))
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        kernels.insert(name, kernel);
    }
    if kernels.is_empty() {
        return Err(fail(format!("no *.wgsl kernels in {}", dir.display())));
    }
    Ok(kernels)
}
