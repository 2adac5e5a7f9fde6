"""Which process owns a run, and whether that process is gone.

A run records the host, process id and process start time of the stage that
runs it. A run still RUNNING whose process no longer exists on this host (killed
with SIGKILL, by the out-of-memory killer, by a power loss) can never end by
itself; mnistcnn.tracking.runs ends such runs as KILLED when the next stage opens the store.
"""

from __future__ import annotations

import os
import socket

import psutil

HOST, PID, STARTED = "run.host", "run.pid", "run.pid_started"


def _started(pid: int) -> str:
    return f"{psutil.Process(pid).create_time():.2f}"


def tags() -> dict[str, str]:
    """This process, as a run's owner: host name, process id, and when the process started
    (a process id is reused; with its start time it names one process)."""
    return {HOST: socket.gethostname(), PID: str(os.getpid()), STARTED: _started(os.getpid())}


def is_gone(run_tags: dict[str, str]) -> bool:
    """True when the run's owner ran on this host and no longer exists; False when it lives, or
    when this host cannot tell (another host's process, or no owner recorded)."""
    if run_tags.get(HOST) != socket.gethostname() or not run_tags.get(PID, "").isdigit():
        return False
    try:
        return _started(int(run_tags[PID])) != run_tags.get(STARTED)
    except psutil.NoSuchProcess:
        return True
