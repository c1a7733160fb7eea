//! A client: publishes jobs to the stream and delivers each job's result once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures_util::StreamExt;
use parking_lot::Mutex;

use super::wire::{self, Binding, Kind, WireJob, WireResult};
use super::{ID, Queue, REPLY, nats_error, runtime};
use crate::error::{Error, Result};
use crate::job::Priority;

/// A job for a worker: a kernel by its name on the worker, and its bindings. Built like a
/// [`Job`](crate::Job).
#[derive(Debug, Clone)]
pub struct RemoteJob {
    wire: WireJob,
    timeout: Option<Duration>,
}

impl RemoteJob {
    /// A job of the worker's kernel `kernel` (its file name less `.wgsl`).
    pub fn new(kernel: impl Into<String>) -> RemoteJob {
        RemoteJob {
            wire: WireJob {
                kernel: kernel.into(),
                bindings: Vec::new(),
                workgroups: [1, 1, 1],
                priority: Priority::Normal,
                deadline_ms: 0,
            },
            timeout: None,
        }
    }

    fn bind(mut self, binding: u32, kind: Kind, bytes: Vec<u8>, size: u64) -> RemoteJob {
        self.wire.bindings.push(Binding {
            binding,
            kind,
            bytes,
            size,
        });
        self
    }

    /// A `var<uniform>`.
    pub fn uniform<T: bytemuck::Pod>(self, binding: u32, value: &T) -> RemoteJob {
        let bytes = bytemuck::bytes_of(value).to_vec();
        let size = bytes.len() as u64;
        self.bind(binding, Kind::Uniform, bytes, size)
    }

    /// A `var<storage, read>`.
    pub fn input<T: bytemuck::Pod>(self, binding: u32, data: &[T]) -> RemoteJob {
        let bytes = bytemuck::cast_slice(data).to_vec();
        let size = bytes.len() as u64;
        self.bind(binding, Kind::Input, bytes, size)
    }

    /// A `var<storage, read_write>`, uploaded and returned.
    pub fn inout<T: bytemuck::Pod>(self, binding: u32, data: &[T]) -> RemoteJob {
        let bytes = bytemuck::cast_slice(data).to_vec();
        let size = bytes.len() as u64;
        self.bind(binding, Kind::InOut, bytes, size)
    }

    /// A zeroed `var<storage, read_write>` of `len` elements of `T`, returned.
    pub fn output<T: bytemuck::Pod>(self, binding: u32, len: usize) -> RemoteJob {
        let size = (len * std::mem::size_of::<T>()) as u64;
        self.bind(binding, Kind::Output, Vec::new(), size)
    }

    /// Dispatches `x * y * z` workgroups.
    pub fn workgroups(mut self, x: u32, y: u32, z: u32) -> RemoteJob {
        self.wire.workgroups = [x, y, z];
        self
    }

    /// The job's priority on the worker's engine.
    pub fn priority(mut self, priority: Priority) -> RemoteJob {
        self.wire.priority = priority;
        self
    }

    /// The job must start within `budget` of its submission (waiting in the stream counts),
    /// or it resolves [`Error::DeadlineExpired`] without running.
    pub fn timeout(mut self, budget: Duration) -> RemoteJob {
        self.timeout = Some(budget);
        self
    }
}

/// A job's result: the bytes of its inouts and outputs.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    outputs: Vec<(u32, Vec<u8>)>,
}

impl RemoteOutput {
    /// Binding `binding`'s data as `T`s.
    pub fn read<T: bytemuck::Pod>(&self, binding: u32) -> Result<Vec<T>> {
        let (_, bytes) = (self.outputs.iter().find(|(b, _)| *b == binding)).ok_or_else(|| {
            Error::binding(
                "",
                binding,
                "the result has no such binding (not an inout or output)",
            )
        })?;
        let each = std::mem::size_of::<T>().max(1);
        if !bytes.len().is_multiple_of(each) {
            return Err(Error::buffer(format!(
                "binding {binding}: {} bytes are not a whole number of {each}-byte elements",
                bytes.len()
            )));
        }
        Ok(bytemuck::pod_collect_to_vec(bytes))
    }
}

/// The results still awaited, by job id: the first result for an id is delivered and the
/// id forgotten, so a job that ran twice (its first worker died before acknowledging it) is
/// answered once. Each keeps its job's message, to publish it again after a reconnection
/// (a result published while the connection was down is lost).
#[derive(Default)]
pub(crate) struct Awaited {
    waiting: Mutex<HashMap<String, Waiter>>,
    /// Results that arrived for a job already answered (it ran more than once).
    duplicates: AtomicU64,
}

/// A job's message as published: its headers and payload.
type Message = Arc<(HeaderMap, bytes::Bytes)>;

/// One awaited job: where its result goes, and its message.
struct Waiter {
    tx: flume::Sender<Result<RemoteOutput>>,
    message: Message,
}

impl Awaited {
    fn register(&self, id: String, message: Message) -> flume::Receiver<Result<RemoteOutput>> {
        let (tx, rx) = flume::bounded(1);
        self.waiting.lock().insert(id, Waiter { tx, message });
        rx
    }

    /// Delivers the result for `id`; false when it was delivered already (or never awaited).
    pub(crate) fn deliver(&self, id: &str, result: Result<RemoteOutput>) -> bool {
        let Some(waiter) = self.waiting.lock().remove(id) else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let _ = waiter.tx.send(result);
        true
    }

    fn forget(&self, id: &str) {
        self.waiting.lock().remove(id);
    }

    /// The messages of every job still awaited.
    fn unanswered(&self) -> Vec<Message> {
        self.waiting
            .lock()
            .values()
            .map(|w| w.message.clone())
            .collect()
    }
}

/// A submitted remote job. Wait for it, with or without a bound, or `.await` it.
pub struct RemoteHandle {
    rx: flume::Receiver<Result<RemoteOutput>>,
    fut: Option<flume::r#async::RecvFut<'static, Result<RemoteOutput>>>,
}

impl RemoteHandle {
    /// Blocks until the result arrives.
    pub fn wait(&self) -> Result<RemoteOutput> {
        self.rx.recv().unwrap_or(Err(Error::Shutdown))
    }

    /// Blocks at most `within`; [`Error::Timeout`] if the result has not arrived (it may
    /// still: wait again).
    pub fn wait_timeout(&self, within: Duration) -> Result<RemoteOutput> {
        match self.rx.recv_timeout(within) {
            Ok(r) => r,
            Err(flume::RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(flume::RecvTimeoutError::Disconnected) => Err(Error::Shutdown),
        }
    }
}

impl std::future::Future for RemoteHandle {
    type Output = Result<RemoteOutput>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let rx = self.rx.clone();
        let fut = self.fut.get_or_insert_with(|| rx.into_recv_async());
        std::pin::Pin::new(fut)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Shutdown)))
    }
}

/// Submits jobs to the workers of a [`Queue`].
pub struct Client {
    runtime: tokio::runtime::Runtime,
    js: jetstream::Context,
    queue: Queue,
    awaited: Arc<Awaited>,
    /// This client's reply subjects: `<inbox>.<id>`.
    inbox: String,
    next: AtomicU64,
    max_payload: usize,
}

impl Client {
    /// Connects to `queue`'s server, creating the stream if missing.
    pub fn connect(queue: Queue) -> Result<Client> {
        let runtime = runtime("wgpu-batch-client")?;
        let awaited = Arc::new(Awaited::default());
        let reconnected = Arc::new(tokio::sync::Notify::new());
        let (js, inbox, max_payload) = runtime.block_on(async {
            let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let again = reconnected.clone();
            let options = async_nats::ConnectOptions::new().event_callback(move |event| {
                let (first, again) = (first.clone(), again.clone());
                async move {
                    let connected = matches!(event, async_nats::Event::Connected);
                    if connected && !first.swap(false, Ordering::SeqCst) {
                        again.notify_one();
                    }
                }
            });
            let nats = options
                .connect(&queue.url)
                .await
                .map_err(|e| nats_error(&format!("connect to {}", queue.url), e))?;
            let inbox = nats.new_inbox();
            let mut results = (nats.subscribe(format!("{inbox}.*")).await)
                .map_err(|e| nats_error("subscribe to results", e))?;
            let into = awaited.clone();
            tokio::spawn(async move {
                while let Some(m) = results.next().await {
                    let id = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
                    let result = match WireResult::decode(&m.payload) {
                        Ok(WireResult::Ok(outputs)) => Ok(RemoteOutput { outputs }),
                        Ok(WireResult::Err { code, message }) => Err(wire::error_of(code, message)),
                        Err(e) => Err(e),
                    };
                    into.deliver(&id, result);
                }
            });
            let max_payload = nats.server_info().max_payload;
            let js = jetstream::new(nats);
            queue.stream(&js).await?;
            Ok::<_, Error>((js, inbox, max_payload))
        })?;
        let resending = resend(
            js.clone(),
            queue.subject.clone(),
            awaited.clone(),
            reconnected,
        );
        runtime.spawn(resending);
        Ok(Client {
            runtime,
            js,
            queue,
            awaited,
            inbox,
            next: AtomicU64::new(0),
            max_payload,
        })
    }

    /// One round trip to the server (a request the server answers itself), what every job
    /// pays at least twice.
    pub fn round_trip(&self) -> Result<Duration> {
        let start = std::time::Instant::now();
        self.runtime.block_on(super::ping(&self.js.client()))?;
        Ok(start.elapsed())
    }

    /// Results that arrived for a job already answered, and were dropped: each is a job
    /// that ran more than once (a worker died after running it, before acknowledging it).
    pub fn duplicates(&self) -> u64 {
        self.awaited.duplicates.load(Ordering::Relaxed)
    }

    /// Publishes `job` and returns its handle at once; the stream's acknowledgement is awaited
    /// in the background, so submits pipeline. A job the stream did not store (the server
    /// went away) resolves with an [`Error::Remote`] of code
    /// [`NATS_FAILURE`](super::NATS_FAILURE): submit it again (its result, should it still
    /// come, is dropped as a duplicate). A job larger than the server's payload limit is an
    /// [`Error::Limit`] here.
    pub fn submit(&self, job: RemoteJob) -> Result<RemoteHandle> {
        let mut wire = job.wire;
        if let Some(budget) = job.timeout {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            wire.deadline_ms = (now + budget).as_millis().min(u128::from(u64::MAX)) as u64;
        }
        self.submit_encoded(wire.encode())
    }

    /// Publishes a job already in the [`wire`] format, as [`submit`](Self::submit)
    /// does (for a job relayed from elsewhere, or to test a worker with bytes of one's own).
    pub fn submit_encoded(&self, payload: Vec<u8>) -> Result<RemoteHandle> {
        if payload.len() > self.max_payload {
            return Err(Error::Limit {
                what: "job message bytes (the NATS server's max_payload)",
                requested: payload.len() as u64,
                limit: self.max_payload as u64,
            });
        }
        let id = format!(
            "{}-{}",
            self.inbox.rsplit('.').next().unwrap_or_default(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert(ID, id.as_str());
        headers.insert(REPLY, format!("{}.{id}", self.inbox).as_str());
        let message = Arc::new((headers.clone(), bytes::Bytes::from(payload)));
        let rx = self.awaited.register(id.clone(), message.clone());
        let subject = self.queue.subject.clone();
        let body = message.1.clone(); // shared, not copied
        let sent = self.runtime.block_on(async {
            (self.js.publish_with_headers(subject, headers, body).await)
                .map_err(|e| nats_error("publish a job", e))
        });
        let stored = match sent {
            Ok(stored) => stored,
            Err(e) => {
                self.awaited.forget(&id);
                return Err(e);
            }
        };
        // The stream's acknowledgement is awaited off this thread, so submits pipeline; a job
        // the stream did not store resolves with the error.
        let awaited = self.awaited.clone();
        self.runtime.spawn(async move {
            if let Err(e) = stored.await {
                awaited.deliver(&id, Err(nats_error("store a job", e)));
            }
        });
        Ok(RemoteHandle { rx, fut: None })
    }
}

/// After each reconnection, publishes again every job still awaited, under a new message id
/// (the stream would drop the old one as a duplicate): its result may have been published
/// while the connection was down, and is lost. A job that was fine runs twice; its client
/// still gets one result.
async fn resend(
    js: jetstream::Context,
    subject: String,
    awaited: Arc<Awaited>,
    reconnected: Arc<tokio::sync::Notify>,
) {
    for round in 1u64.. {
        reconnected.notified().await;
        // The client subscribes again as it reconnects; a round trip after that means the
        // server has the subscription before any result of a job sent again can come.
        if let Err(e) = super::ping(&js.client()).await {
            log::warn!("client: after reconnecting: {e}");
        }
        let jobs = awaited.unanswered();
        log::warn!(
            "client: reconnected; submitting {} unanswered jobs again",
            jobs.len()
        );
        for message in jobs {
            let (mut headers, payload) = (message.0.clone(), message.1.clone());
            let id = headers
                .get(ID)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            headers.insert("Nats-Msg-Id", format!("{id}.{round}").as_str());
            let sent = js
                .publish_with_headers(subject.clone(), headers, payload)
                .await;
            if let Err(e) = sent {
                log::warn!("client: could not submit a job again: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However many times each job's result arrives, in whatever order, each handle gets
        /// exactly one: the first.
        #[test]
        fn each_result_is_delivered_once(
            deliveries in prop::collection::vec((0usize..8, any::<u8>()), 0..64),
        ) {
            let awaited = Awaited::default();
            let message = Arc::new((HeaderMap::new(), bytes::Bytes::new()));
            let handles: Vec<_> = (0..8).map(|i| awaited.register(i.to_string(), message.clone())).collect();
            let mut first: Vec<Option<u8>> = vec![None; 8];
            for (job, tag) in deliveries {
                let out = RemoteOutput { outputs: vec![(0, vec![tag])] };
                let delivered = awaited.deliver(&job.to_string(), Ok(out));
                prop_assert_eq!(delivered, first[job].is_none());
                first[job].get_or_insert(tag);
            }
            for (rx, want) in handles.iter().zip(first) {
                let got: Vec<u8> = rx.drain().map(|r| r.unwrap().read::<u8>(0).unwrap()[0]).collect();
                prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
            }
        }
    }
}
