"""A wgpu-batch client in Python: submits a SAXPY job to the workers' NATS JetStream queue in
the wire format (README, "Many hosts"), waits for its result and checks it.

    pip install nats-py
    python3 examples/nats_client.py nats://127.0.0.1:4222   # with a `wgpu-batch worker` running
"""
import asyncio, struct, sys, uuid

import nats


def saxpy_job(a, x, y):
    """Kernel `saxpy`: 0 uniform a, 1 input x, 2 inout y; 64 invocations per workgroup."""
    f32s = lambda v: struct.pack(f"<{len(v)}f", *v)
    bindings = [(0, 0, struct.pack("<f", a)), (1, 1, f32s(x)), (2, 2, f32s(y))]
    body = b"WGBJ" + struct.pack("<HBBQ3I", 1, 1, 0, 0, (len(x) + 63) // 64, 1, 1)
    body += struct.pack("<H", 5) + b"saxpy" + struct.pack("<H", len(bindings))
    for binding, kind, data in bindings:
        body += struct.pack("<IBQ", binding, kind, len(data)) + data
    return body


def read_result(msg):
    """{binding: bytes} of a success; raises with the worker's error otherwise."""
    magic, version, code = struct.unpack_from("<4sHH", msg, 0)
    assert magic == b"WGBR" and version == 1, "not a wgpu-batch result"
    if code != 0:
        (n,) = struct.unpack_from("<I", msg, 8)
        raise RuntimeError(f"error {code}: {msg[12:12 + n].decode()}")
    (count,), at, out = struct.unpack_from("<H", msg, 8), 10, {}
    for _ in range(count):
        binding, n = struct.unpack_from("<IQ", msg, at)
        out[binding], at = msg[at + 12:at + 12 + n], at + 12 + n
    return out


async def main(url):
    nc = await nats.connect(url)
    js = nc.jetstream()
    job_id, reply = uuid.uuid4().hex, nc.new_inbox()
    sub = await nc.subscribe(reply)
    x, y, a = [float(i) for i in range(1000)], [1.0] * 1000, 2.0
    headers = {"Nats-Msg-Id": job_id, "Wgpu-Batch-Id": job_id, "Wgpu-Batch-Reply": reply}
    await js.publish("wgpu-batch.jobs", saxpy_job(a, x, y), headers=headers)
    result = await sub.next_msg(timeout=60)
    y_out = struct.unpack("<1000f", read_result(result.data)[2])
    assert all(v == a * xi + yi for v, xi, yi in zip(y_out, x, y)), "wrong result"
    print(f"saxpy on a worker: {len(y_out)} values, all right (y[999] = {y_out[999]})")
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"))
