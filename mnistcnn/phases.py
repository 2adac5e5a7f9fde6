"""Where a stage process's wall time goes, for the benchmark: start-up and imports, then named phases.

A stage wraps each phase in `with phases.phase("training loop"):` (a phase begins where
the previous one ended, so what lies between two blocks counts to the second); mnistcnn.cli
marks the end of the imports and, when $MNISTCNN_PHASES names a file, appends one
JSON line per stage process to it at exit: the process's start, each phase's end,
its own end (wall-clock seconds since the epoch, comparable across processes).
Without that variable, which only `make bench` sets, nothing is written anywhere.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ENV = "MNISTCNN_PHASES"
_marks: list[tuple[str, float]] = []


def mark(phase: str) -> None:
    """The phase named `phase` ends now (it began where the previous one ended)."""
    _marks.append((phase, time.time()))


@contextmanager
def phase(name: str) -> Iterator[None]:
    """The block ends the phase `name`; a block that raises ends none (the process is failing)."""
    yield
    mark(name)


def process_start() -> float:
    """When this process started, in wall-clock seconds, to the clock tick (10 ms).

    From its start in ticks after boot (/proc/self/stat) and the time since boot; psutil's
    create_time adds the boot time from /proc/stat, rounded to the second, and so was off by
    a constant of up to a second (0.8 s here), which moved DVC's time into the stages'.
    """
    after_pid_and_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(after_pid_and_name[19])  # field 22 of the line: starttime
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def record(stage: str) -> None:
    """Append this process's phases to $MNISTCNN_PHASES, if set."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = {"stage": stage, "started": process_start(), "marks": _marks, "ended": time.time()}
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")


def breakdown(line: dict) -> dict[str, float]:
    """Seconds per phase of one recorded process: start-up and imports, each phase, then the rest."""
    seconds, previous = {}, line["started"]
    for phase, at in line["marks"]:
        seconds[phase] = seconds.get(phase, 0.0) + at - previous
        previous = at
    seconds["exit"] = line["ended"] - previous
    return seconds
