"""Time the pipeline as a user runs it, in a scratch copy of the repository.

A forced `dvc repro` of train and evaluate with the data already downloaded, a
`dvc repro` with nothing changed, and the share of the train stage's wall time
spent on MLflow (importing it and every call into it, timed by a proxy).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]


def scratch_copy(source: Path, target: Path, data: list[Path]) -> Path:
    """The working tree's tracked files and the downloaded data, committed in a fresh repository."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=source, capture_output=True, text=True, check=True)
    for name in filter(None, files.stdout.split("\0")):
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
    for path in data:
        copy = shutil.copytree if (source / path).is_dir() else shutil.copy2
        copy(source / path, target / path)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "scratch copy for the benchmark"]):
        subprocess.run(GIT + args, cwd=target, check=True, capture_output=True)
    return target


def timed(command: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def measure(repo: Path, raw: Path, repeats: int) -> dict:
    """Median seconds of a no-op and a forced train+evaluate `dvc repro`, and MLflow's share of train."""
    env = {**os.environ, "MNIST_MIRROR": str(raw.resolve())}
    dvc = [sys.executable, "-m", "dvc"]
    timed(dvc + ["repro"], repo, env)  # brings every stage up to date; not timed
    noop = [timed(dvc + ["repro"], repo, env) for _ in range(repeats)]
    forced = [timed(dvc + ["repro", "-f", "-s", "train", "evaluate"], repo, env) for _ in range(repeats)]
    shares = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--mlflow-share"], cwd=repo, env=env,
                             capture_output=True, text=True, check=True).stdout
        shares.append(json.loads(out.splitlines()[-1]))
    return {
        "noop_repro_seconds": statistics.median(noop),
        "train_evaluate_repro_seconds": statistics.median(forced),
        "train_stage_seconds": statistics.median(s["stage_seconds"] for s in shares),
        "mlflow_seconds": statistics.median(s["mlflow_seconds"] for s in shares),
        "mlflow_share": statistics.median(s["mlflow_seconds"] / s["stage_seconds"] for s in shares),
    }


def timing(function, clock: list[float]):
    """`function`, adding the duration of every call to clock[0]."""

    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            clock[0] += time.perf_counter() - start

    return call


class Timed:
    """Stands in for a module: every call through it, its submodules' too, is timed into `clock`."""

    def __init__(self, module, clock: list[float]):
        self._module, self._clock = module, clock

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if isinstance(attr, type(sys)):
            return Timed(attr, self._clock)
        return timing(attr, self._clock) if callable(attr) else attr


def mlflow_share() -> dict:
    """Run the train stage in this process with MLflow timed: its import, then every call into it."""
    start = time.perf_counter()
    import torch  # noqa: F401  (the stage imports it either way: not MLflow's time)

    before = time.perf_counter()
    import mlflow.data.dataset_source_registry  # noqa: F401  (what mnistcnn.tracking.runs imports)
    import mlflow.data.meta_dataset  # noqa: F401
    import mlflow.models  # noqa: F401

    clock = [time.perf_counter() - before]
    from mnistcnn.tracking import runs
    from stages import train

    runs.mlflow = Timed(runs.mlflow, clock)
    for name in ("infer_signature", "resolve_dataset_source", "MetaDataset"):
        setattr(runs, name, timing(getattr(runs, name), clock))
    train.main()
    return {"stage_seconds": time.perf_counter() - start, "mlflow_seconds": clock[0]}


if __name__ == "__main__" and sys.argv[1:] == ["--mlflow-share"]:
    print(json.dumps(mlflow_share()))
