"""Bench-only: the Python anchor of scripts/bench's fan-out suite, served
by Gunicorn + UvicornWorker. `/chat/{room}` speaks ferricorn's chat
protocol (src/app/chat.rs): a `welcome` to the joiner, `join`/`leave` and
`message` events as compact JSON text frames to every member, the sender
included.

Cross-worker fan-out is Redis pub/sub the way FastAPI guides show it: one
Redis subscription per WebSocket member on channel `chat:{room}`, and
every event PUBLISHed there. It uses `redis.asyncio` (redis-py) directly,
not the `broadcaster` package, which is broken with redis-py 8. The Redis
URL comes from `REDIS_URL`.
"""
import asyncio
import json
import os
import uuid

import redis.asyncio as redis
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()

_client = None


def client():
    """The process's publishing client, made on first use: in the worker,
    on its event loop, never before Gunicorn forks."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    return _client


def encode(event):
    # The bytes ferricorn sends (serde_json is compact).
    return json.dumps(event, separators=(",", ":"))


@app.get("/health")
async def health():
    return {"status": "healthy"}


@app.websocket("/chat/{room}")
async def chat(websocket: WebSocket, room: str):
    await websocket.accept()
    member = uuid.uuid4().hex[:12]
    channel = f"chat:{room}"
    r = client()
    pubsub = r.pubsub()
    await pubsub.subscribe(channel)
    # Subscribed before announced: wait for Redis's confirmation, so the
    # member hears its own join and everything after it.
    while True:
        confirmation = await pubsub.get_message(timeout=5.0)
        if confirmation is None or confirmation["type"] == "subscribe":
            break
    await websocket.send_text(encode({"type": "welcome", "room": room, "member": member}))
    await r.publish(channel, encode({"type": "join", "member": member}))

    async def from_client():
        try:
            while True:
                text = await websocket.receive_text()
                await r.publish(channel, encode({"type": "message", "from": member, "text": text}))
        except WebSocketDisconnect:
            pass

    async def to_client():
        async for message in pubsub.listen():
            if message["type"] == "message":
                await websocket.send_text(message["data"])

    tasks = [asyncio.create_task(from_client()), asyncio.create_task(to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await r.publish(channel, encode({"type": "leave", "member": member}))
            await pubsub.unsubscribe(channel)
        finally:
            await pubsub.aclose()
        try:
            await websocket.close()
        except Exception:
            pass  # the client closed first
