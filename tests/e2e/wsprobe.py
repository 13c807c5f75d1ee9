#!/usr/bin/env python3
"""WebSocket client for the end-to-end tests (runs inside the sandbox).

    wsprobe.py echo URL          text and binary echo; exit 0 if both match
    wsprobe.py hold URL FILE     echo once, write "open" to FILE, then wait
                                 (at most 5 min) for the server to close;
                                 print the close code
"""
import asyncio
import sys

import websockets


async def echo(url):
    async with websockets.connect(url) as ws:
        await ws.send("hello ferricorn")
        assert await ws.recv() == "hello ferricorn", "text echo"
        await ws.send(b"\x00\x01\xfe\xff")
        assert await ws.recv() == b"\x00\x01\xfe\xff", "binary echo"
        pong = await ws.ping(b"p")
        await asyncio.wait_for(pong, 5)
    print("echo ok")


async def hold(url, marker):
    async with websockets.connect(url) as ws:
        await ws.send("hi")
        await ws.recv()
        with open(marker, "w") as f:
            f.write("open\n")
        try:
            await asyncio.wait_for(ws.recv(), 300)
        except websockets.exceptions.ConnectionClosed:
            pass
        print(ws.close_code)


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "echo":
        asyncio.run(echo(url))
    else:
        asyncio.run(hold(url, sys.argv[3]))
