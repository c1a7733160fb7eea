//! Many hosts serve one job queue through NATS JetStream (feature `nats`).
//!
//! A [`Client`] publishes each job ([`RemoteJob`], in the [`wire`] format) on the job subject
//! of one durable stream with work-queue retention, with a message id (JetStream drops a
//! duplicate publish within the stream's duplicate window) and the reply subject its result
//! goes to. Every [`Worker`] (one per GPU host, each with its own [`Engine`](crate::Engine))
//! pulls from one durable consumer they share, never holding more unacknowledged jobs than
//! its `concurrency`; it runs each job on its engine, publishes the result, and only then
//! acknowledges the message. A job whose worker dies before the acknowledgement is delivered
//! again after `ack_wait`, to another worker; the client delivers a job's result once, however
//! many times it ran.
//!
//! What is guaranteed: each job runs at least once while the stream's storage survives; its
//! result reaches a waiting client at most once. What is not: a job may run more than once
//! (a worker that dies after running it), so a job's effects beyond its own outputs must be
//! harmless to repeat (the wire format carries no resident buffers); a result published while
//! the client was gone is lost (results are plain NATS messages, not stored); a job delivered
//! `max_deliver` times is not run again but answered with [`wire::DEAD_LETTER`] and copied to
//! the dead-letter subject.

mod client;
mod server;
pub mod wire;
mod worker;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::error::Error;

pub use client::{Client, RemoteHandle, RemoteJob, RemoteOutput};
pub use server::NatsServer;
pub use worker::{Worker, WorkerOptions, WorkerStats};

/// Where jobs travel, shared by clients and workers (they must agree).
#[derive(Debug, Clone)]
pub struct Queue {
    /// The NATS server(s), e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream (default `WGPU_BATCH`), created if missing.
    pub stream: String,
    /// The subject jobs are published on (default `wgpu-batch.jobs`).
    pub subject: String,
    /// The durable consumer every worker shares (default `workers`).
    pub consumer: String,
    /// Where a job delivered `max_deliver` times is copied, with the reason in the header
    /// `Wgpu-Batch-Reason` (default `wgpu-batch.dead`).
    pub dead_letter: String,
    /// How long a worker may hold a job without acknowledging it before it is delivered again
    /// (default 60 s). Workers send progress acknowledgements while a job runs, so it bounds
    /// how long a dead worker's jobs wait, not how long a job may run.
    pub ack_wait: Duration,
    /// Deliveries after which a job is not run again (default 5).
    pub max_deliver: i64,
    /// Keep the stream in the server's memory rather than on disk (default off): faster
    /// (`cargo bench --features nats --bench nats`), but the jobs stored are lost if the
    /// server restarts. Applies when the stream is created.
    pub in_memory: bool,
}

impl Queue {
    /// The defaults, on the server at `url`.
    pub fn new(url: impl Into<String>) -> Queue {
        Queue {
            url: url.into(),
            stream: "WGPU_BATCH".into(),
            subject: "wgpu-batch.jobs".into(),
            consumer: "workers".into(),
            dead_letter: "wgpu-batch.dead".into(),
            ack_wait: Duration::from_secs(60),
            max_deliver: 5,
            in_memory: false,
        }
    }

    /// The stream, created with work-queue retention (and file storage unless `in_memory`)
    /// if it is missing.
    async fn stream(&self, js: &jetstream::Context) -> crate::Result<stream::Stream> {
        js.get_or_create_stream(stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: match self.in_memory {
                true => stream::StorageType::Memory,
                false => stream::StorageType::File,
            },
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("create the stream", e))
    }

    /// The shared durable pull consumer, created if missing.
    async fn consumer(&self, js: &jetstream::Context) -> crate::Result<consumer::PullConsumer> {
        let stream = self.stream(js).await?;
        stream
            .get_or_create_consumer(
                &self.consumer,
                consumer::pull::Config {
                    durable_name: Some(self.consumer.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: self.max_deliver,
                    max_ack_pending: -1, // each worker bounds what it holds itself
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| nats_error("create the consumer", e))
    }
}

/// The code of a NATS failure (connecting, publishing, subscribing).
pub const NATS_FAILURE: u16 = 103;

/// A NATS failure as an [`Error::Remote`].
fn nats_error(doing: &str, e: impl std::fmt::Display) -> Error {
    Error::Remote {
        code: NATS_FAILURE,
        message: format!("could not {doing}: {e}"),
    }
}

/// One round trip to the server: a request to a subject nobody serves, which the server
/// answers itself ("no responders"). (`flush` is not one: it only empties the client's
/// write buffer.) The server reads a connection in order, so whatever the client sent before
/// (a subscription) is in place when the answer comes.
async fn ping(client: &async_nats::Client) -> crate::Result<()> {
    use async_nats::client::RequestErrorKind;
    match client.request(client.new_inbox(), Default::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(nats_error("make a round trip to the server", e)),
    }
}

/// Header: the job's id (the client's, also its `Nats-Msg-Id`).
const ID: &str = "Wgpu-Batch-Id";
/// Header: where the job's result goes.
const REPLY: &str = "Wgpu-Batch-Reply";
/// Header: why a job went to the dead-letter subject.
const REASON: &str = "Wgpu-Batch-Reason";

/// A tokio runtime for a client's or worker's NATS connection.
fn runtime(name: &str) -> crate::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| nats_error("start a runtime", e))
}
