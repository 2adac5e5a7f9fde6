"""The team server's own processes: started in a session of their own, found again, ended.

Each is known by its process id and start time (a record the server keeps in its folder), so
that a process id the system gave to another program since is not taken for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil

STOP_TIMEOUT = 30  # seconds a process has to stop before it is killed


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """`command` started in the background, its output appended to `log`; returns its record."""
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)  # its own group: `end` ends its children too
    return {"pid": process.pid, "started": f"{psutil.Process(process.pid).create_time():.2f}"}


def alive(record: dict | None) -> psutil.Process | None:
    """The process of `record`, while it runs."""
    try:
        process = psutil.Process(record["pid"])
        if f"{process.create_time():.2f}" == record["started"] and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except (TypeError, KeyError, psutil.NoSuchProcess):
        pass
    return None


def end(process: psutil.Process, sig: int = signal.SIGTERM, group: bool = True) -> None:
    """Send `sig` (to the process group with `group`), wait, then kill what is left."""
    try:
        os.killpg(process.pid, sig) if group else process.send_signal(sig)
        process.wait(STOP_TIMEOUT)
    except psutil.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
