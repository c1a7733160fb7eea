"""wgpu_batch benchmark: SAXPY (y = a*x + y, f32) jobs from Python.

Run from /work/main:   python python/bench/bench.py
(with the engine's virtualenv, e.g. /work/venv/bin/python python/bench/bench.py)

Sections, each printed as a markdown table:
 1. vs wgpu-py on lavapipe (backends="vulkan"): jobs/s for n=256 and n=4096 at 1 and 8 Python
    threads. wgpu-py = bench/wgpu_py_baseline.py, run in a subprocess with the interpreter in
    $WGPU_PY_PYTHON (default /work/venv-wgpupy/bin/python) BEFORE wgpu_batch opens the device,
    so the two never run at the same time. wgpu_batch is measured two ways:
      "sync"      each thread loops engine.submit(...).result();
      "window=16" each thread keeps 16 handles outstanding (submit ahead, then result).
    Every wgpu_batch result is checked with np.array_equal against 2*x+y (x differs per thread).
    (The baseline also draws fresh random x, y per job inside its loop: a few µs per job.)
    Targets: n=256, 8 threads >= 10x wgpu-py; n=4096 >= 3x.
 2. Python overhead per job on backends="noop" (no device work; host cost only), 1 thread:
    µs/job of the Python loop submit(...).result() minus the same jobs from Rust
    (wgpu_batch._native._rust_saxpy_loop). Python and Rust runs interleave for ROUNDS rounds;
    medians reported. Target <= 10 µs.
 3. Thread scaling on noop: jobs/s with 1, 2, 4, 8 threads (submit+result loop, n=256).
 4. asyncio vs threads on noop (n=256): TASKS asyncio tasks each doing `await engine.submit(...)`
    in a loop vs 8 threads doing the same total jobs with result().
Every measurement warms up first, then runs for about BENCH_SECONDS (default 2.5 s).
SECTIONS=23 runs only sections 2 and 3 (default: all).
"""
import asyncio
import collections
import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import threading
import time

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # lavapipe warns without it
import numpy as np  # noqa: E402
import wgpu_batch as wb  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
TARGET_S = float(os.environ.get("BENCH_SECONDS", "2.5"))
WGPU_PY = os.environ.get("WGPU_PY_PYTHON", "/work/venv-wgpupy/bin/python")
WINDOW, ROUNDS, TASKS, A = 16, 5, 1000, 2.0


def measure(run, target=TARGET_S, start=16):
    """run(jobs) -> seconds. Grows the job count until a run takes >= 0.2 s (warm-up and
    calibration), then times one run of about `target` seconds; returns (jobs/s, jobs)."""
    jobs = start
    while (dt := run(jobs)) < 0.2:
        jobs *= 4
    jobs = max(jobs, int(jobs * target / dt))
    return jobs / run(jobs), jobs


def threaded(threads, body):
    """A run(jobs) for measure(): `threads` threads each call body(tid, jobs // threads),
    started together; returns the seconds until all are done. Re-raises a thread's error."""
    def run(jobs):
        per, errors = max(1, jobs // threads), []
        barrier = threading.Barrier(threads + 1)

        def work(tid):
            barrier.wait()
            try:
                body(tid, per)
            except BaseException as e:  # noqa: BLE001  (surface it in the main thread)
                errors.append(e)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return dt * jobs / (per * threads)  # scale to the jobs asked for
    return run


def inputs(n, threads):
    rng = np.random.default_rng(n)
    xs = [rng.standard_normal(n, dtype=np.float32) for _ in range(threads)]
    y = rng.standard_normal(n, dtype=np.float32)
    return xs, y, [np.float32(A) * x + y for x in xs]


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(flush=True)


WGPU_PY_CODE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import wgpu
from wgpu_py_baseline import WgpuPySaxpy, bench
target, out = float(sys.argv[2]), {}
sx = WgpuPySaxpy()
out["info"] = f"wgpu-py {wgpu.__version__} on {sx.adapter.info['device']}"
for n, threads in json.loads(sys.argv[3]):
    rate = bench(n, threads, 20, sx)  # warm-up + probe for the rate
    out[f"{n},{threads}"] = bench(n, threads, max(20, int(rate * target / threads)), sx)
print(json.dumps(out))
"""


def wgpu_py_rates(configs):
    """{(n, threads): jobs/s} from the baseline in a subprocess, or None when unavailable."""
    how = (f"install it with `{WGPU_PY} -m pip install wgpu numpy` (pip install wgpu), "
           "or point WGPU_PY_PYTHON at a Python that has wgpu")
    if not os.path.exists(WGPU_PY):
        print(f"**wgpu-py comparison skipped**: no interpreter at {WGPU_PY}; {how}.\n")
        return None
    if subprocess.run([WGPU_PY, "-c", "import wgpu"], capture_output=True).returncode != 0:
        print(f"**wgpu-py comparison skipped**: `import wgpu` fails in {WGPU_PY}; {how}.\n")
        return None
    p = subprocess.run([WGPU_PY, "-c", WGPU_PY_CODE, str(HERE), str(TARGET_S), json.dumps(configs)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"**wgpu-py baseline failed** (exit {p.returncode}):\n```\n{p.stderr[-3000:]}\n```\n")
        return None
    out = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"baseline: {out.pop('info')}\n")
    return {tuple(map(int, k.split(","))): v for k, v in out.items()}


def sync_body(engine, k, xs, y, want, check=True):
    def body(tid, count):
        x, w = xs[tid], want and want[tid]
        for _ in range(count):
            got = engine.submit(k, n=len(x), a=A, x=x, y=y).result()["y"]
            if check and not np.array_equal(got, w):
                raise AssertionError(f"thread {tid}: result != 2*x+y")
    return body


def check(tid, handle, want):
    if not np.array_equal(handle.result()["y"], want):
        raise AssertionError(f"thread {tid}: result != 2*x+y")


def window_body(engine, k, xs, y, want):
    def body(tid, count):
        x, w, pending = xs[tid], want[tid], collections.deque()
        for _ in range(count):
            pending.append(engine.submit(k, n=len(x), a=A, x=x, y=y))
            if len(pending) >= WINDOW:
                check(tid, pending.popleft(), w)
        while pending:
            check(tid, pending.popleft(), w)
    return body


def section_vs_wgpu_py():
    print("## 1. vs wgpu-py on lavapipe (backends=\"vulkan\"), SAXPY jobs/s\n")
    configs = [(n, t) for n in (256, 4096) for t in (1, 8)]
    base = wgpu_py_rates(configs)  # runs (and ends) before wgpu_batch opens its device
    engine = wb.Engine(backends="vulkan")
    print(f"wgpu_batch on {engine.devices()[0]['adapter']} ({engine.devices()[0]['driver']})\n")
    k = engine.kernel(wb.kernels.saxpy, label="saxpy")
    rows = []
    for n, threads in configs:
        xs, y, want = inputs(n, threads)
        sync, _ = measure(threaded(threads, sync_body(engine, k, xs, y, want)))
        win, _ = measure(threaded(threads, window_body(engine, k, xs, y, want)), start=64)
        b = base.get((n, threads)) if base else None
        ratio = (lambda r: f"{r / b:.1f}x" if b else "n/a")
        goal = {256: ">=10x", 4096: ">=3x"}[n] if threads == 8 else ""
        rows.append([n, threads, f"{b:,.0f}" if b else "n/a", f"{sync:,.0f}", ratio(sync),
                     f"{win:,.0f}", ratio(win), goal])
    engine.shutdown()
    table(["n", "threads", "wgpu-py", "wgpu_batch sync (submit().result())", "vs wgpu-py",
           f"wgpu_batch window={WINDOW}", "vs wgpu-py", "target (8 threads)"], rows)


def section_overhead(engine, k):
    print("## 2. Python overhead per job on noop, 1 thread (median of "
          f"{ROUNDS} interleaved rounds)\n")
    rows = []
    for n in (4096, 256):
        xs, y, _ = inputs(n, 1)
        x, lx, ly = xs[0], [float(v) for v in xs[0]], [float(v) for v in y]
        py_run = threaded(1, sync_body(engine, k, xs, y, None, check=False))
        _, jobs = measure(py_run, target=0.4)  # warm-up; jobs for ~0.4 s
        wb._native._rust_saxpy_loop(engine, k, A, lx, ly, jobs // 4)  # warm-up of the Rust loop
        py_us, rust_us = [], []
        for _ in range(ROUNDS):
            py_us.append(py_run(jobs) / jobs * 1e6)
            rust_us.append(wb._native._rust_saxpy_loop(engine, k, A, lx, ly, jobs) / jobs * 1e6)
        p, r = statistics.median(py_us), statistics.median(rust_us)
        rows.append([n, f"{jobs:,}", f"{p:.2f}", f"{r:.2f}", f"**{p - r:.2f}**", "<= 10",
                     " ".join(f"{a - b:.1f}" for a, b in zip(py_us, rust_us))])
    table(["n", "jobs/round", "Python µs/job", "Rust µs/job", "overhead µs/job", "target",
           "per-round overhead"], rows)


def section_threads(engine, k):
    print("## 3. Thread scaling on noop (n=256, submit().result() loop)\n")
    rows, one = [], None
    for threads in (1, 2, 4, 8):
        xs, y, _ = inputs(256, threads)
        rate, _ = measure(threaded(threads, sync_body(engine, k, xs, y, None, check=False)))
        one = one or rate
        rows.append([threads, f"{rate:,.0f}", f"{rate / one:.2f}x"])
    table(["threads", "jobs/s", "vs 1 thread"], rows)


def section_asyncio(engine, k):
    print(f"## 4. asyncio ({TASKS} tasks, one loop) vs 8 threads on noop (n=256)\n")
    xs, y, _ = inputs(256, 8)
    x = xs[0]

    async def task(count):
        for _ in range(count):
            await engine.submit(k, n=256, a=A, x=x, y=y)

    async def main(jobs):
        t0 = time.perf_counter()
        await asyncio.gather(*(task(jobs // TASKS) for _ in range(TASKS)))
        return time.perf_counter() - t0

    aio, jobs = measure(lambda j: asyncio.run(main(j)) * j / (j // TASKS * TASKS), start=TASKS)
    run8 = threaded(8, sync_body(engine, k, xs, y, None, check=False))
    run8(jobs // 10)  # warm-up
    thr = jobs / run8(jobs)  # the same J jobs
    table(["mode", "jobs (J)", "jobs/s", "vs threads"],
          [[f"asyncio, {TASKS} tasks", f"{jobs:,}", f"{aio:,.0f}", f"{aio / thr:.2f}x"],
           ["8 threads, result()", f"{jobs:,}", f"{thr:,.0f}", "1.00x"]])


def main():
    argv = " ".join(shlex.quote(a) for a in sys.argv)
    print(f"# wgpu_batch benchmark\n\n`$ cd {os.getcwd()} && python {argv}`\n\n"
          f"python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, ~{TARGET_S} s per measurement\n")
    t0 = time.perf_counter()
    only = set(os.environ.get("SECTIONS", "1234"))  # e.g. SECTIONS=23 runs sections 2 and 3
    if "1" in only:
        section_vs_wgpu_py()
    engine = wb.Engine(backends="noop")
    k = engine.kernel(wb.kernels.saxpy, label="saxpy")
    for number, section in (("2", section_overhead), ("3", section_threads), ("4", section_asyncio)):
        if number in only:
            section(engine, k)
    engine.shutdown()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
