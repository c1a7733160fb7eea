"""A two-layer MLP as one job: weights resident on every device, the hidden layer in scratch
memory that never leaves the GPU, checked against numpy.

    python examples/python/mlp.py
"""

import numpy as np

import wgpu_batch as wb


def dims(m, k, n, relu):  # the linear kernel's uniform: four u32
    return np.array([m, k, n, int(relu)], dtype=np.uint32).tobytes()


def groups(m, n):  # 16 x 16 tiles over (columns, rows)
    return (-(-n // 16), -(-m // 16), 1)


rng = np.random.default_rng(0)
batch, inputs, hidden, outputs = 64, 128, 256, 10
w1, b1 = rng.standard_normal((inputs, hidden), np.float32) * 0.1, np.zeros(hidden, np.float32)
w2, b2 = rng.standard_normal((hidden, outputs), np.float32) * 0.1, np.zeros(outputs, np.float32)

with wb.Engine() as engine:
    linear = engine.kernel(wb.kernels.linear, label="linear")
    W1, W2 = engine.replicate(w1), engine.replicate(w2)  # uploaded once, read-only

    def forward(x):
        h = wb.scratch(np.float32, (batch, hidden))
        job = engine.job(linear, workgroups=groups(batch, hidden), dims=dims(batch, inputs, hidden, True),
                         a=x, w=W1, b=b1, out=h)
        job = job.then(linear, workgroups=groups(batch, outputs), dims=dims(batch, hidden, outputs, False),
                       a=h, w=W2, b=b2, out=wb.out(np.float32, (batch, outputs)))
        return engine.submit(job)

    xs = [rng.standard_normal((batch, inputs), np.float32) for _ in range(32)]
    handles = [forward(x) for x in xs]  # all in flight at once
    for x, h in zip(xs, handles):
        want = np.maximum(x @ w1 + b1, 0) @ w2 + b2
        np.testing.assert_allclose(h.result(timeout=30)["out"], want, rtol=1e-4, atol=1e-4)
    print(f"32 batches of {batch} through a {inputs}-{hidden}-{outputs} MLP, all match numpy")
