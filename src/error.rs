//! The crate's one error type. Every failure a user, a driver or a device can cause arrives as
//! an [`Error`]; nothing on these paths panics.

use std::fmt;

/// Shorthand for `std::result::Result<T, wgpu_batch::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, named for what the user should check.
///
/// Messages are lowercase without a trailing period, so they compose into larger messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No usable adapter matched the engine's filters. Install a driver (on Debian/Ubuntu with no
    /// GPU: `apt-get install mesa-vulkan-drivers` for the lavapipe software adapter) or relax
    /// `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`. Retrying does not help.
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),
    /// The driver refused to open a device on an adapter it listed, or a device handed to
    /// [`EngineBuilder::with_device`](crate::EngineBuilder::with_device) cannot run compute.
    #[error("could not open a device on adapter {adapter}: {message}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// The driver's reason.
        message: String,
    },
    /// The kernel's WGSL did not parse or validate, or has no usable compute entry point. The
    /// message is naga's report, with line and column. Fix the shader; retrying does not help.
    #[error("kernel `{kernel}`: {message}")]
    Shader {
        /// The kernel's label.
        kernel: String,
        /// What is wrong, with the source location where known.
        message: String,
    },
    /// A job's arguments do not match the kernel's bindings (missing, unknown, wrong kind or
    /// access, a bad size), or a resident buffer cannot be made or read as asked (empty data,
    /// a size that is not a whole number of the element type). Fix the call; retrying does
    /// not help.
    #[error("{}", binding_message(kernel, *binding, problem))]
    Binding {
        /// The kernel's label; empty when no kernel is involved (an upload or
        /// [`Engine::read`](crate::Engine::read) of a resident buffer).
        kernel: String,
        /// The `@binding(n)` number in `@group(0)`; `u32::MAX` when no number is involved (a
        /// name no binding has, see [`Kernel::binding_number`](crate::Kernel::binding_number)).
        binding: u32,
        /// What is wrong.
        problem: String,
    },
    /// A request exceeds a limit of the device (buffer size, workgroup count), or names a
    /// device the engine does not have (`what` is `"device index"`, `limit` the highest
    /// index). Split the work.
    #[error("{}", limit_message(what, *requested, *limit))]
    Limit {
        /// Which limit.
        what: &'static str,
        /// What was asked for.
        requested: u64,
        /// The device's limit.
        limit: u64,
    },
    /// A job asked for zero workgroups in some dimension; it would do nothing.
    #[error("job for kernel `{kernel}` has zero workgroups ({x}, {y}, {z})")]
    Workgroups {
        /// The kernel's label.
        kernel: String,
        /// Workgroups in x.
        x: u32,
        /// Workgroups in y.
        y: u32,
        /// Workgroups in z.
        z: u32,
    },
    /// `try_submit` found every eligible device queue full. The job is handed back in
    /// [`Rejected`](crate::Rejected); retry later or use the blocking `submit`.
    #[error("the request queue of every eligible device is full")]
    QueueFull,
    /// `wait_timeout` gave up. The job is still queued or running: wait on the handle again.
    /// (A job whose own deadline passed gives [`Error::DeadlineExpired`] instead.)
    #[error("timed out waiting for the job")]
    Timeout,
    /// The job's deadline (`Job::timeout`, `Job::deadline` or the engine's default timeout)
    /// passed before it was encoded: it never ran and never will. Submit it again with more
    /// time, or lighten the device's load.
    #[error("the job's deadline passed before it ran; it never ran")]
    DeadlineExpired,
    /// The job was cancelled before it ran.
    #[error("the job was cancelled")]
    Cancelled,
    /// The result was already returned by an earlier call on this handle.
    #[error("the job's result was already taken from this handle")]
    ResultTaken,
    /// The device was lost (driver reset, destroyed, or its batch loop failed). Jobs
    /// submitted afterwards go to the remaining devices, or to the device that replaces it
    /// with [`EngineBuilder::reopen_lost_devices`](crate::EngineBuilder::reopen_lost_devices);
    /// retrying can help.
    #[error("device {device} was lost: {reason}")]
    DeviceLost {
        /// The engine's index of the device.
        device: usize,
        /// What the driver or the runtime reported.
        reason: String,
    },
    /// A resident buffer's copy lived on a device that was lost and then reopened
    /// ([`EngineBuilder::reopen_lost_devices`](crate::EngineBuilder::reopen_lost_devices)):
    /// its contents went with the lost device, so a job that binds it, or a read of it, is
    /// refused rather than given garbage. Upload the data again.
    #[error(
        "the resident buffer's copy on device {device} was lost with that device; upload it again"
    )]
    BufferLost {
        /// The engine's index of the device.
        device: usize,
    },
    /// The job was running each time its device was lost, `losses` times in a row (with
    /// [`EngineBuilder::reopen_lost_devices`](crate::EngineBuilder::reopen_lost_devices), a
    /// job that can run again is run again after a loss, up to
    /// [`EngineBuilder::max_replays`](crate::EngineBuilder::max_replays) times): it likely
    /// causes the losses (a kernel that never finishes, for example), so it is not run again.
    #[error(
        "the job was running at {losses} losses of device {device} in a row; it is not run again"
    )]
    Poisoned {
        /// The engine's index of the device.
        device: usize,
        /// How many losses it was running at.
        losses: u32,
    },
    /// A job of this kernel was [`Poisoned`](Error::Poisoned) on this device a short while
    /// ago, so the kernel's jobs are refused there for `remaining` (the reopening budget's
    /// window), rather than let one bad kernel take the device down again and again.
    #[error(
        "jobs of kernel '{kernel}' are refused on device {device} for {remaining:?}: one of them was running at every loss of it"
    )]
    Quarantined {
        /// The kernel's label.
        kernel: String,
        /// The engine's index of the device.
        device: usize,
        /// How long the refusal lasts.
        remaining: std::time::Duration,
    },
    /// The engine is shutting down or has shut down; it accepts no new work.
    #[error("the engine is shut down")]
    Shutdown,
    /// wgpu reported a validation or out-of-memory error that the runtime's own checks did not
    /// anticipate. The message is wgpu's.
    #[error("wgpu: {0}")]
    Wgpu(String),
    /// A job sent to a worker through NATS (feature `nats`) failed there, or could not be
    /// sent or answered: `code` is the wire format's code of the error (see
    /// `wgpu_batch::remote::wire`; 100 and up are the transport's own: a malformed message,
    /// an unknown kernel, a job sent to the dead-letter subject, a NATS failure), `message`
    /// says what happened.
    #[error("remote error {code}: {message}")]
    Remote {
        /// The wire format's code of the error.
        code: u16,
        /// What happened, as the worker or the transport said it.
        message: String,
    },
}

fn binding_message(kernel: &str, binding: u32, problem: &str) -> String {
    if kernel.is_empty() {
        problem.to_owned()
    } else if binding == u32::MAX {
        format!("kernel `{kernel}`: {problem}")
    } else {
        format!("kernel `{kernel}`, binding {binding}: {problem}")
    }
}

fn limit_message(what: &str, requested: u64, limit: u64) -> String {
    if what == "device index" {
        let devices = limit.saturating_add(1);
        format!("no device {requested}: the engine has {devices} devices, 0 to {limit}")
    } else {
        format!("{what}: requested {requested}, the device allows at most {limit}")
    }
}

impl Error {
    /// An [`Error::Binding`] about a resident buffer where no kernel is involved.
    pub(crate) fn buffer(problem: impl fmt::Display) -> Error {
        Error::Binding {
            kernel: String::new(),
            binding: 0,
            problem: problem.to_string(),
        }
    }

    /// Builds an [`Error::Binding`].
    pub(crate) fn binding(kernel: &str, binding: u32, problem: impl fmt::Display) -> Error {
        Error::Binding {
            kernel: kernel.to_owned(),
            binding,
            problem: problem.to_string(),
        }
    }
}

/// What a caught panic said, if it said it with a `&str` or a `String`.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<&str> {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
}

/// Runs `f` inside validation, out-of-memory and internal error scopes on this thread (wgpu's
/// scopes are per thread) and returns the first error they caught.
pub(crate) fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> (T, Option<wgpu::Error>) {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let errors = [validation.pop(), oom.pop(), internal.pop()].map(pollster::block_on);
    (value, errors.into_iter().flatten().next())
}

impl From<wgpu::Error> for Error {
    fn from(e: wgpu::Error) -> Self {
        Error::Wgpu(e.to_string())
    }
}
