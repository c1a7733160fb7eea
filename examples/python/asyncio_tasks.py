"""One asyncio task per request: ``await`` a job without blocking the event loop.

    python examples/python/asyncio_tasks.py
"""

import asyncio
import time

import numpy as np

import wgpu_batch as wb


async def main():
    with wb.Engine() as engine:
        add = engine.kernel(wb.kernels.add, label="add")

        async def request(i):
            a = np.full(1024, i, np.float32)
            b = np.arange(1024, dtype=np.float32)
            out = await engine.submit(add, n=1024, a=a, b=b, out=wb.out(np.float32, 1024), timeout=10)
            assert np.array_equal(out["out"], a + b)

        start = time.perf_counter()
        await asyncio.gather(*(request(i) for i in range(2000)))
        took = time.perf_counter() - start
        print(f"2,000 concurrent requests in {took:.2f} s ({2000 / took:.0f} jobs/s), all correct")


asyncio.run(main())
