"""Bench-only: the FastAPI app Gunicorn + UvicornWorker and plain Uvicorn
serve in scripts/bench, with the same /health JSON and /ws echo as
ferricorn's app."""
import os

from fastapi import FastAPI, WebSocket

app = FastAPI()

# The same shape as ferricorn's /health; fixed figures.
SUPERVISOR = {
    "generation": 1,
    "workers_ready": 1,
    "workers_target": 1,
    "requests_per_second": 0.0,
    "connections": 0,
    "websockets": 0,
    "restarts": 0,
    "crash_loop": 0,
    "reloading_to": None,
    "last_reload": None,
}


@app.get("/health")
async def health():
    return {
        "status": "healthy",
        "version": "0.1.0",
        "build": "fastapi",
        "pid": os.getpid(),
        "worker": 1,
        "generation": 1,
        "counters": {"requests": 0, "connections": 0, "websockets": 0},
        "supervisor": SUPERVISOR,
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
