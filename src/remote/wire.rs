//! The wire format of jobs and results on NATS (feature `nats`), version 1. Every integer is
//! little-endian; a client in any language writes it with a few `struct.pack` calls (see
//! `examples/nats_client.py`). The README has the same table.
//!
//! A **job** (the message published on the job subject):
//!
//! | field | type | what |
//! |---|---|---|
//! | magic | 4 bytes | `WGBJ` |
//! | version | u16 | 1 |
//! | priority | u8 | 0 low, 1 normal, 2 high |
//! | reserved | u8 | 0 |
//! | deadline | u64 | Unix time in milliseconds after which the job must not run; 0: none |
//! | workgroups | 3 x u32 | x, y, z |
//! | kernel | u16 length + UTF-8 | the kernel's name on the worker (its file name less `.wgsl`), or `wgsl:` and the kernel's source (refused unless the worker allows inline kernels) |
//! | bindings | u16 count, then each: u32 binding, u8 kind, u64 length, then `length` bytes (none for an output) | kind 0 uniform, 1 input, 2 inout, 3 output (length: its size in bytes) |
//!
//! A **result** (published on the job's reply subject, header `Wgpu-Batch-Id` the job's id):
//!
//! | field | type | what |
//! |---|---|---|
//! | magic | 4 bytes | `WGBR` |
//! | version | u16 | 1 |
//! | code | u16 | 0: success; otherwise the error's code (see [`code_of`]) |
//! | on success | u16 count, then each: u32 binding, u64 length, bytes | the inouts and outputs, in binding order |
//! | on error | u32 length + UTF-8 | the error's message |

use crate::error::{Error, Result};
use crate::job::{ArgData, Job, Priority};

/// The version this build writes and reads.
pub const VERSION: u16 = 1;
const JOB_MAGIC: &[u8; 4] = b"WGBJ";
const RESULT_MAGIC: &[u8; 4] = b"WGBR";

/// How a binding's bytes are used (the `kind` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `var<uniform>`.
    Uniform = 0,
    /// `var<storage, read>`, uploaded.
    Input = 1,
    /// `var<storage, read_write>`, uploaded and returned.
    InOut = 2,
    /// `var<storage, read_write>`, zeroed and returned; the length is its size.
    Output = 3,
}

/// One binding of a job on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The `@binding` number.
    pub binding: u32,
    /// How its bytes are used.
    pub kind: Kind,
    /// The bytes (uniform, input, inout); for an output, empty.
    pub bytes: Vec<u8>,
    /// An output's size in bytes (the length field); the bytes' length otherwise.
    pub size: u64,
}

/// A job as it travels: a kernel named on the worker, its bindings and workgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireJob {
    /// The kernel's name on the worker.
    pub kernel: String,
    /// Its bindings, in the order written.
    pub bindings: Vec<Binding>,
    /// Workgroups along x, y and z.
    pub workgroups: [u32; 3],
    /// Its priority on the worker's engine.
    pub priority: Priority,
    /// Unix milliseconds; 0: none.
    pub deadline_ms: u64,
}

/// A result as it travels: the returned bindings, or an error's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireResult {
    /// The bytes of each inout and output, by binding.
    Ok(Vec<(u32, Vec<u8>)>),
    /// The job failed: its error's code (see [`code_of`]) and message.
    Err {
        /// The error's code, never 0.
        code: u16,
        /// The error's message.
        message: String,
    },
}

/// A malformed message: `Error::Remote` with [`MALFORMED`].
fn malformed(why: impl std::fmt::Display) -> Error {
    Error::Remote {
        code: MALFORMED,
        message: format!("malformed message: {why}"),
    }
}

/// The code of a malformed message (bad magic, version, lengths, UTF-8).
pub const MALFORMED: u16 = 100;
/// The code of a job naming a kernel the worker does not have.
pub const UNKNOWN_KERNEL: u16 = 101;
/// The code of a job that brought its own kernel (`wgsl:` and its source) to a worker that
/// does not accept that.
pub const INLINE_REFUSED: u16 = 104;
/// The code of a job a worker did not run because it was delivered `max_deliver` times (it
/// likely crashed workers); it went to the dead-letter subject.
pub const DEAD_LETTER: u16 = 102;

/// The code of an error kind, stable across versions (`Error::Remote` keeps its own).
pub fn code_of(e: &Error) -> u16 {
    match e {
        Error::NoAdapter(_) => 1,
        Error::RequestDevice { .. } => 2,
        Error::Shader { .. } => 3,
        Error::Binding { .. } => 4,
        Error::Limit { .. } => 5,
        Error::Workgroups { .. } => 6,
        Error::QueueFull => 7,
        Error::Timeout => 8,
        Error::DeadlineExpired => 9,
        Error::Cancelled => 10,
        Error::ResultTaken => 11,
        Error::DeviceLost { .. } => 12,
        Error::BufferLost { .. } => 13,
        Error::Poisoned { .. } => 14,
        Error::Quarantined { .. } => 15,
        Error::Shutdown => 16,
        Error::Wgpu(_) => 17,
        Error::Remote { code, .. } => *code,
    }
}

/// The error a result's `code` and `message` stand for: the variant itself where it carries
/// nothing more, else `Error::Remote` with both.
pub fn error_of(code: u16, message: String) -> Error {
    match code {
        7 => Error::QueueFull,
        8 => Error::Timeout,
        9 => Error::DeadlineExpired,
        10 => Error::Cancelled,
        16 => Error::Shutdown,
        _ => Error::Remote { code, message },
    }
}

impl WireJob {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(64 + self.bindings.iter().map(|b| b.bytes.len()).sum::<usize>());
        out.extend_from_slice(JOB_MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(match self.priority {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        });
        out.push(0);
        out.extend_from_slice(&self.deadline_ms.to_le_bytes());
        for w in self.workgroups {
            out.extend_from_slice(&w.to_le_bytes());
        }
        put_str16(&mut out, &self.kernel);
        out.extend_from_slice(&(self.bindings.len() as u16).to_le_bytes());
        for b in &self.bindings {
            out.extend_from_slice(&b.binding.to_le_bytes());
            out.push(b.kind as u8);
            out.extend_from_slice(&b.size.to_le_bytes());
            if b.kind != Kind::Output {
                out.extend_from_slice(&b.bytes);
            }
        }
        out
    }

    /// Reads a job; an `Error::Remote` with [`MALFORMED`] says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<WireJob> {
        let mut r = Reader(bytes);
        if r.take(4)? != JOB_MAGIC {
            return Err(malformed("not a wgpu-batch job (magic)"));
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(malformed(format!(
                "version {version}; this worker reads {VERSION}"
            )));
        }
        let priority = match r.u8()? {
            0 => Priority::Low,
            1 => Priority::Normal,
            2 => Priority::High,
            p => return Err(malformed(format!("priority {p}"))),
        };
        r.u8()?;
        let deadline_ms = r.u64()?;
        let workgroups = [r.u32()?, r.u32()?, r.u32()?];
        let kernel = r.str16()?;
        let count = r.u16()?;
        let mut bindings = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let binding = r.u32()?;
            let kind = match r.u8()? {
                0 => Kind::Uniform,
                1 => Kind::Input,
                2 => Kind::InOut,
                3 => Kind::Output,
                k => return Err(malformed(format!("binding {binding}: kind {k}"))),
            };
            let size = r.u64()?;
            let bytes = match kind {
                Kind::Output => Vec::new(),
                _ => r
                    .take(usize::try_from(size).map_err(|_| malformed("length"))?)?
                    .to_vec(),
            };
            bindings.push(Binding {
                binding,
                kind,
                bytes,
                size,
            });
        }
        if !r.0.is_empty() {
            return Err(malformed(format!(
                "{} bytes after the last binding",
                r.0.len()
            )));
        }
        Ok(WireJob {
            kernel,
            bindings,
            workgroups,
            priority,
            deadline_ms,
        })
    }

    /// The job for `kernel` on a local engine (its bytes move into the job).
    pub fn into_job(self, kernel: &crate::Kernel) -> Job {
        let [x, y, z] = self.workgroups;
        let mut job = Job::new(kernel).workgroups(x, y, z).priority(self.priority);
        for b in self.bindings {
            let data = match b.kind {
                Kind::Uniform => ArgData::Uniform(b.bytes.into()),
                Kind::Input => ArgData::Input(b.bytes.into()),
                Kind::InOut => ArgData::InOut(b.bytes.into()),
                Kind::Output => ArgData::Output(b.size),
            };
            job = job.raw_arg(b.binding, data);
        }
        job
    }
}

/// The bytes of a successful result with `outputs` (binding, bytes), written straight from
/// wherever the outputs are (a job's mapped read-back memory) without an owned copy first.
pub fn encode_ok<'a>(outputs: impl Iterator<Item = (u32, &'a [u8])> + Clone) -> Vec<u8> {
    let size: usize = outputs.clone().map(|(_, b)| 12 + b.len()).sum();
    let mut out = Vec::with_capacity(10 + size);
    out.extend_from_slice(RESULT_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(outputs.clone().count() as u16).to_le_bytes());
    for (binding, bytes) in outputs {
        out.extend_from_slice(&binding.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

impl WireResult {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            WireResult::Ok(outputs) => {
                encode_ok(outputs.iter().map(|(b, bytes)| (*b, bytes.as_slice())))
            }
            WireResult::Err { code, message } => {
                let mut out = Vec::with_capacity(12 + message.len());
                out.extend_from_slice(RESULT_MAGIC);
                out.extend_from_slice(&VERSION.to_le_bytes());
                out.extend_from_slice(&code.max(&1).to_le_bytes());
                out.extend_from_slice(&(message.len() as u32).to_le_bytes());
                out.extend_from_slice(message.as_bytes());
                out
            }
        }
    }

    /// Reads a result; an `Error::Remote` with [`MALFORMED`] says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<WireResult> {
        let mut r = Reader(bytes);
        if r.take(4)? != RESULT_MAGIC {
            return Err(malformed("not a wgpu-batch result (magic)"));
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(malformed(format!(
                "result version {version}; this client reads {VERSION}"
            )));
        }
        let code = r.u16()?;
        if code != 0 {
            let len = r.u32()? as usize;
            let message =
                String::from_utf8(r.take(len)?.to_vec()).map_err(|_| malformed("message UTF-8"))?;
            return Ok(WireResult::Err { code, message });
        }
        let count = r.u16()?;
        let mut outputs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let binding = r.u32()?;
            let len = usize::try_from(r.u64()?).map_err(|_| malformed("length"))?;
            outputs.push((binding, r.take(len)?.to_vec()));
        }
        Ok(WireResult::Ok(outputs))
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads little-endian fields off the front of a message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(malformed(format!(
                "{n} bytes wanted, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn str16(&mut self) -> Result<String> {
        let len = self.u16()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| malformed("kernel name UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binding() -> impl Strategy<Value = Binding> {
        (
            any::<u32>(),
            0u8..4,
            prop::collection::vec(any::<u8>(), 0..64),
            0u64..1 << 20,
        )
            .prop_map(|(binding, k, bytes, out)| {
                let kind = [Kind::Uniform, Kind::Input, Kind::InOut, Kind::Output][k as usize];
                match kind {
                    Kind::Output => Binding {
                        binding,
                        kind,
                        bytes: Vec::new(),
                        size: out,
                    },
                    _ => Binding {
                        binding,
                        kind,
                        size: bytes.len() as u64,
                        bytes,
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn a_job_reads_back_as_written(
            kernel in "[a-z_]{0,20}",
            bindings in prop::collection::vec(binding(), 0..6),
            workgroups in any::<[u32; 3]>(),
            p in 0usize..3,
            deadline_ms in any::<u64>(),
        ) {
            let priority = [Priority::Low, Priority::Normal, Priority::High][p];
            let job = WireJob { kernel, bindings, workgroups, priority, deadline_ms };
            prop_assert_eq!(WireJob::decode(&job.encode()).unwrap(), job);
        }

        #[test]
        fn any_prefix_or_junk_is_a_malformed_error_never_a_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            cut in any::<prop::sample::Index>(),
        ) {
            let job = WireJob {
                kernel: "saxpy".into(),
                bindings: vec![Binding { binding: 1, kind: Kind::Input, bytes: vec![1; 8], size: 8 }],
                workgroups: [1, 1, 1],
                priority: Priority::Normal,
                deadline_ms: 0,
            }.encode();
            let prefix = &job[..cut.index(job.len())];
            for b in [&bytes[..], prefix] {
                match WireJob::decode(b) {
                    Ok(_) => {}
                    Err(e) => prop_assert_eq!(code_of(&e), MALFORMED),
                }
                let _ = WireResult::decode(b);
            }
        }

        #[test]
        fn a_result_reads_back_as_written(
            outputs in prop::collection::vec((any::<u32>(), prop::collection::vec(any::<u8>(), 0..64)), 0..5),
            code in 1u16..200,
            message in ".{0,40}",
        ) {
            let ok = WireResult::Ok(outputs);
            prop_assert_eq!(WireResult::decode(&ok.encode()).unwrap(), ok);
            let err = WireResult::Err { code, message };
            prop_assert_eq!(WireResult::decode(&err.encode()).unwrap(), err);
        }
    }
}
