"""The engine's errors as exceptions (raised by the native module; see ``wgpu_batch.Error``)."""


class Error(Exception):
    """Base of every wgpu-batch error."""


class NoAdapterError(Error):
    """No usable GPU adapter. Install a driver (no GPU: ``apt-get install mesa-vulkan-drivers``)."""


class RequestDeviceError(Error):
    """The driver refused to open a device (``.adapter``)."""


class ShaderError(Error, ValueError):
    """The WGSL did not parse or validate; ``.line`` and ``.column`` say where (or None)."""

    line = None
    column = None


class BindingError(Error, ValueError):
    """A job's arguments do not match the kernel's bindings (``.kernel``, ``.binding``)."""

    kernel = ""
    binding = None
    name = None


class LimitError(Error, ValueError):
    """A request exceeds a device limit (``.what``, ``.requested``, ``.limit``)."""


class WorkgroupsError(Error, ValueError):
    """A job asked for zero workgroups in some dimension."""


class QueueFull(Error):
    """The device queues are full (``try_submit``); retry later."""


class Timeout(Error, TimeoutError):
    """A wait ended before the result came; the job keeps running and the handle stays usable."""


class DeadlineExpired(Error, TimeoutError):
    """The job's deadline passed before it ran; it never ran."""


class Cancelled(Error):
    """The job was cancelled."""


class ResultTaken(Error):
    """The result was already returned once."""


class DeviceLost(Error):
    """The device (``.device``) was lost while the job was queued or running."""


class BufferLost(Error):
    """A writable resident buffer was on a device that was lost."""


class Poisoned(Error):
    """The job was running at too many device losses and is not run again."""


class Quarantined(Error):
    """The kernel is refused on this device after one of its jobs was poisoned."""


class Shutdown(Error):
    """The engine shut down before the job ran."""


class WgpuError(Error):
    """An error wgpu reported that fits no other kind."""


class RemoteError(Error):
    """A remote (NATS) failure with its wire ``.code``."""
