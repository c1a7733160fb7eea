"""Type stubs of the native module (re-exported by ``wgpu_batch``)."""

import os
from typing import Any, Awaitable, Generator, Iterator, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

Workgroups = Tuple[int, int, int]
Priority = str  # "low" | "normal" | "high"

class Binding:
    """One binding of a kernel."""
    name: str
    binding: int
    kind: str  # "uniform" | "read" | "read_write"
    element: str  # "f32", "vec4<f32>", a struct's name
    def __iter__(self) -> Iterator[Union[str, int]]: ...  # name, binding, kind, element

class Kernel:
    """A compiled kernel (``Engine.kernel``)."""
    @property
    def label(self) -> str: ...
    @property
    def entry(self) -> str: ...
    @property
    def workgroup_size(self) -> Workgroups: ...
    @property
    def bindings(self) -> list[Binding]: ...
    @property
    def unfused_reason(self) -> Optional[str]: ...

class Out:
    """An output binding (made by ``wgpu_batch.out``)."""

class Scratch:
    """Per-job device memory shared by steps (made by ``wgpu_batch.scratch``)."""

class Buffer:
    """A resident buffer (``Engine.upload``, ``Engine.replicate``)."""
    @property
    def size(self) -> int: ...
    @property
    def devices(self) -> list[int]: ...
    @property
    def read_only(self) -> bool: ...

class Job:
    """A job of several steps, not yet submitted (``Engine.job``)."""
    def then(self, kernel: Kernel, *, workgroups: Optional[Workgroups] = None,
             n: Optional[int] = None, **bindings: Any) -> "Job": ...

class Handle(Awaitable[dict[str, np.ndarray]]):
    """A submitted job."""
    def result(self, timeout: Optional[float] = None) -> dict[str, np.ndarray]:
        """The outputs by binding name; blocks (GIL released) at most ``timeout`` seconds."""
    def cancel(self) -> None: ...
    @property
    def device(self) -> int: ...
    def __await__(self) -> Generator[Any, None, dict[str, np.ndarray]]: ...

class Engine:
    """The engine; a context manager that shuts it down."""
    def __init__(self, *, backends: Union[str, Sequence[str], None] = None,
                 adapter_name: Optional[str] = None, devices_per_adapter: Optional[int] = None,
                 max_batch_jobs: Optional[int] = None, max_batch_bytes: Optional[int] = None,
                 max_batch_delay: Optional[float] = None,
                 max_batches_in_flight: Optional[int] = None,
                 shared_bind_groups: Optional[bool] = None,
                 priority_aging: Optional[float] = None, default_timeout: Optional[float] = None,
                 gpu_timeout: Optional[float] = None, map_storage: Optional[bool] = None,
                 fusion: Optional[bool] = None, pool_budget: Optional[int] = None,
                 gpu_timing: Optional[bool] = None, balance: Optional[str] = None,
                 queue_capacity: Optional[int] = None,
                 pipeline_cache_dir: Optional[Union[str, os.PathLike]] = None,
                 reopen_lost_devices: Optional[bool] = None, max_replays: Optional[int] = None,
                 keep_read_only_copies: Optional[bool] = None) -> None: ...
    def devices(self) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...
    def kernel(self, wgsl: str, entry: Optional[str] = None,
               constants: Optional[Mapping[str, float]] = None, label: str = "kernel") -> Kernel: ...
    def job(self, kernel: Kernel, *, workgroups: Optional[Workgroups] = None,
            n: Optional[int] = None, **bindings: Any) -> Job: ...
    def submit(self, what: Union[Kernel, Job], *, workgroups: Optional[Workgroups] = None,
               n: Optional[int] = None, priority: Optional[Priority] = None,
               timeout: Optional[float] = None, device: Optional[int] = None,
               **bindings: Any) -> Handle: ...
    def try_submit(self, what: Union[Kernel, Job], *, workgroups: Optional[Workgroups] = None,
                   n: Optional[int] = None, priority: Optional[Priority] = None,
                   timeout: Optional[float] = None, device: Optional[int] = None,
                   **bindings: Any) -> Handle: ...
    def run(self, what: Union[Kernel, Job], *, workgroups: Optional[Workgroups] = None,
            n: Optional[int] = None, priority: Optional[Priority] = None,
            timeout: Optional[float] = None, device: Optional[int] = None,
            **bindings: Any) -> dict[str, np.ndarray]: ...
    def upload(self, array: Any, *, device: Optional[int] = None, read_only: bool = False) -> Buffer: ...
    def replicate(self, array: Any) -> Buffer: ...
    def read(self, buffer: Buffer, dtype: Any = None) -> np.ndarray: ...
    def shutdown(self) -> None: ...
    def __enter__(self) -> "Engine": ...
    def __exit__(self, *exc: Any) -> bool: ...

def builtin_source(name: str) -> str: ...
def _rust_saxpy_loop(engine: Engine, kernel: Kernel, a: float, x: Sequence[float],
                     y: Sequence[float], jobs: int) -> float: ...
