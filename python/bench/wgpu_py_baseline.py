"""wgpu-py baseline: SAXPY jobs/s through plain wgpu-py, written the way a careful user would.

Measures throughput (jobs per second) of many small, independent SAXPY jobs (y = a*x + y, f32)
submitted from several Python threads through ONE shared wgpu-py device, as a point of comparison
for wgpu-batch. Each job = write a, x, y; encode + submit one dispatch and a copy to a readback
buffer; map and read y back; check it against numpy. The "careful user" setup:
  * one adapter/device, the compute pipeline compiled once;
  * per-size pools of (uniform, x, y, readback buffer, bind group), reused across jobs;
  * one threading.Lock around all device work (writes, encode, submit, map/read back);
    allocating inputs and checking results with numpy happen outside the lock.
Readback: a pooled MAP_READ buffer, copied into in the same submit as the dispatch, then
map_sync + read_mapped. (queue.read_buffer is the one-call alternative, but in wgpu-py 0.32 it
creates a temporary MAP_READ buffer and makes a second submit per call; measured once it was
slower here, see READBACK below.)

Run:  /work/venv-wgpupy/bin/python bench/wgpu_py_baseline.py   (from /work/main/python)
Needs `pip install wgpu numpy`; on a GPU-less Linux box lavapipe (Mesa llvmpipe Vulkan) is used.
"""
import math
import os
import pathlib
import threading
import time

import numpy as np

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # silences Mesa WSI noise when headless
import wgpu  # noqa: E402

_SHADER_PATH = pathlib.Path(__file__).resolve().parents[2] / "shaders" / "saxpy.wgsl"
SAXPY_WGSL = _SHADER_PATH.read_text()  # the project's own kernel; bindings 0 a, 1 x, 2 y
WORKGROUP = 256
READBACK = os.environ.get("WGPUPY_READBACK", "map")  # "map" (pooled, default) or "read_buffer"
BU = wgpu.BufferUsage


class WgpuPySaxpy:
    """SAXPY y = a*x + y on f32, written as a careful wgpu-py user writes it: one adapter and
    device, the pipeline compiled once, buffers pooled per size (reused across jobs, taken
    and returned under the lock), one threading.Lock shared by all threads around all GPU work
    (write inputs, encode, submit, read back)."""

    def __init__(self):
        self.adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
        self.device = self.adapter.request_device_sync()
        self.queue = self.device.queue
        module = self.device.create_shader_module(code=SAXPY_WGSL)
        self.pipeline = self.device.create_compute_pipeline(
            layout="auto", compute={"module": module, "entry_point": "main"})
        self.layout = self.pipeline.get_bind_group_layout(0)
        self.lock = threading.Lock()
        self.pools = {}  # n -> list of free (a_buf, x_buf, y_buf, rb_buf, bind_group)

    def _new_set(self, n):  # called under the lock
        dev, nbytes = self.device, 4 * n
        a_buf = dev.create_buffer(size=16, usage=BU.UNIFORM | BU.COPY_DST)
        x_buf = dev.create_buffer(size=nbytes, usage=BU.STORAGE | BU.COPY_DST)
        y_buf = dev.create_buffer(size=nbytes, usage=BU.STORAGE | BU.COPY_DST | BU.COPY_SRC)
        rb_buf = dev.create_buffer(size=nbytes, usage=BU.MAP_READ | BU.COPY_DST)
        bg = dev.create_bind_group(layout=self.layout, entries=[
            {"binding": 0, "resource": {"buffer": a_buf, "offset": 0, "size": 4}},
            {"binding": 1, "resource": {"buffer": x_buf, "offset": 0, "size": nbytes}},
            {"binding": 2, "resource": {"buffer": y_buf, "offset": 0, "size": nbytes}}])
        return a_buf, x_buf, y_buf, rb_buf, bg

    def run(self, a: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One job: upload a (uniform), x (storage read), y (storage read_write), dispatch
        ceil(n/256) workgroups of 256, read y back, return it as a new float32 array."""
        n = len(x)
        assert len(y) == n and n > 0
        a_arr = np.array([a, 0, 0, 0], dtype=np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.float32)
        groups = math.ceil(n / WORKGROUP)
        with self.lock:
            free = self.pools.setdefault(n, [])
            a_buf, x_buf, y_buf, rb_buf, bg = s = free.pop() if free else self._new_set(n)
            try:
                self.queue.write_buffer(a_buf, 0, a_arr)
                self.queue.write_buffer(x_buf, 0, x)
                self.queue.write_buffer(y_buf, 0, y)
                enc = self.device.create_command_encoder()
                cp = enc.begin_compute_pass()
                cp.set_pipeline(self.pipeline)
                cp.set_bind_group(0, bg)
                cp.dispatch_workgroups(groups, 1, 1)
                cp.end()
                if READBACK == "read_buffer":
                    self.queue.submit([enc.finish()])
                    data = self.queue.read_buffer(y_buf)
                else:
                    enc.copy_buffer_to_buffer(y_buf, 0, rb_buf, 0, 4 * n)
                    self.queue.submit([enc.finish()])
                    rb_buf.map_sync(wgpu.MapMode.READ)
                    data = rb_buf.read_mapped()  # copy=True: a bytes copy, then unmap
                    rb_buf.unmap()
            finally:
                free.append(s)
        return np.frombuffer(data, dtype=np.float32).copy()


def bench(n: int, threads: int, jobs_per_thread: int, saxpy: WgpuPySaxpy | None = None) -> float:
    """Jobs per second with `threads` Python threads each running `jobs_per_thread` jobs of
    n elements through one shared WgpuPySaxpy; every result checked against numpy
    (assert np.array_equal or allclose exactly as 2*x+y in float32). Includes a short warm-up."""
    sx = saxpy or WgpuPySaxpy()
    a = np.float32(2.0)

    def worker(count, seed, errors):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(count):
                x = rng.standard_normal(n, dtype=np.float32)
                y = rng.standard_normal(n, dtype=np.float32)
                got = sx.run(float(a), x, y)
                want = a * x + y  # float32; a=2 makes 2*x exact, so even an FMA matches bit for bit
                assert got.dtype == np.float32 and got.shape == (n,)
                assert np.array_equal(got, want), "mismatch vs numpy"
        except BaseException as e:  # surface in the main thread
            errors.append(e)

    def run_all(count):
        errors = []
        ts = [threading.Thread(target=worker, args=(count, i, errors)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return dt

    run_all(max(5, jobs_per_thread // 20))  # warm-up: pools, pipeline caches, threads
    return threads * jobs_per_thread / run_all(jobs_per_thread)


if __name__ == "__main__":
    sx = WgpuPySaxpy()
    info = sx.adapter.info
    print(f"wgpu-py {wgpu.__version__}, adapter: {info['device']} ({info['backend_type']}, "
          f"{info['adapter_type']}), readback={READBACK}")
    print(f"{'n':>6} {'threads':>7} {'jobs/s':>10}")
    for n in (256, 4096):
        for threads in (1, 8):
            jobs = 2000 if threads == 1 else 250
            print(f"{n:>6} {threads:>7} {bench(n, threads, jobs, sx):>10.0f}", flush=True)
