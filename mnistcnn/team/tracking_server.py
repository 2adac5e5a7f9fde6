"""The team's tracking server: MLflow on a real PostgreSQL server, everything in one folder.

`make server` starts it and `make server-stop` stops it (stages/tracking_server.py). The
folder (git-ignored `server/` by default) holds:

    postgres/      the PostgreSQL cluster: the backend store (experiments, runs, metrics)
    artifacts/     models and figures, which the MLflow server proxies: clients need
                   no access to this folder, only to the server's address
    mlflow.json    the running MLflow server: process id, start time, address
    mlflow.log     its log
    *.password     the admin's, the promoter's and the study storage's (mode 0600: mnistcnn/team/access.py)

PostgreSQL comes from the `pgserver` wheel, which ships the real server binaries, so
no root and no system package is needed (mnistcnn/team/postgres.py). MLflow runs its authentication
app (mnistcnn/team/access.py) and binds to 127.0.0.1 unless told otherwise; another address
also needs the host names clients will use (`allowed_hosts`, MLflow's check against DNS
rebinding). Both keep running after `make server` returns, and a restart finds every run
and every user where they were.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from mnistcnn.team import access, postgres, ui
from mnistcnn.tracking import health

LOOPBACK = "localhost"
ANY = ("0.0.0.0", "::")  # every interface
START_TIMEOUT = 120  # seconds: the first start creates MLflow's tables
STOP_TIMEOUT = 30


class ServerError(Exception):
    """The server could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class Server:
    folder: Path
    host: str
    port: int
    study_url: str = ""  # the search's study storage: PostgreSQL over TCP, with its password

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def study_url_file(self) -> Path:
        """study_url, in a file only its owner reads: printed, it would stay in logs and scrollback."""
        return self.folder / "search_storage.url"


def _record(folder: Path) -> Path:
    return folder / "mlflow.json"


def _local(host: str) -> str:
    """The address this machine reaches a server bound to `host` by."""
    return "127.0.0.1" if host in ANY else host


def is_loopback(host: str) -> bool:
    try:
        return host == LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start(folder: Path, host: str, port: int, workers: int = 2, study_port: int | None = None,
          allowed_hosts: str = "", model_name: str = "mnist-compact-cnn") -> Server:
    """Start PostgreSQL (the study storage on `study_port`, a free one if None) and the MLflow
    server on it, with authentication (its users made ready for `model_name`: mnistcnn/team/access.py),
    unless already running; returns the server once it answers /health. A host other than loopback
    needs `allowed_hosts`: the comma-separated host names (and :ports) clients will reach it by."""
    if not is_loopback(host) and not allowed_hosts:
        raise ServerError(f"binding to {host} lets other machines reach the server: name the host names they "
                          "will use with --allowed-hosts (e.g. mlflow.example.org,10.0.0.5:5001), and put TLS "
                          "in front of it (README: Security)")
    folder = folder.resolve()
    running = _running(folder)
    if running is not None:
        process, record = running
        study = postgres.study_url(folder, record["host"], record["study_port"]) if "study_port" in record else ""
        server = Server(folder, record["host"], record["port"], study)
        if health.check(server.url):
            return _with_url_file(server)
        raise ServerError(f"the MLflow server of {folder} (process {process.pid}) does not answer at "
                          f"{server.url}: see {folder / 'mlflow.log'}, or stop it with `make server-stop`")
    if health.check(f"http://{host}:{port}"):
        raise ServerError(f"port {port} on {host} already has a server: choose another with MLFLOW_PORT=...")
    study_port = study_port or _free_port(host)
    backend, users, study_url = postgres.start(folder, host, study_port)
    server = Server(folder, host, port, study_url)
    (folder / "artifacts").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", backend,
               "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
               "--host", host, "--port", str(port), "--workers", str(workers),
               *(["--allowed-hosts", f"{allowed_hosts},{_local(host)}:{port}"] if allowed_hosts else [])]
    with open(folder / "mlflow.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **ui.SERVER_ENV, **access.server_env(folder, users)},
                                   start_new_session=True)  # its own group: `stop` ends its workers too
    started = f"{psutil.Process(process.pid).create_time():.2f}"
    _record(folder).write_text(json.dumps({"pid": process.pid, "started": started, "host": host, "port": port,
                                          "study_port": study_port}))
    deadline = time.monotonic() + START_TIMEOUT
    while not health.check(server.url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(folder)
            raise ServerError(f"the MLflow server did not start at {server.url}: see {folder / 'mlflow.log'}")
        time.sleep(0.5)
    try:
        access.bootstrap(f"http://{_local(host)}:{port}", folder, model_name)
    except (access.AccessError, OSError) as err:
        stop(folder)
        raise ServerError(f"the MLflow server started but its users could not be set up ({err}): "
                          f"see {folder / 'mlflow.log'}") from None
    return _with_url_file(server)


def _with_url_file(server: Server) -> Server:
    access.rewritten_private_file(server.study_url_file, server.study_url)  # the host or port can change
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
