//! Memory: resident buffers on the devices (`buffer.rs`), the vocabulary of mapped host
//! memory (`host.rs`: a job's staged data, read-back bytes shared by replies, loans against
//! a device's lend budget; the pool that lends it is the device's `mapped.rs`), and each
//! device's pool of GPU buffers for batches (`pool.rs`).

pub(crate) mod buffer;
pub(crate) mod host;
pub(crate) mod pool;
