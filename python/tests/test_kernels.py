"""Every built-in kernel against numpy, bindings by name, and randomized jobs against a CPU
model."""

import numpy as np
import pytest

import wgpu_batch as wb


def test_saxpy_add_scale_against_numpy(engine, saxpy):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(5000, np.float32), rng.standard_normal(5000, np.float32)
    out = engine.submit(saxpy, n=5000, a=np.float32(1.5), x=x, y=y).result()
    np.testing.assert_allclose(out["y"], np.float32(1.5) * x + y, rtol=1e-6)
    assert set(out) == {"y"} and out["y"].dtype == np.float32 and out["y"].flags.owndata

    add = engine.kernel(wb.kernels.add, label="add")
    got = engine.run(add, n=5000, a=x, b=y, out=wb.out(np.float32, 5000))["out"]
    np.testing.assert_array_equal(got, x + y)

    scale = engine.kernel(wb.kernels.scale, label="scale")
    got = engine.run(scale, n=5000, s=3.0, x=x)["x"]
    np.testing.assert_allclose(got, 3 * x, rtol=1e-6)


def test_sum_against_numpy(engine):
    k = engine.kernel(wb.kernels.sum, label="sum")
    data = np.random.default_rng(2).random(10_000, dtype=np.float32)
    groups = -(-data.size // 1024)
    partial = engine.run(k, workgroups=(groups, 1, 1), input=data, partial=wb.out(np.float32, groups))
    np.testing.assert_allclose(partial["partial"].sum(), data.sum(dtype=np.float64), rtol=1e-4)


def linear_dims(m, k, n, relu):
    return np.array([m, k, n, int(relu)], dtype=np.uint32)


def test_linear_layer_against_numpy(engine):
    lin = engine.kernel(wb.kernels.linear, label="linear")
    rng = np.random.default_rng(3)
    m, k, n = 7, 33, 20
    a = rng.standard_normal((m, k), np.float32)
    w = rng.standard_normal((k, n), np.float32)
    b = rng.standard_normal(n, np.float32)
    wg = (-(-n // 16), -(-m // 16), 1)
    dims = linear_dims(m, k, n, True).view([("m", "<u4"), ("k", "<u4"), ("n", "<u4"), ("relu", "<u4")])
    got = engine.run(lin, workgroups=wg, dims=dims, a=a, w=w, b=b, out=wb.out(np.float32, (m, n)))["out"]
    assert got.shape == (m, n)
    np.testing.assert_allclose(got, np.maximum(a @ w + b, 0), rtol=1e-4, atol=1e-4)


def test_a_two_layer_mlp_runs_as_one_job_with_scratch_between_layers(engine):
    lin = engine.kernel(wb.kernels.linear, label="linear")
    rng = np.random.default_rng(4)
    m, k, h, n = 5, 16, 32, 8
    x = rng.standard_normal((m, k), np.float32)
    w1, b1 = engine.upload(rng.standard_normal((k, h), np.float32)), rng.standard_normal(h, np.float32)
    w2, b2 = rng.standard_normal((h, n), np.float32), rng.standard_normal(n, np.float32)
    hidden = wb.scratch(np.float32, (m, h))
    job = engine.job(lin, workgroups=(2, 1, 1), dims=bytes(linear_dims(m, k, h, True)), a=x, w=w1, b=b1, out=hidden)
    job = job.then(lin, workgroups=(1, 1, 1), dims=bytes(linear_dims(m, h, n, False)), a=hidden, w=w2, b=b2,
                   out=wb.out(np.float32, (m, n)))
    got = engine.submit(job).result()["out"]
    w1_host = engine.read(w1)
    want = np.maximum(x @ w1_host + b1, 0) @ w2 + b2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_kernels_reflect_names_kinds_and_element_types(engine):
    src = """
        struct P { a: f32, n: u32 }
        @group(0) @binding(0) var<uniform> p: P;
        @group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
        @group(0) @binding(5) var<storage, read_write> o: array<u32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < p.n { o[id.x] = u32(v[id.x].x * p.a); }
        }"""
    k = engine.kernel(src, label="t")
    got = [(b.name, b.binding, b.kind, b.element) for b in k.bindings]
    assert got == [("p", 0, "uniform", "P"), ("v", 3, "read", "vec4<f32>"), ("o", 5, "read_write", "u32")]
    assert k.workgroup_size == (64, 1, 1) and k.label == "t" and k.entry == "main"
    name, number, kind, element = k.bindings[1]
    assert (name, number, kind, element) == ("v", 3, "read", "vec4<f32>")
    p = np.array([(2.0, 10)], dtype=[("a", "<f4"), ("n", "<u4")])
    v = np.arange(40, dtype=np.float32).reshape(10, 4)
    got = engine.run(k, n=10, p=p, v=v, o=wb.out(np.uint32, 10))["o"]
    np.testing.assert_array_equal(got, (v[:, 0] * 2).astype(np.uint32))


def test_constants_and_entry_points(engine):
    src = """
        override factor: f32 = 1.0;
        @group(0) @binding(0) var<storage, read_write> x: array<f32>;
        @compute @workgroup_size(64) fn double(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&x) { x[id.x] = x[id.x] * 2.0 * factor; }
        }
        @compute @workgroup_size(64) fn negate(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&x) { x[id.x] = -x[id.x]; }
        }"""
    x = np.arange(100, dtype=np.float32)
    tripled = engine.kernel(src, entry="double", constants={"factor": 1.5})
    np.testing.assert_array_equal(engine.run(tripled, n=100, x=x)["x"], 3 * x)
    negate = engine.kernel(src, entry="negate")
    np.testing.assert_array_equal(engine.run(negate, n=100, x=x)["x"], -x)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_random_jobs_match_a_cpu_model(engine, saxpy, seed):
    # Random sizes (including ones that are not a multiple of the workgroup), values and
    # pending depths: every result equals numpy's, whatever was in flight with it.
    rng = np.random.default_rng(seed)
    pending = []
    for _ in range(int(rng.integers(1, 40))):
        n = int(rng.integers(1, 20_000))
        a = np.float32(rng.standard_normal())
        x, y = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32)
        pending.append((engine.submit(saxpy, n=n, a=a, x=x, y=y), a * x + y))
        if rng.random() < 0.3:
            h, want = pending.pop(int(rng.integers(len(pending))))
            np.testing.assert_array_equal(h.result(timeout=30)["y"], want)
    for h, want in pending:
        np.testing.assert_array_equal(h.result(timeout=30)["y"], want)


def test_inputs_may_be_reused_at_once_after_submit(engine, saxpy):
    x, y = np.ones(1000, np.float32), np.zeros(1000, np.float32)
    h = engine.submit(saxpy, n=1000, a=1.0, x=x, y=y)
    x[:] = 7  # submit copied the data already
    np.testing.assert_array_equal(h.result(timeout=30)["y"], np.ones(1000, np.float32))


def test_bytes_like_values_bind_as_raw_bytes(engine, saxpy):
    x, y = np.arange(64, dtype=np.float32), np.ones(64, np.float32)
    raw = [x.tobytes(), bytearray(x.tobytes()), memoryview(x.tobytes())]
    for value in raw:
        got = engine.run(saxpy, n=64, a=2.0, x=value, y=y)["y"]
        np.testing.assert_array_equal(got, 2 * x + y)
    # An inout of raw bytes comes back as bytes (uint8), like what went in.
    got = engine.run(saxpy, n=64, a=2.0, x=x, y=bytearray(y.tobytes()))["y"]
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got.view(np.float32), 2 * x + y)
    # A numpy array of bytes is still checked against the element type.
    with pytest.raises(wb.BindingError, match="uint8"):
        engine.run(saxpy, n=64, a=2.0, x=np.frombuffer(x.tobytes(), np.uint8), y=y)


def test_resident_buffers(engine, saxpy):
    x = np.arange(256, dtype=np.float32)
    shared = engine.replicate(x)
    assert shared.read_only and shared.size == 1024
    out = engine.run(saxpy, n=256, a=2.0, x=shared, y=np.ones(256, np.float32))
    np.testing.assert_array_equal(out["y"], 2 * x + 1)
    acc = engine.upload(np.zeros(256, np.float32))
    for _ in range(3):
        engine.run(saxpy, n=256, a=1.0, x=x, y=acc)
    np.testing.assert_array_equal(engine.read(acc), 3 * x)
    np.testing.assert_array_equal(engine.read(acc, np.uint8).view(np.float32), 3 * x)


def test_priorities_and_device_pinning_are_accepted(engine, saxpy):
    x = np.ones(64, np.float32)
    for priority in ("low", wb.Priority.NORMAL, wb.Priority.HIGH):
        h = engine.submit(saxpy, n=64, a=1.0, x=x, y=x, priority=priority, device=0)
        assert h.device == 0
        np.testing.assert_array_equal(h.result(timeout=30)["y"], 2 * x)
