"""Bad input raises a clear exception naming the binding; the engine's errors map to their
classes; nothing crashes the interpreter."""

import asyncio

import numpy as np
import pytest

import wgpu_batch as wb

N = 512


def args(**over):
    kw = dict(n=N, a=2.0, x=np.ones(N, np.float32), y=np.ones(N, np.float32))
    kw.update(over)
    return kw


def test_a_wrong_dtype_names_the_binding(engine, saxpy):
    with pytest.raises(wb.BindingError, match=r"binding `x`.*float64.*astype\(np.float32\)") as e:
        engine.submit(saxpy, **args(x=np.ones(N)))
    assert isinstance(e.value, ValueError) and e.value.binding == 1 and e.value.name == "x"
    with pytest.raises(wb.BindingError, match="binding `a`.*int64"):
        engine.submit(saxpy, **args(a=np.int64(2)))


def test_a_non_contiguous_array_names_the_binding(engine, saxpy):
    with pytest.raises(ValueError, match=r"binding `y`.*not contiguous.*ascontiguousarray"):
        engine.submit(saxpy, **args(y=np.ones(2 * N, np.float32)[::2]))


def test_an_empty_or_misshapen_array_names_the_binding(engine, saxpy):
    with pytest.raises(ValueError, match="binding `x`.*empty"):
        engine.submit(saxpy, **args(x=np.ones(0, np.float32)))
    with pytest.raises(ValueError, match="binding `a`"):
        engine.submit(saxpy, **args(a=b"\x00\x00"))


def test_unknown_and_missing_binding_names_are_type_errors(engine, saxpy):
    with pytest.raises(TypeError, match="no binding `z`; its bindings are: a, x, y"):
        engine.submit(saxpy, **args(z=np.ones(N, np.float32)))
    kw = args()
    del kw["y"]
    with pytest.raises(TypeError, match="missing binding `y`"):
        engine.submit(saxpy, **kw)
    with pytest.raises(TypeError, match="workgroups=.*or n="):
        engine.submit(saxpy, a=2.0, x=np.ones(N, np.float32), y=np.ones(N, np.float32))


def test_outputs_and_buffers_only_where_they_fit(engine, saxpy):
    with pytest.raises(wb.BindingError, match="binding `x`.*read binding cannot take an output"):
        engine.submit(saxpy, **args(x=wb.out(np.float32, N)))
    with pytest.raises(wb.BindingError, match="binding `a`.*uniform binding cannot take a resident"):
        engine.submit(saxpy, **args(a=engine.upload(np.ones(4, np.float32))))
    for junk in (object(), None, "abc"):
        with pytest.raises(wb.BindingError, match="binding `x`.*expected a numpy array"):
            engine.submit(saxpy, **args(x=junk))


def test_bad_options(engine, saxpy):
    with pytest.raises(ValueError, match="priority"):
        engine.submit(saxpy, priority="urgent", **args())
    for timeout in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number of seconds"):
            engine.submit(saxpy, timeout=timeout, **args())
    kw = args()
    del kw["n"]
    with pytest.raises(wb.WorkgroupsError, match="zero workgroups"):
        engine.submit(saxpy, n=0, **kw)  # no invocations is an error, not one workgroup
    with pytest.raises(wb.LimitError, match="no device 9"):
        engine.submit(saxpy, device=9, **args())
    with pytest.raises(TypeError, match="Kernel or a Job"):
        engine.submit("saxpy", **args())
    with pytest.raises(ValueError, match="unknown backend"):
        wb.Engine(backends="cuda")


def test_shader_errors_carry_line_and_column(engine):
    src = "@group(0) @binding(0) var<storage, read_write> x: array<f32>;\n" \
          "@compute @workgroup_size(1) fn main() {\n    x[0] = nope;\n}\n"
    with pytest.raises(wb.ShaderError) as e:
        engine.kernel(src, label="broken")
    assert (e.value.line, e.value.column) == (3, 12) and e.value.kernel == "broken"
    assert "nope" in str(e.value)


def test_the_result_is_returned_once(engine, saxpy):
    h = engine.submit(saxpy, **args())
    h.result(timeout=30)
    with pytest.raises(wb.ResultTaken):
        h.result()

    async def await_then_wait():
        h = engine.submit(saxpy, **args())
        await h
        with pytest.raises(RuntimeError, match="awaited"):
            h.result()

    asyncio.run(await_then_wait())


def test_errors_form_one_hierarchy():
    for cls in (wb.ShaderError, wb.BindingError, wb.LimitError, wb.QueueFull, wb.DeadlineExpired,
                wb.Timeout, wb.Cancelled, wb.DeviceLost, wb.Shutdown, wb.NoAdapterError):
        assert issubclass(cls, wb.Error)
    assert issubclass(wb.Timeout, TimeoutError) and issubclass(wb.BindingError, ValueError)


def test_a_shut_down_engine_refuses_work():
    e = wb.Engine(backends="noop")
    k = e.kernel(wb.kernels.saxpy)
    e.shutdown()
    with pytest.raises(wb.Shutdown):
        e.submit(k, **args())


def test_big_endian_and_fortran_order_arrays_name_the_binding(engine, saxpy):
    with pytest.raises(ValueError, match="binding `x`.*big-endian"):
        engine.submit(saxpy, **args(x=np.ones(N, dtype=">f4")))
    fortran = np.asfortranarray(np.ones((16, 32), np.float32))
    with pytest.raises(ValueError, match="binding `y`.*not contiguous"):
        engine.submit(saxpy, **args(y=fortran))
    two_d = np.ones((16, 32), np.float32)  # C order: fine, and comes back in its shape
    assert engine.run(saxpy, **args(y=two_d))["y"].shape == (16, 32)


def test_python_numbers_fit_the_binding_and_reserved_names_take_an_underscore(engine):
    src = """
        @group(0) @binding(0) var<uniform> n: u32;
        @group(0) @binding(1) var<uniform> device: i32;
        @group(0) @binding(2) var<storage, read_write> o: array<i32>;
        @compute @workgroup_size(1) fn main() { o[0] = i32(n) + device; }"""
    k = engine.kernel(src, label="reserved")
    got = engine.run(k, workgroups=(1, 1, 1), n_=7, device_=-3, o=wb.out(np.int32, 1))["o"]
    assert got[0] == 4
    with pytest.raises(wb.BindingError, match="binding `n`.*does not fit a u32"):
        engine.run(k, workgroups=(1, 1, 1), n_=-1, device_=0, o=wb.out(np.int32, 1))
    with pytest.raises(wb.BindingError, match="binding `device`.*int64"):
        engine.run(k, workgroups=(1, 1, 1), n_=1, device_=np.int64(0), o=wb.out(np.int32, 1))
