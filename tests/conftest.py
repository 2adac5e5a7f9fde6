"""Shared helpers: a tiny synthetic MNIST in real IDX format, a params.yaml that points at it,
throwaway git + DVC repositories to run commands in, and a reader of the MLflow store's runs."""

from __future__ import annotations

import atexit
import fcntl
import functools
import gzip
import hashlib
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

import stages  # noqa: F401 (the entry points' process settings, for the stages' code run in-process)

from mnistcnn.training import kernels

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def committed_params() -> Path:
    """params.yaml as committed at HEAD, in a file of its own: the tests' base, whatever an experiment
    left in the working copy (`dvc exp run -S ...` edits it, and a failed one leaves it edited).
    Outside a git checkout (an unpacked archive), the working copy is all there is."""
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True)
    folder = Path(tempfile.mkdtemp(prefix="params-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "params.yaml"
    path.write_text(shown.stdout if shown.returncode == 0 else (ROOT / "params.yaml").read_text())
    return path
# Tests train in this process too, with the stages' CPU code paths: pinned before any tensor work.
kernels.select("portable")
KERNEL_VARIABLES = (*kernels.PORTABLE, kernels.OURS)  # what select() sets, which a user's shell has not
FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor in the IDX format (big-endian header, then the raw bytes)."""
    header = struct.pack(">I", 0x0800 + tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def synthetic_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Easy digits: class c is a bright 6x6 block at a position of its own, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=generator)]
    images = torch.randint(0, 60, (n, 28, 28), generator=generator, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        row, col = 2 + 12 * (c // 5), 1 + 5 * (c % 5)
        images[i, row : row + 6, col : col + 6] = 255
    return images, labels.to(torch.uint8)


def write_mnist(folder: Path, n_train: int = 600, n_test: int = 200) -> dict[str, str]:
    """Write the four .gz files; returns each key's sha256 of decompressed content."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    tensors["train_images"], tensors["train_labels"] = synthetic_split(n_train, seed=1)
    tensors["test_images"], tensors["test_labels"] = synthetic_split(n_test, seed=2)
    digests = {}
    for key, name in FILE_NAMES.items():
        content = idx_bytes(tensors[key])
        (folder / name).write_bytes(gzip.compress(content, mtime=0))
        digests[key] = hashlib.sha256(content).hexdigest()
    return digests


def params_for(digests: dict[str, str], mirrors: list[str], **train) -> dict:
    """The repository's params.yaml, pointed at synthetic data and shrunk to run in seconds."""
    params = yaml.safe_load(committed_params().read_text())
    params["download"]["mirrors"] = mirrors
    params["download"]["timeout"] = 5
    for key, digest in digests.items():
        params["download"]["files"][key]["sha256"] = digest
    params["train"].update({"model": "cnn9k", "epochs": 1, "batch_size": 32, "lr": 0.01, "device": "cpu",
                            "replicates": 1,  # tests/test_replicates.py trains several
                            "validation": {"size": 100, "seed": 0, "per_epoch": 1}})  # 500 images left to train on
    params["train"].update(train)
    params["evaluate"]["batch_size"] = 64
    return params


@pytest.fixture
def mnist_dir(tmp_path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "mirror"
    return folder, write_mnist(folder)


# Modules that start servers or run the pipeline many times, slowest first (their wall time in
# `make test` on 2 cores). `make test` runs modules on parallel workers (pytest-xdist, one module
# to a worker, so a module's fixtures are built once), in this order (--no-loadscope-reorder:
# xdist would otherwise start the modules with the most tests first); starting the longest first
# lets the workers finish together.
SLOWEST_MODULES = ("test_run_status", "test_promote", "test_remote", "test_ssh_remote",
                   "test_experiments", "test_search",
                   "test_pipeline", "test_team_hosts", "test_server", "test_server_queue", "test_access",
                   "test_validation", "test_serving", "test_dependencies", "test_postgres", "test_bench",
                   "test_reproducible", "test_server_down", "test_gate", "test_ui")


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers: a server that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def sh(*args, cwd, env=None) -> str:
    """Run a command in `cwd`; fail the test with its output unless it exits 0."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def tool_env(**extra: str) -> dict[str, str]:
    """The environment to run `dvc` in, as a user's shell gives it: this interpreter's folder first
    on PATH (as `make` does), the default MLflow store, and none of DVC's own variables (as if no
    stage of an outer pipeline were running), nor this process's kernel pins (each stage sets its own)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DVC_") and k not in ("MLFLOW_TRACKING_URI", *KERNEL_VARIABLES)}
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", **extra}


def init_repo(repo: Path) -> None:
    """An empty git repository on branch main, with this project's DVC config and ignore files."""
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    sh("git", "init", "-q", "-b", "main", cwd=repo)


def git_commit(repo: Path, message: str) -> str:
    """Commit everything in `repo` as a throwaway author; returns the commit id."""
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=repo)
    return sh("git", "rev-parse", "HEAD", cwd=repo).strip()


def copy_code(repo: Path) -> None:
    """The project's code, and the lock file the pipeline depends on, into `repo`."""
    for package in ("stages", "mnistcnn"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "requirements.lock", repo / "requirements.lock")


@functools.cache
def empty_store() -> Path:
    """An MLflow SQLite store with its tables built and no experiment of ours, made once per test
    process: building the tables costs a new store 1.3 s of CPU, in every repository a test makes.
    (Tests of what happens on a new store start without one.)"""
    folder = Path(tempfile.mkdtemp(prefix="mlflow-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    build = "import sys\nfrom mnistcnn.tracking import runs\nruns.connect()\nruns.training_run('none', '0')\n"
    sh(sys.executable, "-c", build, cwd=folder,
       env=tool_env(PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}"))
    return folder / "mlflow.db"


def server_folder() -> Path:
    """A folder for a test's team server, outside pytest's temporary root. Run as root, PostgreSQL
    runs as the user `pgserver`, which must pass through the folder's parents; a second pytest
    session on the machine resets that root to mode 0700 as it starts, locking it out mid-test."""
    folder = Path(tempfile.mkdtemp(prefix="mnistcnn-server-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# The team server that the modules needing one share (`team_server`): its folder, chosen by the run's
# controller before pytest-xdist starts the workers, which inherit the variable.
SHARED_SERVER = "MNISTCNN_TEST_TEAM_SERVER"


def pytest_configure(config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers
        os.environ[SHARED_SERVER] = str(server_folder())


def pytest_unconfigure(config) -> None:
    if not hasattr(config, "workerinput") and SHARED_SERVER in os.environ:
        from mnistcnn.team import tracking_server  # noqa: PLC0415 (only where a server may have run)

        tracking_server.stop(Path(os.environ.pop(SHARED_SERVER)))


@pytest.fixture(scope="session")
def team_server():
    """The team's tracking server (PostgreSQL, and MLflow with its authentication app) on loopback,
    one for the whole test run: the first test that needs it starts it, on whichever worker; the
    others find it running; the run's controller stops it at the end. Its modules keep out of each
    other's way: each has users, experiments, studies and a registered model of its own."""
    from mnistcnn.team import tracking_server  # noqa: PLC0415

    folder = Path(os.environ[SHARED_SERVER])
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker starts it; the next waits, then finds it running
        return tracking_server.start(folder, "127.0.0.1", free_port(), study_port=free_port())


def make_repo(tmp: Path, store: bool = True, train: dict | None = None) -> tuple[Path, dict[str, str]]:
    """A committed repository holding this project's code, with params (`train` over the shrunk train
    section) and $MNIST_MIRROR pointing at a synthetic mirror, and (`store`) an empty MLflow store
    under mlruns/; returns it and the environment to run `dvc` in."""
    repo = tmp / "repo"
    init_repo(repo)
    copy_code(repo)
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "mlruns").mkdir()
    shutil.copy(ROOT / "mlruns/.gitignore", repo / "mlruns/.gitignore")
    if store:
        shutil.copy(empty_store(), repo / "mlruns/mlflow.db")
    digests = write_mnist(tmp / "mirror")
    params = params_for(digests, ["http://127.0.0.1:9/"], **(train or {}))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit(repo, "init")
    return repo, tool_env(MNIST_MIRROR=str(tmp / "mirror"))


def stored_runs(root: Path) -> list[dict]:
    """Every run in the MLflow store under `root`/mlruns, oldest first, with its tags, params and latest metrics."""
    with sqlite3.connect(root / "mlruns/mlflow.db") as db:
        rows = db.execute("SELECT run_uuid, status, name FROM runs ORDER BY start_time, run_uuid").fetchall()
        tables = {table: db.execute(f"SELECT run_uuid, key, value FROM {table}").fetchall()
                  for table in ("tags", "params", "latest_metrics")}
    return [{"id": run_id, "status": status, "name": name,
             **{name: {k: v for r, k, v in tables[table] if r == run_id}
                for name, table in (("tags", "tags"), ("params", "params"), ("metrics", "latest_metrics"))}}
            for run_id, status, name in rows]
