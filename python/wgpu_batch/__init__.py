"""wgpu-batch for Python: run WGSL compute kernels from many threads and asyncio tasks.

One ``Engine`` per process; per GPU it batches the jobs of every thread into one submit.
Bind arrays by their WGSL names; results come back as numpy arrays keyed by name::

    import numpy as np, wgpu_batch as wb
    with wb.Engine() as engine:
        k = engine.kernel(wb.kernels.saxpy, label="saxpy")
        x = np.arange(4096, dtype=np.float32); y = np.ones(4096, np.float32)
        out = engine.submit(k, n=4096, a=2.0, x=x, y=y).result()   # or: await ...
        assert np.array_equal(out["y"], 2 * x + y)

The GIL is released while the engine copies arrays in, works and waits.
"""

from types import SimpleNamespace as _Namespace

import numpy as _np

from . import _aio  # noqa: F401  (the asyncio glue the native module imports)
from ._errors import (
    BindingError,
    BufferLost,
    Cancelled,
    DeadlineExpired,
    DeviceLost,
    Error,
    LimitError,
    NoAdapterError,
    Poisoned,
    Quarantined,
    QueueFull,
    RemoteError,
    RequestDeviceError,
    ResultTaken,
    ShaderError,
    Shutdown,
    Timeout,
    WgpuError,
    WorkgroupsError,
)
from ._native import Binding, Buffer, Engine, Handle, Job, Kernel, Out, Scratch, builtin_source

__all__ = [
    "Engine", "Kernel", "Binding", "Job", "Handle", "Buffer", "Out", "Scratch",
    "out", "scratch", "kernels", "Priority",
    "Error", "NoAdapterError", "RequestDeviceError", "ShaderError", "BindingError",
    "LimitError", "WorkgroupsError", "QueueFull", "Timeout", "DeadlineExpired", "Cancelled",
    "ResultTaken", "DeviceLost", "BufferLost", "Poisoned", "Quarantined", "Shutdown",
    "WgpuError", "RemoteError",
]


def _shape(shape):
    return (int(shape),) if isinstance(shape, (int, _np.integer)) else tuple(int(s) for s in shape)


def out(dtype, shape) -> Out:
    """An output binding: the kernel writes it and it comes back as ``np.empty(shape, dtype)``
    filled in. ``shape`` is a length or a tuple."""
    dt = _np.dtype(dtype)
    shape = _shape(shape)
    nbytes = int(_np.prod(shape, dtype=_np.int64)) * dt.itemsize
    return Out(dt, shape, nbytes, dt.str)


def scratch(dtype, shape) -> Scratch:
    """Device memory for one job, zeroed, never copied to or from the host: bind the same
    object in several steps (``engine.job(...).then(...)``) to pass data between them."""
    dt = _np.dtype(dtype)
    return Scratch(int(_np.prod(_shape(shape), dtype=_np.int64)) * dt.itemsize)


#: Job priorities, for ``priority=`` (plain strings work too).
Priority = _Namespace(LOW="low", NORMAL="normal", HIGH="high")

#: The built-in kernels' WGSL, for ``engine.kernel(wgpu_batch.kernels.saxpy, label="saxpy")``:
#: ``saxpy`` (a uniform f32, x read, y read_write: y = a*x + y), ``add`` (a, b read, out),
#: ``scale`` (s uniform, x read_write), ``sum`` (input, partial: one sum per 1,024 inputs),
#: ``linear`` (a dense layer: dims uniform (m, k, n, relu) as 4 u32, a, w, b read, out).
kernels = _Namespace(**{name: builtin_source(name) for name in ("saxpy", "add", "scale", "sum", "linear")})
