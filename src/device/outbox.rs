//! What one step of a device's batch loop (`device/driver.rs`) leaves to do once the
//! submitter lock is released: replies are never sent under it (the protocol in
//! `device/mod.rs`).

use std::sync::Arc;
use std::time::Instant;

use crate::device::inbox::{Inbox, Request};
use crate::device::reply::{Reply, Responder, Ticket};
use crate::job::Job;

/// What a step leaves to do once the submitter lock is released: replies to send, jobs
/// skipped by a gather (expired or resolved already) to settle, and the jobs of batches the
/// device's loss failed, for the inbox to salvage (see [`Inbox::salvage`]).
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) replies: Vec<(Responder, Reply)>,
    pub(crate) skipped: Vec<Request>,
    /// A batch's tickets, taken off the board, when the loss failed it.
    pub(crate) lost_flight: Vec<(Arc<Ticket>, Option<Job>)>,
    /// The jobs of a batch that never reached the lost device.
    pub(crate) unlaunched: Vec<(Job, Responder)>,
    /// A completed batch's tickets and job copies: freed after the lock, not under it.
    pub(crate) finished: Vec<(Arc<Ticket>, Option<Job>)>,
}

impl Outbox {
    /// Salvages what the loss failed (before the replies, which then find those jobs queued
    /// again or resolved), sends the replies and settles the skipped jobs; call with no device
    /// lock held.
    pub(crate) fn deliver(mut self, inbox: &Inbox) {
        if !self.lost_flight.is_empty() || !self.unlaunched.is_empty() {
            let (flight, unlaunched) = (
                std::mem::take(&mut self.lost_flight),
                std::mem::take(&mut self.unlaunched),
            );
            inbox.salvage(flight, unlaunched, Vec::new());
        }
        for (responder, reply) in self.replies {
            responder.send(reply);
        }
        let now = Instant::now();
        for r in &self.skipped {
            r.responder.expire_if_due(now);
        }
    }
}
