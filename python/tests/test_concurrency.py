"""Threads, asyncio, cancel, timeouts, deadlines, the GIL, memory over 100,000 jobs, and a
clean exit with jobs in flight. Every wait is bounded."""

import asyncio
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import wgpu_batch as wb


def test_16_threads_x_200_jobs_all_correct(engine, saxpy):
    errors = []

    def worker(t):
        rng = np.random.default_rng(t)
        pending = []
        try:
            for i in range(200):
                n = int(rng.integers(1, 3000))
                x, y = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32)
                pending.append((engine.submit(saxpy, n=n, a=float(t), x=x, y=y), np.float32(t) * x + y))
                if len(pending) == 4 or i == 199:
                    for h, want in pending:
                        np.testing.assert_array_equal(h.result(timeout=60)["y"], want)
                    pending.clear()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads) and errors == []


def test_1000_concurrent_awaits_on_one_loop(engine, saxpy):
    x = np.arange(1000, dtype=np.float32)

    async def one(i):
        out = await engine.submit(saxpy, n=1000, a=float(i), x=x, y=np.ones(1000, np.float32))
        return i, out["y"]

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 120)

    for i, y in asyncio.run(main()):
        np.testing.assert_array_equal(y, np.float32(i) * x + 1)


SPIN = """
@group(0) @binding(0) var<uniform> iters: u32;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = 0.0;
    for (var k = 0u; k < iters; k++) { acc = acc * 0.999 + 1.0; }
    if id.x < arrayLength(&out) { out[id.x] = acc; }
}"""


class Busy:
    """An engine that runs one job per batch, and jobs that keep its device busy ~40 ms each,
    run by a thread of their own (so the test's own waits do not run them)."""

    def __init__(self):
        self.engine = wb.Engine(backends="vulkan", max_batch_jobs=1)
        self.saxpy = self.engine.kernel(wb.kernels.saxpy)
        self.spin = self.engine.kernel(SPIN, label="spin")
        self.groups = 16
        self.spin_once().result(timeout=60)  # compiles the pipeline
        t = time.monotonic()
        self.spin_once().result(timeout=60)
        per_group = (time.monotonic() - t) / 16
        self.groups = max(1, min(65_535, int(0.04 / per_group)))

    def spin_once(self):
        out = wb.out(np.float32, 64)
        return self.engine.submit(self.spin, workgroups=(self.groups, 1, 1), iters=np.uint32(4000), out=out)

    def occupy(self, jobs):
        """Queues `jobs` busy jobs and a thread that waits for them (and so runs them)."""
        handles = [self.spin_once() for _ in range(jobs)]
        runner = threading.Thread(target=settle, args=(handles,))
        runner.start()
        time.sleep(0.005)  # the runner takes the device's batch loop
        return runner


@pytest.fixture(scope="module")
def busy():
    b = Busy()
    yield b
    b.engine.shutdown()


def job(n=256):
    return dict(n=n, a=1.0, x=np.ones(n, np.float32), y=np.ones(n, np.float32))


def settle(handles):
    if isinstance(handles, threading.Thread):
        return handles.join(60)
    for h in handles:
        h.result(timeout=60)


def test_cancel(busy):
    ahead = busy.occupy(3)
    h = busy.engine.submit(busy.saxpy, **job())
    h.cancel()
    with pytest.raises(wb.Cancelled):
        h.result(timeout=10)
    settle(ahead)


def test_cancelling_the_awaiting_task_cancels_the_job(busy):
    ahead = busy.occupy(3)
    before = busy.engine.stats()["devices"][0]["completed"]

    async def main():
        task = asyncio.ensure_future(busy.engine.submit(busy.saxpy, **job()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    settle(ahead)

    def completed():
        return busy.engine.stats()["devices"][0]["completed"] - before

    until = time.monotonic() + 10  # the counters may trail the replies a little
    while completed() < 3 and time.monotonic() < until:
        time.sleep(0.01)
    time.sleep(0.2)  # the saxpy, queued behind the three, would have finished by now
    assert completed() == 3  # the three busy jobs; the saxpy never ran


def test_a_timed_out_wait_leaves_the_handle_usable(busy):
    ahead = busy.occupy(3)
    h = busy.engine.submit(busy.saxpy, **job())
    with pytest.raises(wb.Timeout):
        h.result(timeout=0.01)
    np.testing.assert_array_equal(h.result(timeout=10)["y"], np.full(256, 2, np.float32))
    settle(ahead)


def test_a_deadline_that_passes_in_the_queue(busy):
    ahead = busy.occupy(4)
    h = busy.engine.submit(busy.saxpy, timeout=0.02, **job())
    start = time.monotonic()
    with pytest.raises(wb.DeadlineExpired):
        h.result(timeout=10)
    assert time.monotonic() - start < 0.1  # at the deadline, not when the device frees up
    settle(ahead)


def test_await_raises_the_jobs_error(busy):
    ahead = busy.occupy(4)

    async def main():
        with pytest.raises(wb.DeadlineExpired):
            await asyncio.wait_for(busy.engine.submit(busy.saxpy, timeout=0.02, **job()), 10)

    asyncio.run(main())
    settle(ahead)


def test_the_gil_is_released_while_waiting(busy):
    ahead = busy.occupy(4)
    counted = []

    def count():
        n, until = 0, time.monotonic() + 0.1
        while time.monotonic() < until:
            n += 1
        counted.append(n)

    h = busy.engine.submit(busy.saxpy, **job())
    t = threading.Thread(target=count)
    t.start()
    h.result(timeout=10)  # behind ~160 ms of work, with the GIL released
    t.join(5)
    assert counted and counted[0] > 10_000
    settle(ahead)


def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_100000_jobs_leave_memory_flat(noop):
    k = noop.kernel(wb.kernels.saxpy)
    x, y = np.ones(1024, np.float32), np.ones(1024, np.float32)

    def run(jobs):
        window = []
        for _ in range(jobs):
            window.append(noop.submit(k, n=1024, a=2.0, x=x, y=y))
            if len(window) == 32:
                for h in window:
                    h.result(timeout=30)
                window.clear()
        for h in window:
            h.result(timeout=30)

    run(20_000)
    before = rss_mib()
    run(80_000)
    grown = rss_mib() - before
    assert grown < 16, f"RSS grew {grown:.1f} MiB over 80,000 jobs"


def test_the_interpreter_exits_cleanly_with_jobs_in_flight():
    script = """
import asyncio, threading, numpy as np, wgpu_batch as wb
e = wb.Engine(backends="vulkan", max_batch_delay=0.05)
k = e.kernel(wb.kernels.saxpy)
x = np.ones(4096, np.float32)
hs = [e.submit(k, n=4096, a=1.0, x=x, y=x) for _ in range(300)]
threading.Thread(target=lambda: hs[-1].result(), daemon=True).start()
async def main():
    asyncio.ensure_future(e.submit(k, n=4096, a=1.0, x=x, y=x))
asyncio.run(main())
print("leaving")
"""
    env = dict(os.environ, NODEVICE_SELECT="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "leaving" in done.stdout and "panicked" not in done.stderr
