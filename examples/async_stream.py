"""`async for` over store.events(): the event loop keeps running while the stream waits.

Run: python examples/async_stream.py [STORE_DIR]
"""

import asyncio
import io
import sys
import tempfile

import kvstore

OTHER = "import io, sys, kvstore\n" \
        "with kvstore.FileSystemStore(sys.argv[1]) as s:\n" \
        "    s.set('jobs/0001', (io.BytesIO(b'job'), {'state': 'new'}))\n"


async def consume(stream: kvstore.streams.EventStream, seen: asyncio.Queue) -> None:
    async for event in stream:  # the waiting happens in a worker thread, not in the loop
        print(f"{event.action} {event.key} remote={event.remote}")
        await seen.put(event)


async def main(path: str) -> None:
    with kvstore.FileSystemStore(path, create=True) as store:
        seen: asyncio.Queue = asyncio.Queue()
        stream = store.events("jobs/*")
        task = asyncio.create_task(consume(stream, seen))
        # Another process writes; the loop awaits it while the stream waits.
        other = await asyncio.create_subprocess_exec(sys.executable, "-c", OTHER, path)
        await other.wait()
        store.set("jobs/0002", (io.BytesIO(b"job"), {"state": "new"}))
        for _ in range(2):
            await asyncio.wait_for(seen.get(), 10)
        task.cancel()  # cancelling the consumer closes the stream
        try:
            await task
        except asyncio.CancelledError:
            pass
        print(f"stream closed: {stream.closed}")
    print("done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/store"))
