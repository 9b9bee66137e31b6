#!/usr/bin/python3
"""A TCP proxy that adds a fixed delay to each direction (a stand-in for
sch_netem, which needs kernel modules): every chunk read on one side is
written to the other side DELAY seconds after it was read, in order.

Usage: proxy.py LISTEN_PORT TARGET_PORT DELAY_MS   (127.0.0.1 on both sides)
"""
import asyncio
import sys
import time

LISTEN, TARGET, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000


async def pump(reader, writer):
    queue = asyncio.Queue()

    async def send():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((time.monotonic() + DELAY, data))
    except ConnectionError:
        pass
    queue.put_nowait((0, None))
    try:
        await sender
    except ConnectionError:
        pass


async def handle(client_r, client_w):
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    print(f"proxy: 127.0.0.1:{LISTEN} -> 127.0.0.1:{TARGET}, {DELAY * 1000:.0f} ms each way", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
