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
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

from mnistcnn import health, ui

DATABASE = "mlflow"
STUDY_DATABASE = "optuna"  # the search's studies (mnistcnn/search.py), one database for every study
STUDY_PASSWORD = "study.password"  # in the server's folder, mode 0600
# Written at every start. The socket's folder is the cluster's own (mode 0700), so local connections
# are trusted; every TCP connection, from any address, needs a password. No `trust` for TCP.
PG_HBA = """# Written by mnistcnn/server.py at every start: edits are lost.
local all all trust
host  all all 0.0.0.0/0 scram-sha-256
host  all all ::/0      scram-sha-256
"""
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


def _record(folder: Path) -> Path:
    return folder / "mlflow.json"


def _study_password(folder: Path) -> str:
    """The study storage's password: generated on first start, kept readable by its owner only."""
    path = folder / STUDY_PASSWORD
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _pg_ctl(pgdata: Path, args: list[str]) -> None:
    from pgserver._commands import pg_ctl  # noqa: PLC0415

    pg_ctl(args, pgdata=pgdata, user="pgserver" if os.geteuid() == 0 else None, timeout=60)


def _start_postgres(pgdata: Path, host: str, port: int) -> Path:
    """PostgreSQL on its Unix socket (trusted: the folder is its owner's) and on TCP at host:port,
    where every connection needs a password (scram-sha-256); returns the socket's folder.
    A cluster running without that address is restarted with it."""
    with warnings.catch_warnings():  # pgserver's note that $XDG_RUNTIME_DIR is unset: harmless
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415 (server-only dependencies: the stages never import them)
        from pgserver.utils import PostmasterInfo, find_suitable_socket_dir  # noqa: PLC0415

    pgdata.mkdir(parents=True, exist_ok=True)
    if not (pgdata / "PG_VERSION").exists():  # pgserver's initdb (it starts the cluster: stopped below)
        pgserver.PostgresServer(pgdata, cleanup_mode=None)
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running():
        if info.hostname == host and info.port == port and info.socket_dir is not None:
            return info.socket_dir
        _pg_ctl(pgdata, ["-w", "-m", "fast", "stop"])
    (pgdata / "pg_hba.conf").write_text(PG_HBA)
    sockets = find_suitable_socket_dir(pgdata, pgserver.PostgresServer.runtime_path)
    _pg_ctl(pgdata, ["-w", "-o", f"-h {host} -p {port} -k {sockets} -c password_encryption=scram-sha-256",
                     "-l", str(pgdata / "log"), "start"])
    return sockets


def _postgres(folder: Path, host: str, port: int) -> tuple[str, str]:
    """Start PostgreSQL on the cluster in `folder`/postgres (created on first use); returns the
    SQLAlchemy URI of MLflow's database (over the socket) and the URL of the study storage (over
    TCP, as the `optuna` role with the generated password), each database created if missing."""
    import psycopg2  # noqa: PLC0415

    sockets = _start_postgres((folder / "postgres").resolve(), host, port)
    password = _study_password(folder)
    connection = psycopg2.connect(host=str(sockets), port=port, user="postgres", dbname="postgres")
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = 'optuna'")
            verb = "ALTER" if cursor.fetchone() else "CREATE"
            cursor.execute(f"{verb} ROLE optuna LOGIN PASSWORD %s", (password,))
            for database, owner in ((DATABASE, "postgres"), (STUDY_DATABASE, "optuna")):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {database} OWNER {owner}")
    finally:
        connection.close()
    return f"postgresql+psycopg2://postgres@/{DATABASE}?host={sockets}&port={port}", _study_url(folder, host, port)


def _study_url(folder: Path, host: str, port: int) -> str:
    """The URL a search worker passes (--storage, $SEARCH_STORAGE), with the password: keep it private."""
    reachable = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    return f"postgresql://optuna:{_study_password(folder)}@{reachable}:{port}/{STUDY_DATABASE}"


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


def start(folder: Path, host: str, port: int, workers: int = 2, study_port: int | None = None) -> Server:
    """Start PostgreSQL (the study storage on `study_port`, a free one if None) and the MLflow
    server on it, unless already running; returns the server once it answers /health."""
    folder = folder.resolve()
    running = _running(folder)
    if running is not None:
        process, record = running
        study = _study_url(folder, record["host"], record["study_port"]) if "study_port" in record else ""
        server = Server(folder, record["host"], record["port"], study)
        if health.check(server.url):
            return server
        raise ServerError(f"the MLflow server of {folder} (process {process.pid}) does not answer at "
                          f"{server.url}: see {folder / 'mlflow.log'}, or stop it with `make server-stop`")
    if health.check(f"http://{host}:{port}"):
        raise ServerError(f"port {port} on {host} already has a server: choose another with MLFLOW_PORT=...")
    study_port = study_port or _free_port(host)
    backend, study_url = _postgres(folder, host, study_port)
    server = Server(folder, host, port, study_url)
    (folder / "artifacts").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
               "--host", host, "--port", str(port), "--workers", str(workers)]
    with open(folder / "mlflow.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **ui.SERVER_ENV},
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
