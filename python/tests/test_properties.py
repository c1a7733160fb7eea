"""Properties, searched by hypothesis against numpy as the model: whatever array is bound,
the job either gives numpy's answer or raises a BindingError (a ValueError) naming the
binding; it never crashes, hangs or gives a wrong answer. Failures found are kept below as
@example cases."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import wgpu_batch as wb

DTYPES = ["<f4", ">f4", "<f8", "<f2", "<i4", "<u4", "<i8", "|u1", [("a", "<f4"), ("b", "<u4")]]


@st.composite
def arrays(draw):
    """An array of any of DTYPES, 1-3 dimensions, C or Fortran order, maybe strided."""
    dtype = np.dtype(draw(st.sampled_from(["<f4"] * 6 + DTYPES)))  # often the right type
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)))
    step = draw(st.sampled_from([1, 1, 2]))
    order = draw(st.sampled_from("CF"))
    base = np.arange(int(np.prod(shape)) * step).astype(dtype.base if dtype.names else dtype)
    if dtype.names:
        base = np.zeros(base.size, dtype)
        base["a"] = np.arange(base.size)
    a = base[::step].reshape(shape, order=order)
    return a


def bindable_as_f32(a):
    return (a.dtype == np.dtype("<f4") and a.flags.c_contiguous and a.size > 0)


@settings(max_examples=150, deadline=None)
@given(x=arrays(), a=st.floats(-4, 4, width=32))
@example(x=np.ones((3, 1), "<f4", order="F"), a=1.0)  # one column: C-contiguous as well
@example(x=np.ones(0, "<f4"), a=1.0)
def test_any_input_binds_correctly_or_raises_binding_error(engine, saxpy, x, a):
    y = np.ones(x.shape, np.float32)
    try:
        out = engine.run(saxpy, n=max(x.size, 1), a=a, x=x, y=y, timeout=30)
    except wb.BindingError as e:
        assert not bindable_as_f32(x) or x.size == 0, f"refused a good array: {e}"
        assert isinstance(e, ValueError) and e.name in ("x", "y")
        return
    assert bindable_as_f32(x), f"bound {x.dtype} {x.shape} strides {x.strides}"
    np.testing.assert_array_equal(out["y"], np.float32(a) * x + y)
    assert out["y"].shape == x.shape


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), n=st.integers(0, 300))
def test_any_output_spec_binds_correctly_or_raises(engine, dtype, n):
    add = engine.kernel(wb.kernels.add, label="add")
    a, b = np.arange(max(n, 1), dtype=np.float32), np.ones(max(n, 1), np.float32)
    try:
        spec = wb.out(dtype, n)
    except TypeError:
        assert np.dtype(dtype).byteorder == ">"
        return
    try:
        got = engine.run(add, n=max(n, 1), a=a, b=b, out=spec)["out"]
    except wb.BindingError as e:
        assert np.dtype(dtype) != np.dtype("<f4") or n == 0, str(e)
        return
    assert np.dtype(dtype) == np.dtype("<f4") and n > 0
    np.testing.assert_array_equal(got, a + b)
