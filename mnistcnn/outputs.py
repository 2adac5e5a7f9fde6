"""Atomic output files: a stage that fails or is interrupted leaves no half-written output."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    """The process's umask, which files a stage writes honour (read from /proc: setting it to read
    it would, for a moment, give any file another thread creates no umask at all)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise OSError("no umask in /proc/self/status")


class DataError(ValueError):
    """A file that is missing, corrupt, or not what the pipeline expects."""


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back for the block; their handlers run right after it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught:
        handler = previous[caught[0]]
        if callable(handler):
            handler(caught[0], None)  # e.g. raises KeyboardInterrupt
        elif handler == signal.SIG_DFL:
            signal.raise_signal(caught[0])


# A full disk, a quota, a read-only or forbidden folder: the user's to fix, not a bug.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


class WriteError(DataError):
    """An output that could not be written; `cause` is the OSError."""

    def __init__(self, where: str, cause: OSError):
        super().__init__(f"{where}: cannot write ({cause.strerror}); the previous outputs are unchanged")
        self.cause = cause


@contextmanager
def _disk_errors_named(targets: Callable[[], str]) -> Iterator[None]:
    """Turn a failed write into a WriteError naming the outputs being written (not their temporary
    files; the outermost writer names them) and the cause, which cli prints as one line (exit 1)."""
    try:
        yield
    except WriteError as err:
        raise WriteError(targets() or str(err.cause.filename), err.cause) from None
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        raise WriteError(targets() or str(err.filename), err) from None


@contextmanager
def atomic_outputs() -> Iterator[Callable[..., Path]]:
    """Write several outputs as one: yields `stage(path, folder=False)`, which returns a temporary
    file (or, with `folder`, an empty folder) beside `path`. If the block succeeds, each replaces its
    target with interrupts held back, so a stage that fails or is interrupted leaves all of its
    outputs new or none of them. A folder replaces the old one whole: no file of it outlives it."""
    staged: dict[Path, Path] = {}

    def stage(path: str | Path, folder: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            staged[path] = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
            return staged[path]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        staged[path] = Path(tmp)
        return staged[path]

    try:
        with _disk_errors_named(lambda: ", ".join(map(str, staged))):
            yield stage
            umask = _umask()
            with _interrupts_held():
                for path, tmp in staged.items():
                    _replace(tmp, path, umask)
    finally:
        for tmp in staged.values():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def _replace(tmp: Path, path: Path, umask: int) -> None:
    """`tmp` in place of `path`; a folder moves the old one aside first (a folder cannot replace a
    folder that has files), then deletes it."""
    os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~umask)  # mkstemp and mkdtemp are owner-only
    if tmp.is_dir() and path.is_dir():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.replace(path, old / path.name)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    with atomic_outputs() as stage:
        yield stage(path)


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save, atomically and byte-reproducibly (given a path, torch names the
    archive's inner folder after the random temporary file; given a handle, "archive")."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str | None, recorded_in: str, produced_by: str) -> None:
    """Refuse a file whose bytes are not the ones `recorded_in` names: damaged, or another run's."""
    if not expected:
        raise DataError(f"{recorded_in}: records no SHA-256 for {path}; rerun the {produced_by} stage")
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(f"{path}: SHA-256 {actual[:12]}... is not the {expected[:12]}... that {recorded_in} "
                        f"records: the file is damaged or another run's; restore it (`dvc checkout`) "
                        f"or rerun the {produced_by} stage")


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def missing_output(path: str | Path, produced_by: str) -> DataError:
    """The error for an earlier stage's output that is not there."""
    return DataError(f"{path}: missing; the {produced_by} stage writes it (run `dvc repro`)")


def read_json(path: str | Path, produced_by: str) -> Any:
    """Read a JSON output of an earlier stage, naming the file and the stage on failure."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise missing_output(path, produced_by) from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); rerun the {produced_by} stage") from None


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    with _disk_errors_named(lambda: str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        with _disk_errors_named(lambda: str(path)):
            yield staging
            os.chmod(staging, 0o777 & ~_umask())
            if path.exists():
                shutil.rmtree(path)
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
