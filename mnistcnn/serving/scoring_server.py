"""The scoring server `make serve` runs: MLflow's own scoring app, behind guards against abuse.

MLflow's app (`mlflow.pyfunc.scoring_server`) scores what it is sent, however it is sent.
Uvicorn, which runs it, waits forever for a client that sends its request a byte at a
time, and reads a body of any size into memory. So each request here must

- bring its headers within HEADER_TIMEOUT seconds of connecting (or of the previous
  response, on a kept-alive connection), else the connection is closed;
- declare or stream a body of at most MAX_BODY bytes, else 413, before more is read;
- deliver its whole body within BODY_TIMEOUT seconds, else 408;
- nest its JSON at most MAX_DEPTH deep (an image batch is 4 deep), else 400;

and each worker holds at most MAX_CONNECTIONS connections (more are answered 503).
The numbers come from the load test (benchmarks/load.py; docs/serving.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from uvicorn.protocols.http.h11_impl import H11Protocol

MODEL_PATH = "MNISTCNN_SERVED_MODEL"  # the environment variable naming the model each worker loads
HEADER_TIMEOUT = 5.0  # seconds
BODY_TIMEOUT = 10.0  # seconds: a full batch over a slow link takes well under this
MAX_BODY = 8 * 2**20  # bytes: a full batch (1024 images) of integer pixels is about 3.2 MB
MAX_DEPTH = 8
MAX_CONNECTIONS = 64  # per worker
_SPECIAL = re.compile(rb'[\[\]{}"\\]')


class Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def json_depth(body: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest, without parsing its values."""
    depth = deepest = 0
    in_string, escaped_at = False, -1  # the position of the character a backslash escapes
    for match in _SPECIAL.finditer(body):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == b"\\":
                escaped_at = at + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in b"]}":
            depth -= 1
    return deepest


async def read_body(receive, declared: int | None) -> bytes:
    """The request's body, or a Refusal when it is too large or too slow to arrive."""
    if declared is not None and declared > MAX_BODY:
        raise Refusal(413, f"the request body is {declared} bytes, more than {MAX_BODY}: split the batch")
    parts, size = [], 0

    async def collect() -> None:
        nonlocal size
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refusal(400, "the client went away")
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > MAX_BODY:
                raise Refusal(413, f"the request body is more than {MAX_BODY} bytes: split the batch")
            if not message.get("more_body"):
                return

    try:
        await asyncio.wait_for(collect(), BODY_TIMEOUT)
    except TimeoutError:
        raise Refusal(408, f"the request body did not arrive within {BODY_TIMEOUT:g} s") from None
    return b"".join(parts)


def guarded(app):
    """`app` (ASGI) behind the body checks: it sees only bodies that passed them."""

    async def guard(scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await app(scope, receive, send)
        headers = dict(scope["headers"])
        try:
            length = headers.get(b"content-length")
            body = await read_body(receive, int(length) if length and length.isdigit() else None)
            if b"json" in headers.get(b"content-type", b"") and json_depth(body) > MAX_DEPTH:
                raise Refusal(400, f"the JSON nests deeper than {MAX_DEPTH} levels: a batch of images nests 4")
        except Refusal as refusal:
            payload = json.dumps({"error_code": "BAD_REQUEST", "message": str(refusal)}).encode()
            await send({"type": "http.response.start", "status": refusal.status,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
            return await send({"type": "http.response.body", "body": payload})

        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # the disconnect, when the client goes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return guard


class GuardedH11Protocol(H11Protocol):
    """Uvicorn's HTTP/1.1 protocol, closing a connection whose request headers are late."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers arrived in full
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # before: a pipelined request, handled inside, disarms it
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(HEADER_TIMEOUT, self._cut_off)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cut_off(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def create_app():
    """Each worker's app (uvicorn's factory): the model at $MNISTCNN_SERVED_MODEL, guarded."""
    import torch  # noqa: PLC0415 (in the worker, not in the process that starts them)
    from mlflow.pyfunc import load_model, scoring_server  # noqa: PLC0415

    torch.set_num_threads(1)  # one core a worker: workers, not threads, use the machine
    return guarded(scoring_server.init(load_model(os.environ[MODEL_PATH])))


def run(model_path: str, host: str, port: int, workers: int) -> None:
    """Serve the pyfunc model saved at `model_path` until interrupted."""
    import uvicorn  # noqa: PLC0415

    os.environ[MODEL_PATH] = model_path
    uvicorn.run("mnistcnn.serving.scoring_server:create_app", factory=True, host=host, port=port, workers=workers,
                http=GuardedH11Protocol, limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5,
                h11_max_incomplete_event_size=16 * 1024, log_level="warning")


def serve(model_path: Path, folder: Path, host: str, port: int, workers: int) -> NoReturn:
    """Become (exec) the server of the model at `model_path`; `folder`, which holds it, goes when it stops.
    Each worker re-imports the main module before it answers uvicorn's health check, and is killed
    when it has not answered in 5 s: this light module, not the stage that loaded torch and MLflow
    (16 s on a busy 2-core machine, where workers were restarted in a loop and never served)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", __name__, str(model_path), str(folder), host, str(port),
                              str(workers)])


if __name__ == "__main__":  # only as serve() runs it
    model, where, address, port_number, worker_count = sys.argv[1:]
    try:
        run(model, address, int(port_number), int(worker_count))
    finally:
        shutil.rmtree(where, ignore_errors=True)
