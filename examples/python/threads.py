"""Many Python threads, one engine: each thread submits SAXPY jobs and checks them.

    python examples/python/threads.py

The engine batches the jobs of every thread into one submit per device; the GIL is released
while it works, so the threads overlap.
"""

import threading
import time

import numpy as np

import wgpu_batch as wb

with wb.Engine() as engine:
    saxpy = engine.kernel(wb.kernels.saxpy, label="saxpy")

    def worker(seed, jobs=200):
        rng = np.random.default_rng(seed)
        for _ in range(jobs):
            x, y = rng.standard_normal(4096, np.float32), rng.standard_normal(4096, np.float32)
            out = engine.submit(saxpy, n=4096, a=2.0, x=x, y=y).result(timeout=30)
            assert np.array_equal(out["y"], np.float32(2) * x + y)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    print(f"8 threads x 200 jobs in {took:.2f} s ({1600 / took:.0f} jobs/s), all correct")
    for d in engine.stats()["devices"]:
        print(f"device {d['device']}: {d['completed']} jobs in {d['batches']} batches")
