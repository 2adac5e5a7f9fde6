"""The scoring server under load and under abuse, measured on loopback.

    python -m benchmarks.load [--clients 32] [--seconds 60] [--workers 1 2 4] [--rounds 3]   (`make bench-serve`)

Load: for each worker count (each ROUNDS times, interleaved; medians reported), `python -m
stages.serve` on the champion (`make promote` first),
then CLIENTS concurrent clients, each posting one raw-pixel MNIST test image as soon as the last
answer came, for SECONDS: answers, errors, p50/p99 latency, requests per second, and the peak
memory of the server's processes (PSS: shared pages counted once). The clients (aiohttp, one event loop) share the
machine with the server: on 2 cores they take part of one.

Abuse, against the fastest worker count, once warm, while 4 clients keep posting good requests: a 50 MB body
(declared, then streamed without a length), JSON nested 100,000 deep, a client that sends its
headers a byte a second, and one that sends its body a byte a second. Each must be refused (4xx)
or cut off (the connection closed) within seconds, the good clients must see no error, and what the
server's processes allocate must stay bounded (their anonymous memory: PSS moves with other
processes). Writes benchmarks/serve.json, with the machine's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import psutil

ROOT = Path(__file__).resolve().parents[1]
BIG = 50 * 2**20


def image_body(repo: Path = ROOT) -> bytes:
    """One real test image (raw 0-255 pixels) as the JSON a client posts."""
    from mnistcnn.data import mnist
    from mnistcnn.params import config  # noqa: PLC0415

    paths = config.load(repo / "params.yaml").paths
    provenance = json.loads((repo / paths.provenance).read_text())
    data = mnist.load_split(repo / paths.test_data, "test", provenance, str(paths.provenance))
    return json.dumps({"inputs": data["test_images"][:1].tolist()}).encode()


async def _load(url: str, body: bytes, clients: int, seconds: float) -> dict:
    import aiohttp  # noqa: PLC0415

    latencies, errors = [], []
    deadline = time.monotonic() + seconds

    async def client(session) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                async with session.post(f"{url}/invocations", data=body,
                                        headers={"Content-Type": "application/json"}) as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors.append(f"HTTP {answer.status}")
                        continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                errors.append(type(err).__name__)
                continue
            latencies.append(time.monotonic() - started)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    ordered = sorted(latencies) or [float("nan")]
    return {"clients": clients, "seconds": seconds, "answers": len(latencies), "errors": len(errors),
            "error_kinds": sorted(set(errors)), "requests_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)}


def load(url: str, body: bytes, clients: int, seconds: float) -> dict:
    """CLIENTS clients posting `body` back to back for SECONDS; what they saw."""
    return asyncio.run(_load(url, body, clients, seconds))


def _rollup(process: psutil.Process, field: str) -> int:
    """One field of /proc/PID/smaps_rollup, in bytes, summed over a process and its children."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with suppress(FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            rollup = Path(f"/proc/{member.pid}/smaps_rollup").read_text()
            total += sum(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith(f"{field}:"))
    return total


def memory(process: psutil.Process) -> int:
    """The memory of a process and its children together: the sum of their proportional set sizes
    (PSS: each page shared by n of them counts 1/n), so that torch's libraries count once."""
    return _rollup(process, "Pss")


def allocated(process: psutil.Process) -> int:
    """The anonymous memory of a process and its children (their heaps: what they allocated, a body
    read included). Unlike PSS it does not move when other processes map or unmap the same libraries:
    a torch process's PSS falls by 190 MB while four other torch processes run, and rises back."""
    return _rollup(process, "Anonymous")


class PeakMemory:
    """The largest memory() and allocated() of a process and its children while the block runs, sampled
    every 0.2 s; `start` and `start_allocated`, what they held as it began; `growth`, how much more they
    allocated at the peak (the measure to bound: PSS also moves with other processes)."""

    def __init__(self, pid: int):
        self.process, self._stop = psutil.Process(pid), threading.Event()
        self.start = self.peak = memory(self.process)
        self.start_allocated = self.peak_allocated = allocated(self.process)
        self.members = {self.process, *self.process.children(recursive=True)}
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def growth(self) -> int:
        return self.peak_allocated - self.start_allocated

    @property
    def replaced(self) -> list[int]:
        """The processes there at the start that are gone (a worker that died): then `growth` counts
        the replacement's start, not what any request allocated."""
        return sorted(member.pid for member in self.members if not member.is_running())

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, memory(self.process))
            self.peak_allocated = max(self.peak_allocated, allocated(self.process))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return host, int(port)


def _answer(sock: socket.socket, timeout: float) -> str:
    """The status line the server sent, or 'closed' when it closed without one, or 'no answer'."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return "no answer"
    except ConnectionResetError:
        return "closed"
    return data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"


def _request_head(url: str, **headers: str) -> bytes:
    host, port = _address(url)
    lines = ["POST /invocations HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def big_body(url: str, chunked: bool = False, limit: float = 30) -> str:
    """Send a 50 MB body (declared in Content-Length, or chunked with none); what the server did."""
    head = _request_head(url, **({"Transfer_Encoding": "chunked"} if chunked else {"Content_Length": str(BIG)}))
    block = b"[" * 2**20
    with socket.create_connection(_address(url), timeout=limit) as sock:
        sock.sendall(head)
        try:
            for _ in range(BIG // len(block)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer may still be there
        return _answer(sock, limit)


def deep_json(url: str, depth: int = 100_000, limit: float = 30) -> str:
    body = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    with socket.create_connection(_address(url), timeout=limit) as sock:
        sock.sendall(_request_head(url, Content_Length=str(len(body))) + body)
        return _answer(sock, limit)


def slow(url: str, part: str, limit: float = 60) -> str:
    """A client sending its headers (`part` = 'headers') or its body ('body') a byte a second."""
    body = b'{"inputs": [[[0]]]}'
    head = _request_head(url, Content_Length=str(len(body)))
    trickle = head if part == "headers" else body
    with socket.create_connection(_address(url), timeout=limit) as sock:
        if part == "body":
            sock.sendall(head)
        deadline = time.monotonic() + limit
        for byte in trickle:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                return "closed"
            answer = _answer(sock, 1.0)
            if answer != "no answer" or time.monotonic() > deadline:
                return answer
        return _answer(sock, limit)


def timed(probe, url: str, *args) -> dict:
    """What `probe(url, *args)` met, and how long it took to meet it."""
    started = time.monotonic()
    outcome = probe(url, *args)
    return {"outcome": outcome, "seconds": round(time.monotonic() - started, 2)}


ABUSES = {"50 MB body, declared": (big_body,), "50 MB body, chunked": (big_body, True),
          "JSON 100,000 deep": (deep_json,), "headers a byte a second": (slow, "headers"),
          "body a byte a second": (slow, "body")}


def abuse(url: str, body: bytes, pid: int) -> dict:
    """Every abuse at once, while 4 clients post good requests; what each met, what the clients
    saw, and the server's peak memory."""
    results: dict = {}
    threads = [threading.Thread(target=lambda n=name, p=probe: results.__setitem__(n, timed(p[0], url, *p[1:])))
               for name, probe in ABUSES.items()]
    for thread in threads:
        thread.start()
    with PeakMemory(pid) as peak:
        good = load(url, body, clients=4, seconds=20)
        for thread in threads:
            thread.join()
    return {"abuses": results, "good_clients_meanwhile": good, **megabytes(peak)}


def megabytes(peak: PeakMemory) -> dict:
    return {"memory_before_mb": round(peak.start / 2**20), "memory_peak_mb": round(peak.peak / 2**20),
            "allocated_growth_mb": round(peak.growth / 2**20)}


@contextmanager
def serving(repo: Path, workers: int, env: dict | None = None, log: Path | None = None) -> Iterator[tuple[str, int]]:
    """`python -m stages.serve` in `repo` on a free port, its output in `log`; yields its URL and
    process id once it answers /ping, then stops it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = log or Path(tempfile.gettempdir()) / f"mnistcnn-serve-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "stages.serve", "--port", str(port), "--workers",
                                    str(workers)], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the scoring server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url, process.pid
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def main() -> None:
    from mnistcnn.training.engine import cpu_name  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3, help="each worker count this many times, interleaved")
    args = parser.parse_args()
    body, runs = image_body(), []
    for _ in range(args.rounds):
        for workers in args.workers:
            with serving(ROOT, workers) as (url, pid):
                load(url, body, args.clients, 5)  # warm: each worker's first requests
                with PeakMemory(pid) as peak:
                    result = load(url, body, args.clients, args.seconds)
                runs.append({"workers": workers, **result, **megabytes(peak)})
                print(json.dumps(runs[-1]), flush=True)
    medians = {workers: {key: statistics.median(run[key] for run in runs if run["workers"] == workers)
                         for key in ("requests_per_s", "p50_ms", "p99_ms", "errors", "memory_peak_mb")}
               for workers in args.workers}
    best = max(args.workers, key=lambda w: (medians[w]["errors"] == 0, medians[w]["requests_per_s"]))
    with serving(ROOT, best) as (url, pid):
        load(url, body, args.clients, 5)
        abused = {"workers": best, **abuse(url, body, pid)}
    print(json.dumps({"medians": medians, "abuse": abused}, indent=1))
    out = {"machine": cpu_name(), "cores": psutil.cpu_count(), "medians": medians, "runs": runs, "abuse": abused}
    (ROOT / "benchmarks/serve.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
