"""What `make serve` may serve: weights that a commit of main trained, as its dvc.lock records them.

A registry version is only as trustworthy as whoever could write it. So the scoring
server takes nothing from a version but two data files, the weights and the model card,
and serves them with this checkout's code (mnistcnn/serving/classifier.py), only once

- the version names the commit that made it (`git.commit`, which `make promote` sets),
  and that commit is on main (this clone's branch, or the one `--trusted` names);
- both files are, byte for byte, the outputs that commit's dvc.lock records for the
  train stage (DVC's MD5s, read through git: no DVC cache needed);
- the version's `weights.sha256` tag and the card's own digest both name those weights.

So a version that a teammate, or anyone with the registry's password, uploaded serves
nothing unless main's history holds exactly those weights, which only a merge does.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from mnistcnn.outputs import sha256_file

TRAIN_STAGE = "train"


class Untrusted(Exception):
    """The version's files are not what main trained; the message says which check failed."""


def md5_file(path: Path) -> str:
    """DVC's content hash of a file (compared with dvc.lock; the SHA-256 check follows)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def locked_outputs(commit: str, trusted: str, repo: Path) -> dict[str, str]:
    """The train stage's outputs (path: MD5) in `commit`'s dvc.lock, once `commit` is on `trusted`."""
    if _git("rev-parse", "--verify", "--quiet", f"{trusted}^{{commit}}", cwd=repo).returncode != 0:
        raise Untrusted(f"this clone has no branch {trusted} to check the version against: fetch it first")
    if _git("merge-base", "--is-ancestor", commit, trusted, cwd=repo).returncode != 0:
        raise Untrusted(f"its commit {commit[:12]} is not on {trusted}: only what was merged is served")
    shown = _git("show", f"{commit}:dvc.lock", cwd=repo)
    if shown.returncode != 0:
        raise Untrusted(f"commit {commit[:12]} of {trusted} has no dvc.lock: {shown.stderr.strip()}")
    stage = (yaml.safe_load(shown.stdout).get("stages") or {}).get(TRAIN_STAGE) or {}
    return {out["path"]: out["md5"] for out in stage.get("outs", []) if "md5" in out}


def check(tags: dict[str, str], files: dict[str, Path], weights: str, trusted: str, repo: Path) -> str:
    """Raise Untrusted unless `files` ({locked path: downloaded file}: the weights, at `weights`, and
    the card) are the outputs that the version's commit, on `trusted`, locked; returns that commit."""
    commit = tags.get("git.commit")
    if not commit:
        raise Untrusted("it has no git.commit tag: `make promote` did not make it")
    locked = locked_outputs(commit, trusted, repo)
    for path, file in files.items():
        if path not in locked:
            raise Untrusted(f"commit {commit[:12]}'s dvc.lock records no {path} for the {TRAIN_STAGE} stage")
        actual = md5_file(file)
        if actual != locked[path]:
            raise Untrusted(f"its {path} is not the one commit {commit[:12]} of {trusted} trained "
                            f"(md5 {actual[:12]}…, dvc.lock: {locked[path][:12]}…)")
    digest = sha256_file(files[weights])
    cards = [json.loads(file.read_text()) for path, file in files.items() if path != weights]
    if tags.get("weights.sha256") != digest or any(card.get("weights_sha256") != digest for card in cards):
        raise Untrusted(f"its weights.sha256 tag does not name its weights (sha256 {digest[:12]}…)")
    return commit
