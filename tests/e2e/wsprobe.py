#!/usr/bin/env python3
"""WebSocket client for the end-to-end tests (runs inside the sandbox).

    wsprobe.py echo URL          text and binary echo; exit 0 if both match
    wsprobe.py hold URL FILE     echo once, write "open" to FILE, then wait
                                 (at most 5 min) for the server to close;
                                 print the close code
    wsprobe.py close URL         echo once, close with 1000 "bye" as a page
                                 does; print the close code the client
                                 reports (1006 if the server never answered
                                 the Close frame)
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


async def close(url):
    ws = await websockets.connect(url)
    await ws.send("bye")
    await ws.recv()
    # Waits (close_timeout, 10 s by default) for the server's Close frame.
    await ws.close(code=1000, reason="bye")
    print(ws.close_code)


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "echo":
        asyncio.run(echo(url))
    elif mode == "close":
        asyncio.run(close(url))
    else:
        asyncio.run(hold(url, sys.argv[3]))
