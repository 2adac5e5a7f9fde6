"""Fetch the MNIST files from mirrors and verify them by the SHA-256 of their content.

Each file is tried at every source in turn: the folder or URL in $MNIST_MIRROR
first, then the mirrors in params.yaml. A file counts only if the SHA-256 of its
decompressed content matches params.yaml; when every source fails, the error
names each one and why.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mnistcnn.data import mnist
from mnistcnn.outputs import DataError
from mnistcnn.params.schema import DataFile, Params

MIRROR_ENV = "MNIST_MIRROR"


class DownloadError(DataError):
    """No source gave a valid copy of a file."""


def sources(mirrors: tuple[str, ...], env: dict[str, str]) -> list[str]:
    """The sources to try, in order: $MNIST_MIRROR (if set) first, then params' mirrors."""
    override = env.get(MIRROR_ENV, "").strip()
    return ([override] if override else []) + [m for m in mirrors if m != override]


def fetch(source: str, name: str, timeout: float, limit: int = mnist.MAX_FILE_BYTES) -> bytes:
    """The bytes of `name` at `source`, a URL (http, https, file) or a local folder: at most `limit`
    bytes, and all of them within `timeout` seconds (a slow trickle is cut off, not waited on)."""
    if "://" not in source:
        path = Path(source) / name
        if path.stat().st_size > limit:
            raise DataError(f"larger than {limit:,} bytes: refused")
        return path.read_bytes()
    url = source.rstrip("/") + "/" + name
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-compact-cnn"})
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(request, timeout=timeout) as response:
        chunks, size = [], 0
        while chunk := _read_before(response, deadline, timeout):
            size += len(chunk)
            if size > limit:
                raise DataError(f"larger than {limit:,} bytes: refused")
            chunks.append(chunk)
        return b"".join(chunks)


def _read_before(response, deadline: float, timeout: float) -> bytes:
    """The next bytes of `response`, waiting for them no later than `deadline`."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"not complete within {timeout:g} s")
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)  # the connection, to bound this read
    if sock is not None:
        sock.settimeout(left)
    return response.read1(1 << 20)


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"unreachable ({err.reason})"
    if isinstance(err, FileNotFoundError):
        return "file not found"
    return str(err) or type(err).__name__


def fetch_verified(file: DataFile, candidates: list[str], timeout: float) -> tuple[bytes, bytes, str]:
    """(gz bytes, decompressed content, source) from the first source whose content matches."""
    failures = []
    for source in candidates:
        try:
            raw = fetch(source, file.name, timeout)
            content = mnist.decompress(raw, file.name)
            digest = mnist.content_sha256(content)
            if digest != file.sha256:
                raise DataError(f"content sha256 {digest[:12]}..., expected {file.sha256[:12]}...")
            return raw, content, source
        except (OSError, DataError) as err:  # URLError and timeouts are OSErrors
            failures.append(f"  {source}: {_reason(err)}")
    raise DownloadError(f"{file.name}: no source gave a valid copy; tried\n" + "\n".join(failures))


def download(params: Params, env: dict[str, str], raw_dir: Path) -> tuple[dict, dict, dict]:
    """Fetch, verify and decode every file into `raw_dir`; returns (tensors, provenance, where
    each file came from).

    The provenance says what the data is, never where it came from: it is a dependency of
    train, and two people who fetched the same bytes from different mirrors must share
    DVC's run-cache. The sources go to the MLflow run instead.
    """
    candidates = sources(params.download.mirrors, env)
    decoded, files, origins = {}, {}, {}
    for key, file in params.download.files.items():
        raw, content, source = fetch_verified(file, candidates, params.download.timeout)
        (raw_dir / file.name).write_bytes(raw)
        decoded[key] = mnist.decode_idx(content, key.split("_")[1], file.name)
        files[key] = {"name": file.name, "sha256": file.sha256, "count": len(decoded[key])}
        origins[key] = source
        print(f"download: {file.name} ({len(raw):,} bytes) from {source}, verified", file=sys.stderr)
    dataset = mnist.assemble(decoded)
    provenance = {
        "digest": mnist.content_sha256("".join(f["sha256"] for f in files.values()).encode()),
        "train_samples": len(dataset["train_labels"]),
        "test_samples": len(dataset["test_labels"]),
        "files": files,
    }
    return dataset, provenance, origins
