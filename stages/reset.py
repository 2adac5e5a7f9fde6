"""reset: the workspace back to its commit's params and outputs, after workspace experiments (`make reset`).

A workspace `dvc exp run` (neither --temp nor --queue) leaves its -S values in params.yaml,
its dvc.lock and metrics, and its outputs in place; the next experiment starts from them.
This puts params.yaml, dvc.lock and the git-tracked metrics back as the commit has them,
then the DVC outputs that lock names (`dvc checkout --force`). Uncommitted edits of those
files are lost, and named first. The experiments themselves stay (`make compare`).

    python -m stages.reset
"""

from __future__ import annotations

import os
import subprocess

from mnistcnn import cli
from mnistcnn.outputs import DataError

TRACKED = ("params.yaml", "dvc.lock", "metrics")


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout


def changed() -> list[str]:
    """The tracked files among TRACKED whose content differs from the commit's. Each is touched
    first: DVC can leave one rewritten with the size and time git's index holds, which git then
    takes for unchanged (and `git checkout` leaves as it is)."""
    files = git("ls-files", "--", *TRACKED).split()
    for name in files:
        os.utime(name)
    git("update-index", "-q", "--refresh")
    return git("diff", "--name-only", "HEAD", "--", *files).split()


def _missing(said: str) -> str:
    """What `dvc checkout` said, shortened to the outputs this cache lacks and what to run, where that was it."""
    lines = [line.strip() for line in said.splitlines()]
    failed = [i for i, line in enumerate(lines) if line.startswith("ERROR: Checkout failed")]
    if not failed or "Is your cache up to date?" not in lines:
        return said.strip()
    missing = lines[failed[0] + 1:lines.index("Is your cache up to date?")]
    return f"this DVC cache lacks the commit's {', '.join(missing)}: `make repro` reproduces them, `make pull` fetches them"


def main() -> int:
    commit = git("rev-parse", "--short", "HEAD").strip()
    names = changed()
    if names:
        git("checkout", "HEAD", "--", *names)
        print(f"reset: {', '.join(names)} back as commit {commit} has them (their uncommitted edits dropped)",
              flush=True)
    else:
        print(f"reset: {', '.join(TRACKED)} are as commit {commit} has them", flush=True)
    checkout = subprocess.run(["dvc", "checkout", "--force"], capture_output=True, text=True)
    print(checkout.stdout, end="")
    if checkout.returncode != 0:
        raise DataError(f"dvc checkout: {_missing(checkout.stderr)}")
    return 0


if __name__ == "__main__":
    cli.run(main)
