"""Bench-only: the FastAPI app Gunicorn + UvicornWorker and plain Uvicorn
serve in scripts/bench, with the same /health JSON and /ws echo as
ferricorn's app."""
import os

from fastapi import FastAPI, WebSocket

app = FastAPI()


@app.get("/health")
async def health():
    return {
        "status": "healthy",
        "version": "0.1.0",
        "build": "fastapi",
        "pid": os.getpid(),
        "worker": 1,
        "generation": 1,
    }


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"])
