//! A worker: pulls jobs from the shared consumer, runs them on its engine, answers, and only
//! then acknowledges (see the module docs of `remote`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::StreamExt;
use tokio::sync::{Semaphore, watch};

use super::wire::{self, WireJob, WireResult};
use super::{ID, Queue, REASON, REPLY, nats_error, runtime};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernel::compile::Kernel;

/// How a worker serves.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Most jobs held (fetched, not yet acknowledged) at once; default 256. At most the
    /// engine's [`queue_capacity`](crate::Engine::queue_capacity) (a larger value is lowered
    /// to it), so the worker never holds more than its engine can queue.
    pub concurrency: usize,
    /// Whether a job may bring its own kernel (the kernel field `wgsl:` followed by WGSL
    /// source): that is code from the network, so it is refused (code
    /// [`INLINE_REFUSED`](super::wire::INLINE_REFUSED)) unless this is set. Default off.
    pub allow_inline_kernels: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 256,
            allow_inline_kernels: false,
        }
    }
}

/// Counters of a worker (atomics; read them with [`Worker::stats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs answered with a result.
    pub ok: u64,
    /// Jobs answered with an error (bad input, a failed job, an expired deadline).
    pub failed: u64,
    /// Jobs sent to the dead-letter subject.
    pub dead: u64,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
}

/// What every job task shares.
struct Shared {
    engine: Engine,
    kernels: HashMap<String, Kernel>,
    /// Inline kernels compiled so far, by source (with `allow_inline_kernels`).
    inline: Option<parking_lot::Mutex<HashMap<String, Kernel>>>,
    js: jetstream::Context,
    queue: Queue,
    counters: Counters,
}

/// A running worker (see the module docs of `remote`). Dropping it drains it.
pub struct Worker {
    runtime: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    done: Option<tokio::task::JoinHandle<Result<()>>>,
    shared: Arc<Shared>,
}

impl Worker {
    /// Connects to `queue` and serves its jobs on `engine` with `kernels` (by name).
    pub fn start(
        engine: Engine,
        kernels: HashMap<String, Kernel>,
        queue: Queue,
        options: WorkerOptions,
    ) -> Result<Worker> {
        let runtime = runtime("wgpu-batch-worker")?;
        let (js, consumer) = runtime.block_on(async {
            let nats = async_nats::connect(&queue.url)
                .await
                .map_err(|e| nats_error(&format!("connect to {}", queue.url), e))?;
            let js = jetstream::new(nats);
            let consumer = queue.consumer(&js).await?;
            Ok::<_, Error>((js, consumer))
        })?;
        let inline = options.allow_inline_kernels.then(Default::default);
        let shared = Arc::new(Shared {
            engine,
            kernels,
            inline,
            js,
            queue,
            counters: Counters::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let most = shared.engine.queue_capacity().max(1);
        if options.concurrency > most {
            log::info!(
                "worker: concurrency {} lowered to the engine's queue capacity, {most}",
                options.concurrency
            );
        }
        let concurrency = options.concurrency.clamp(1, most);
        let done = runtime.spawn(serve(shared.clone(), consumer, concurrency, stopped));
        Ok(Worker {
            runtime: Some(runtime),
            stop,
            done: Some(done),
            shared,
        })
    }

    /// Its counters now.
    pub fn stats(&self) -> WorkerStats {
        let c = &self.shared.counters;
        WorkerStats {
            ok: c.ok.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead: c.dead.load(Ordering::Relaxed),
        }
    }

    /// Stops fetching, finishes, answers and acknowledges every job it holds, and returns.
    pub fn drain(mut self) -> Result<WorkerStats> {
        self.finish()?;
        Ok(self.stats())
    }

    /// Serves until SIGTERM or Ctrl-C, then drains (stops fetching, finishes, answers and
    /// acknowledges what it holds) and returns.
    pub fn serve_until_signal(mut self) -> Result<WorkerStats> {
        let Some(runtime) = &self.runtime else {
            return Ok(self.stats());
        };
        runtime.block_on(async {
            #[cfg(unix)]
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| nats_error("wait for SIGTERM", e))?;
            #[cfg(unix)]
            let terminated = term.recv();
            #[cfg(not(unix))]
            let terminated = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = terminated => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok::<_, Error>(())
        })?;
        log::info!("worker: draining");
        self.finish()?;
        Ok(self.stats())
    }

    fn finish(&mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let (Some(runtime), Some(done)) = (self.runtime.as_ref(), self.done.take()) else {
            return Ok(());
        };
        runtime.block_on(done).map_err(|e| nats_error("drain", e))?
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.finish();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Takes jobs from the consumer's message stream while it has room, runs each on its own task,
/// until stopped; then waits for the tasks to finish (each answers and acknowledges). When the
/// stream ends (the server lost the consumer, as after a restart before it was stored) the
/// worker gets or creates the consumer again and goes on pulling, rather than sit idle.
async fn serve(
    shared: Arc<Shared>,
    mut consumer: PullConsumer,
    concurrency: usize,
    mut stopped: watch::Receiver<bool>,
) -> Result<()> {
    let room = Arc::new(Semaphore::new(concurrency));
    while !*stopped.borrow() {
        if let Err(e) = pull(&shared, &consumer, &room, concurrency, &mut stopped).await {
            log::warn!("worker: pulling jobs: {e}");
        }
        if *stopped.borrow() {
            break;
        }
        log::warn!("worker: the job stream ended; subscribing again");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stopped.changed() => break,
        }
        match shared.queue.consumer(&shared.js).await {
            Ok(again) => consumer = again,
            Err(e) => log::warn!("worker: {e}"),
        }
    }
    // Drained once every permit is back: each task answered and acknowledged its job.
    let _ = room.acquire_many(concurrency as u32).await;
    Ok(())
}

/// Pulls from one message stream (a long poll that keeps up to a quarter of the room fetched
/// ahead) until it ends or the worker is stopped. Jobs fetched ahead and not taken by then are
/// not handed back one by one (a `nak` would bring them straight back to this worker's open
/// pull request): they go to another worker after `ack_wait`, never run here.
async fn pull(
    shared: &Arc<Shared>,
    consumer: &PullConsumer,
    room: &Arc<Semaphore>,
    concurrency: usize,
    stopped: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch((concurrency / 4).max(1))
        .expires(Duration::from_secs(2)) // a drained worker's open pull request ends soon
        .messages()
        .await
        .map_err(|e| nats_error("pull jobs", e))?;
    loop {
        let permit = tokio::select! {
            p = room.clone().acquire_owned() => p,
            _ = stopped.changed() => return Ok(()),
        };
        let Ok(permit) = permit else { return Ok(()) };
        let next = tokio::select! {
            m = messages.next() => m,
            _ = stopped.changed() => return Ok(()),
        };
        match next {
            Some(Ok(message)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    handle(&shared, message).await;
                    drop(permit);
                });
            }
            // Without its consumer (or JetStream) this stream yields errors from now on.
            Some(Err(e))
                if matches!(
                    e.kind(),
                    MessagesErrorKind::ConsumerDeleted | MessagesErrorKind::NoResponders
                ) =>
            {
                return Err(nats_error("pull jobs", e));
            }
            Some(Err(e)) => log::warn!("worker: pulling jobs: {e}"),
            None => return Ok(()),
        }
    }
}

/// Runs one job and answers it, then acknowledges the message.
async fn handle(shared: &Shared, message: jetstream::Message) {
    let headers = message.message.headers.clone().unwrap_or_default();
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let result = if shared.queue.max_deliver > 1 && delivered >= shared.queue.max_deliver {
        Err(dead_letter(shared, &message, delivered).await)
    } else {
        run(shared, &message).await
    };
    let counter = match &result {
        Ok(_) => &shared.counters.ok,
        Err(WireResult::Err { code, .. }) if *code == wire::DEAD_LETTER => &shared.counters.dead,
        Err(_) => &shared.counters.failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if let Some(reply) = header(REPLY) {
        let mut h = HeaderMap::new();
        h.insert(ID, header(ID).unwrap_or_default().as_str());
        let sent = shared
            .js
            .client()
            .publish_with_headers(reply, h, result.unwrap_or_else(|e| e.encode()).into())
            .await;
        if let Err(e) = sent {
            log::warn!("worker: could not publish a result ({e}); the job will be delivered again");
            return; // not acknowledged: delivered again after ack_wait
        }
    }
    // A plain ack, not one the server confirms: were it lost, the job would run again, and
    // its client, which has its result already, would drop the second one.
    if let Err(e) = message.ack().await {
        log::warn!("worker: could not acknowledge a job ({e}); it may run again");
    }
}

/// Decodes and runs a job on the engine; the encoded result to send, or the error.
async fn run(
    shared: &Shared,
    message: &jetstream::Message,
) -> std::result::Result<Vec<u8>, WireResult> {
    let failed = |e: Error| {
        Err(WireResult::Err {
            code: wire::code_of(&e),
            message: e.to_string(),
        })
    };
    let job = match WireJob::decode(&message.message.payload) {
        Ok(job) => job,
        Err(e) => return failed(e),
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if job.deadline_ms != 0 && now_ms >= job.deadline_ms {
        return failed(Error::DeadlineExpired);
    }
    let kernel = match kernel_of(shared, &job.kernel) {
        Ok(k) => k,
        Err(result) => return Err(result),
    };
    let returned: Vec<u32> = (job.bindings.iter())
        .filter(|b| matches!(b.kind, wire::Kind::InOut | wire::Kind::Output))
        .map(|b| b.binding)
        .collect();
    let deadline = (job.deadline_ms != 0).then(|| {
        std::time::Instant::now() + Duration::from_millis(job.deadline_ms.saturating_sub(now_ms))
    });
    let mut local = job.into_job(&kernel);
    if let Some(at) = deadline {
        local = local.deadline(at);
    }
    let handle = match shared.engine.try_submit(local) {
        Ok(h) => h,
        Err(r) if r.error == Error::QueueFull => {
            let engine = shared.engine.clone();
            match tokio::task::spawn_blocking(move || engine.submit(r.job)).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => return failed(e),
                Err(e) => return failed(Error::Wgpu(format!("submit task: {e}"))),
            }
        }
        Err(r) => return failed(r.error),
    };
    let output = match keep_alive(message, handle, shared.queue.ack_wait).await {
        Ok(out) => out,
        Err(e) => return failed(e),
    };
    let mut outputs = Vec::with_capacity(returned.len());
    for b in returned {
        match output.bytes(b) {
            Some(bytes) => outputs.push((b, bytes)),
            None => {
                let problem = "not an inout or output binding of this job";
                return failed(Error::binding(kernel.label(), b, problem));
            }
        }
    }
    // Straight from the job's read-back memory into the message.
    Ok(wire::encode_ok(outputs.iter().copied()))
}

/// The kernel a job names: one of the worker's, or (when allowed) its own inline WGSL.
fn kernel_of(shared: &Shared, name: &str) -> std::result::Result<Kernel, WireResult> {
    let Some(source) = name.strip_prefix("wgsl:") else {
        return shared
            .kernels
            .get(name)
            .cloned()
            .ok_or_else(|| WireResult::Err {
                code: wire::UNKNOWN_KERNEL,
                message: format!("this worker has no kernel `{name}`"),
            });
    };
    let Some(inline) = &shared.inline else {
        return Err(WireResult::Err {
            code: wire::INLINE_REFUSED,
            message: "this worker refuses kernels sent in a message (start it with \
                      --allow-inline-kernels to accept them)"
                .into(),
        });
    };
    if let Some(k) = inline.lock().get(source) {
        return Ok(k.clone());
    }
    let compiled = shared
        .engine
        .kernel(crate::KernelSource::wgsl("inline", source.to_owned()));
    match compiled {
        Ok(k) => {
            inline.lock().insert(source.to_owned(), k.clone());
            Ok(k)
        }
        Err(e) => Err(WireResult::Err {
            code: wire::code_of(&e),
            message: e.to_string(),
        }),
    }
}

/// Waits for the job, telling the server it is in progress every half `ack_wait`.
async fn keep_alive(
    message: &jetstream::Message,
    mut handle: crate::JobHandle,
    ack_wait: Duration,
) -> Result<crate::JobOutput> {
    let every = (ack_wait / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut handle => return out,
            _ = tokio::time::sleep(every) => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// A job delivered `max_deliver` times: copied to the dead-letter subject, not run.
async fn dead_letter(shared: &Shared, message: &jetstream::Message, delivered: i64) -> WireResult {
    let reason = format!(
        "delivered {delivered} times (max_deliver {}) without being acknowledged: it likely \
         made workers crash, so it is not run again",
        shared.queue.max_deliver
    );
    let mut h = message.message.headers.clone().unwrap_or_default();
    h.insert(REASON, reason.as_str());
    let copy = message.message.payload.clone();
    if let Err(e) = shared
        .js
        .client()
        .publish_with_headers(shared.queue.dead_letter.clone(), h, copy)
        .await
    {
        log::warn!("worker: could not publish to the dead-letter subject: {e}");
    }
    log::warn!(
        "worker: a job went to `{}`: {reason}",
        shared.queue.dead_letter
    );
    WireResult::Err {
        code: wire::DEAD_LETTER,
        message: reason,
    }
}
