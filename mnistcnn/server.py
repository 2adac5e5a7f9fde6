"""The team's tracking server: MLflow on a real PostgreSQL server, everything in one folder.

`make server` starts it and `make server-stop` stops it (stages/server.py). The
folder (git-ignored `server/` by default) holds:

    postgres/      the PostgreSQL cluster: the backend store (experiments, runs, metrics)
    artifacts/     models and figures, which the MLflow server proxies: clients need
                   no access to this folder, only to the server's address
    mlflow.json    the running MLflow server: process id, start time, address
    mlflow.log     its log

PostgreSQL comes from the `pgserver` wheel, which ships the real server binaries, so
no root and no system package is needed. It listens on a Unix socket only; MLflow
binds to 127.0.0.1 unless told otherwise. Both keep running after `make server`
returns, and a restart finds every run where it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

from mnistcnn import health, ui

DATABASE = "mlflow"
START_TIMEOUT = 120  # seconds: the first start creates MLflow's tables
STOP_TIMEOUT = 30


class ServerError(Exception):
    """The server could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class Server:
    folder: Path
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _record(folder: Path) -> Path:
    return folder / "mlflow.json"


def _postgres(folder: Path) -> str:
    """Start PostgreSQL on the cluster in `folder`/postgres (created on first use); returns the
    SQLAlchemy URI of MLflow's database in it, created if missing."""
    with warnings.catch_warnings():  # pgserver's note that $XDG_RUNTIME_DIR is unset: harmless
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415 (server-only dependencies: the stages never import them)
    import psycopg2  # noqa: PLC0415

    (folder / "postgres").mkdir(parents=True, exist_ok=True)
    # Not get_server(), which would hand back a handle cached in this process though the server
    # has since stopped; the constructor starts it when it is not running. It outlives this process.
    postgres = pgserver.PostgresServer((folder / "postgres").resolve(), cleanup_mode=None)
    connection = psycopg2.connect(postgres.get_uri())
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        connection.close()
    return postgres.get_uri(DATABASE).replace("postgresql://", "postgresql+psycopg2://", 1)


def _running(folder: Path) -> tuple[psutil.Process, dict] | None:
    """The MLflow server started from `folder` and its record (address, start), while it runs."""
    try:
        record = json.loads(_record(folder).read_text())
        process = psutil.Process(record["pid"])
        if f"{process.create_time():.2f}" == record["started"]:  # not a reused process id
            return process, record
    except (OSError, ValueError, KeyError, psutil.NoSuchProcess):
        pass
    return None


def start(folder: Path, host: str, port: int, workers: int = 2) -> Server:
    """Start PostgreSQL and the MLflow server on it, unless already running; returns the server
    once it answers /health."""
    folder = folder.resolve()
    server = Server(folder, host, port)
    running = _running(folder)
    if running is not None:
        process, record = running
        server = Server(folder, record["host"], record["port"])
        if health.check(server.url):
            return server
        raise ServerError(f"the MLflow server of {folder} (process {process.pid}) does not answer at "
                          f"{server.url}: see {folder / 'mlflow.log'}, or stop it with `make server-stop`")
    if health.check(server.url):
        raise ServerError(f"port {port} on {host} already has a server: choose another with MLFLOW_PORT=...")
    backend = _postgres(folder)
    (folder / "artifacts").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
               "--host", host, "--port", str(port), "--workers", str(workers)]
    with open(folder / "mlflow.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **ui.SERVER_ENV},
                                   start_new_session=True)  # its own group: `stop` ends its workers too
    started = f"{psutil.Process(process.pid).create_time():.2f}"
    _record(folder).write_text(json.dumps({"pid": process.pid, "started": started, "host": host, "port": port}))
    deadline = time.monotonic() + START_TIMEOUT
    while not health.check(server.url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(folder)
            raise ServerError(f"the MLflow server did not start at {server.url}: see {folder / 'mlflow.log'}")
        time.sleep(0.5)
    return server


def _end(process: psutil.Process, sig: int, group: bool) -> None:
    """Send `sig` (to the process group with `group`), wait, then kill what is left."""
    try:
        os.killpg(process.pid, sig) if group else process.send_signal(sig)
        process.wait(STOP_TIMEOUT)
    except psutil.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass


def stop(folder: Path) -> list[str]:
    """Stop the MLflow server, then PostgreSQL (a fast shutdown: committed data stays);
    returns what was stopped."""
    folder = folder.resolve()
    stopped = []
    running = _running(folder)
    if running is not None:
        process, _ = running
        _end(process, signal.SIGTERM, group=True)
        stopped.append(f"MLflow server (process {process.pid})")
    _record(folder).unlink(missing_ok=True)
    pid_file = folder / "postgres" / "postmaster.pid"
    try:
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return stopped
    _end(postmaster, signal.SIGINT, group=False)  # SIGINT: PostgreSQL's "fast" shutdown
    stopped.append(f"PostgreSQL (process {postmaster.pid})")
    return stopped
