"""Where studies live: Optuna's RDB storage, opened with heartbeats, and what a URL may show.

A SQLite file in the repository by default (studies/, git-ignored), so a search needs no
server; or the team's PostgreSQL (`make server` prints its URL, with its password), which
every worker on every machine joins. A worker's heartbeat lets the others fail its trial
when it dies, and the trial is queued again.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from pathlib import Path
from typing import Callable

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from mnistcnn.params.schema import HeartbeatParams

DEFAULT_STORAGE = Path("studies") / "optuna.db"  # git-ignored, beside params.yaml
CONNECT_TIMEOUT = 3  # seconds an attempt; libpq tries twice (with SSL, then without): within 10 s in all


class SearchError(Exception):
    """The study cannot be opened or continued; the message says why and what to do."""


def redact(url: str) -> str:
    """A storage URL fit to print and log: its password replaced."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<an unreadable URL>"


def storage_url(url: str | None, root: Path) -> str:
    """The storage named, or the default SQLite file under `root`, its folder created."""
    if url:  # PostgreSQL through psycopg2, the driver installed (SQLAlchemy 2.1's default is psycopg 3)
        return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url)
    (root / DEFAULT_STORAGE).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / DEFAULT_STORAGE).resolve()}"


def open_storage(url: str, heartbeat: HeartbeatParams,
                 on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None]) -> RDBStorage:
    """Optuna's RDB storage with heartbeats: a trial whose worker stops beating is failed by
    another worker, `on_stale` is told, and it is queued again (up to heartbeat.retries times)."""
    def stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        on_stale(study, trial)
        retry(study, trial, heartbeat)

    postgres = url.startswith("postgresql")
    connect = {"connect_timeout": CONNECT_TIMEOUT} if postgres else {"timeout": 30}  # sqlite: wait on its lock
    if url.startswith("sqlite:///"):
        _write_ahead_log(Path(url.removeprefix("sqlite:///")))
    for attempt in range(3):
        try:
            return RDBStorage(url, engine_kwargs={"connect_args": connect, "pool_pre_ping": True},
                              heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
                              heartbeat_stale_trial_callback=stale)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            if attempt < 2 and _creating(err):
                time.sleep(1)  # another worker was creating Optuna's tables in this new storage: now they are
                continue
            raise SearchError(f"cannot open the study storage {redact(url)}: {reason}{_certificate_hint(reason)}") from None
    raise AssertionError("unreachable")


def _certificate_hint(reason: str) -> str:
    """What to set, when libpq could not verify the team server's certificate (sslmode=verify-full)."""
    if "root certificate" not in reason and "certificate verify failed" not in reason:
        return ""
    return "; set PGSSLROOTCERT to the team server's CA certificate (tls/ca.crt in its folder)"


def _creating(error: Exception) -> bool:
    """Whether opening a storage failed because another worker was creating its tables at that moment
    (PostgreSQL: a duplicate key in its catalogue; SQLite: "table ... already exists")."""
    return isinstance(error, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) or \
        "already exists" in str(error)


def _write_ahead_log(path: Path) -> None:
    """Put a SQLite study file in write-ahead-log mode (kept in the file): a reader, such as another
    worker or `optuna-dashboard`, then never blocks a worker's write, which in SQLite's default
    mode could fail at once with "database is locked" while a trial's heartbeat thread also writes."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, heartbeat: HeartbeatParams) -> None:
    """Queue a failed trial's values again, as the heartbeat does for a dead worker's (at most
    heartbeat.retries times over): the next worker to ask for a trial runs it."""
    RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.retries)(study, trial)
