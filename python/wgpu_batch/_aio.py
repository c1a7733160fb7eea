"""asyncio glue: ``await handle`` resolves a future on the loop's own thread."""

import asyncio


def _settle(fut, ok, value):
    # Runs on the loop's thread (handed over with call_soon_threadsafe).
    if fut.done():  # the awaiting task was cancelled meanwhile
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _settle_all(items):
    # One call per batch of finished jobs (see python/src/aio.rs).
    for fut, ok, value in items:
        _settle(fut, ok, value)


def future_for(handle):
    """A future of the running loop that the job's completion resolves; cancelling it
    cancels the job."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    handle._notify(loop, fut)
    fut.add_done_callback(lambda f: handle.cancel() if f.cancelled() else None)
    return fut
