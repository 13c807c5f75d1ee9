#!/usr/bin/env python3
"""Two chat members on different hosts of the fleet (tests/e2e/fleet; runs
on the client machine).

    fleetchat.py URL PREFIX

Joins the room at URL (through HAProxy) until two members sit on different
hosts (the welcome names each one's host), and has each say a line the
other must hear (said again every 0.5 s until heard): across hosts, only
Redis carries it. Then writes the two
hosts to PREFIX + "phase1" and waits (at most 2 min) for PREFIX +
"restarted", the sign that Redis was restarted meanwhile; after it, both
must hear each other again within 30 s (a line said while the hosts'
Redis links reconnect may be lost, so each says a new one every 0.5 s
until heard). Exits 0 if all went so.
"""
import asyncio
import json
import os
import sys

import websockets


async def join(url):
    ws = await websockets.connect(url)
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] == "welcome":
            return ws, event


async def heard(ws, text, limit):
    """Waits until `ws` hears a message whose text starts with `text`."""
    async def listen():
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "message" and event["text"].startswith(text):
                return event
    return await asyncio.wait_for(listen(), limit)


async def exchange(a, b, tag, limit, repeat):
    """Each of a and b says lines tagged `tag` until the other hears one."""
    for speaker, listener, name in ((a, b, "a"), (b, a, "b")):
        text = f"{tag} from {name}"

        async def say():
            n = 0
            while True:
                await speaker.send(f"{text} {n}")
                n += 1
                if not repeat:
                    return
                await asyncio.sleep(0.5)

        sayer = asyncio.create_task(say())
        try:
            await heard(listener, text, limit)
        finally:
            sayer.cancel()


async def main(url, prefix):
    a, welcome_a = await join(url)
    for _ in range(20):
        b, welcome_b = await join(url)
        if welcome_b["host"] != welcome_a["host"]:
            break
        await b.close()
    else:
        sys.exit(f"every member landed on {welcome_a['host']}")
    hosts = f"{welcome_a['host']} (pid {welcome_a['pid']}) and {welcome_b['host']} (pid {welcome_b['pid']})"
    print("members on", hosts)
    # Said until heard: b's host may not have its Redis subscription
    # confirmed yet when b's welcome arrives.
    await exchange(a, b, "hello", 10, repeat=True)
    print("exchanged before the restart")
    with open(prefix + "phase1", "w") as f:
        f.write(hosts + "\n")
    for _ in range(1200):
        if os.path.exists(prefix + "restarted"):
            break
        # Keep both sockets read, so pings are answered.
        await asyncio.sleep(0.1)
    else:
        sys.exit("never told Redis was restarted")
    await exchange(a, b, "again", 30, repeat=True)
    print("exchanged after the restart")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
