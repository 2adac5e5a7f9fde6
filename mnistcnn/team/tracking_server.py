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
rebinding), and turns TLS on for both servers, with a CA of the server's own (`tls/`:
mnistcnn/team/tls.py). Both keep running after `make server` returns, and a restart finds every
run and every user where they were.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from mnistcnn.team import access, addresses, postgres, processes, tls, ui
from mnistcnn.tracking import health

START_TIMEOUT = 120  # seconds: the first start creates MLflow's tables


class ServerError(Exception):
    """The server could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class Server:
    folder: Path
    host: str
    port: int
    study_url: str = ""  # the search's study storage: PostgreSQL over TCP, with its password
    encrypted: bool = False  # TLS on both, with the CA in `ca` (off loopback)

    @property
    def url(self) -> str:
        """Where other machines reach it (and this one, through that address)."""
        return f"{'https' if self.encrypted else 'http'}://{addresses.public(self.host)}:{self.port}"

    @property
    def local_url(self) -> str:
        """Where the server's own machine reaches it."""
        return f"{'https' if self.encrypted else 'http'}://{addresses.local(self.host)}:{self.port}"

    @property
    def ca(self) -> Path:
        """The certificate clients trust the server by: MLFLOW_TRACKING_SERVER_CERT_PATH and PGSSLROOTCERT."""
        return tls.Certificates(self.folder / "tls").ca

    @property
    def verify(self) -> str | bool:
        """What the server's own requests check its certificate against: its CA, when it speaks TLS."""
        return str(self.ca) if self.encrypted else True

    @property
    def study_url_file(self) -> Path:
        """study_url, in a file only its owner reads: printed, it would stay in logs and scrollback."""
        return self.folder / "search_storage.url"


def _record(folder: Path) -> dict:
    try:
        return json.loads((folder / "mlflow.json").read_text())
    except (OSError, ValueError):
        return {}


def running(folder: Path) -> Server | None:
    """The server started from `folder`, while its MLflow process runs (answering or not)."""
    record = _record(folder.resolve())
    if processes.alive(record) is None:
        return None
    encrypted = record.get("encrypted", False)
    study = postgres.study_url(folder.resolve(), record["host"], record["study_port"], encrypted)
    return Server(folder.resolve(), record["host"], record["port"], study, encrypted)


def start(folder: Path, host: str, port: int, workers: int = 2, study_port: int | None = None,
          allowed_hosts: str = "", model_name: str = "mnist-compact-cnn") -> Server:
    """Start PostgreSQL (the study storage on `study_port`, a free one if None) and the MLflow
    server on it, with authentication (its users made ready for `model_name`: mnistcnn/team/access.py),
    unless already running; returns the server once it answers /health. A host other than loopback
    needs `allowed_hosts`: the comma-separated host names (and :ports) clients will reach it by,
    and both servers then take TLS connections only."""
    if not addresses.is_loopback(host) and not allowed_hosts:
        raise ServerError(f"binding to {host} lets other machines reach the server: name the host names they "
                          "will use with --allowed-hosts (e.g. mlflow.example.org,10.0.0.5:5001); "
                          "it then speaks TLS only (docs/team.md)")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    server = running(folder)
    if server is not None:
        if health.check(server.local_url, cafile=server.ca):
            return _with_url_file(server)
        raise ServerError(f"the MLflow server of {folder} does not answer at "
                          f"{server.url}: see {folder / 'mlflow.log'}, or stop it with `make server-stop`")
    stop(folder)  # what is left of a server whose MLflow died: its TLS front, PostgreSQL
    for taken in (port, study_port):
        if taken and addresses.listening(host, taken):
            raise ServerError(f"port {taken} on {host} already has a server: choose another with "
                              "SERVER_PORT=... or STUDY_PORT=...")
    study_port = study_port or addresses.free_port(host)
    encrypted = not addresses.is_loopback(host)
    record = {"host": host, "port": port, "study_port": study_port, "encrypted": encrypted}
    if encrypted:  # PostgreSQL on loopback, behind the TLS front on the study port
        certificates = tls.ensure(folder, tls.names_for(addresses.public(host), allowed_hosts))
        backend, users, _ = postgres.start(folder, "127.0.0.1", internal := addresses.free_port("127.0.0.1"))
        record["front"] = _front(folder, host, study_port, internal, certificates)
    else:
        certificates = None
        backend, users, _ = postgres.start(folder, host, study_port)
    server = Server(folder, host, port, postgres.study_url(folder, host, study_port, encrypted), encrypted)
    (folder / "artifacts").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", backend,
               "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
               "--host", host, "--port", str(port), "--workers", str(workers),
               *(["--allowed-hosts", f"{allowed_hosts},{addresses.local(host)}:{port}"] if allowed_hosts else []),
               *(["--uvicorn-opts", f"--ssl-keyfile {certificates.key} --ssl-certfile {certificates.certificate}"]
                 if certificates else [])]
    record |= processes.spawn(command, folder / "mlflow.log",
                              env={**os.environ, **ui.SERVER_ENV, **access.server_env(folder, users)})
    (folder / "mlflow.json").write_text(json.dumps(record))
    deadline = time.monotonic() + START_TIMEOUT
    while not health.check(server.local_url, cafile=server.ca):
        if processes.alive(record) is None or time.monotonic() > deadline:
            stop(folder)
            raise ServerError(f"the MLflow server did not start at {server.url}: see {folder / 'mlflow.log'}")
        time.sleep(0.5)
    try:
        access.bootstrap(server.local_url, folder, model_name, verify=server.verify)
    except (access.AccessError, OSError) as err:
        stop(folder)
        raise ServerError(f"the MLflow server started but its users could not be set up ({err}): "
                          f"see {folder / 'mlflow.log'}") from None
    return _with_url_file(server)


def _front(folder: Path, host: str, port: int, internal: int, certificates: tls.Certificates) -> dict:
    """The TLS front of PostgreSQL (mnistcnn/team/pg_tls.py) on host:port, once it listens; its record."""
    record = processes.spawn([sys.executable, "-m", "mnistcnn.team.pg_tls", "--listen", host, "--port", str(port),
                              "--to", str(internal), "--cert", str(certificates.certificate),
                              "--key", str(certificates.key)], folder / "pg_tls.log")
    deadline = time.monotonic() + 30
    while not addresses.listening(host, port):
        if processes.alive(record) is None or time.monotonic() > deadline:
            if process := processes.alive(record):
                processes.end(process)
            raise ServerError(f"PostgreSQL's TLS front did not start on {host}:{port}: see {folder / 'pg_tls.log'}")
        time.sleep(0.2)
    return record


def _with_url_file(server: Server) -> Server:
    access.rewritten_private_file(server.study_url_file, server.study_url)  # the host or port can change
    return server


def stop(folder: Path) -> list[str]:
    """Stop the MLflow server, PostgreSQL's TLS front, then PostgreSQL (a fast shutdown: committed
    data stays); returns what was stopped."""
    folder = folder.resolve()
    stopped = []
    record = _record(folder)
    for name, entry in (("MLflow server", record), ("PostgreSQL's TLS front", record.get("front"))):
        if process := processes.alive(entry):
            processes.end(process)
            stopped.append(f"{name} (process {process.pid})")
    (folder / "mlflow.json").unlink(missing_ok=True)
    pid_file = folder / "postgres" / "postmaster.pid"
    try:
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return stopped
    processes.end(postmaster, signal.SIGINT, group=False)  # SIGINT: PostgreSQL's "fast" shutdown
    stopped.append(f"PostgreSQL (process {postmaster.pid})")
    return stopped
