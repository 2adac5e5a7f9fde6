"""Helpers that several test modules share and that are not fixtures: DVC's experiment queue, MLflow
pointed at a store for a block, a search section for params.yaml, and the team server's runs read
over its REST API. (Fixtures and the repository and data builders are in conftest.py; no test
module imports another.)"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from typing import Iterator

import mlflow
import psutil

from mnistcnn.params import config
from mnistcnn.team import access
from tests.conftest import sh, stored_runs

QUEUE_TIMEOUT = 300  # seconds; two synthetic experiments take well under a minute

# Over cnn9k's declaration (params_for's model): 16 steps an epoch, scored 4 times; channels up to
# 32 a block go over 9,000 parameters, low rates fall behind at the first scoring and are pruned.
SEARCH = {
    "study": "s", "trials": 8, "seed": 0, "base": None, "epochs": 1, "max_params": 9000, "fit": False,
    "scorings_per_epoch": 4, "race": {"seeds": 2, "survivors": 2},
    "pruner": {"kind": "halving", "min_scorings": 1, "reduction": 2, "startup_trials": 0},
    "heartbeat": {"interval": 1, "missed": 3, "retries": 1},
    "space": {"lr": {"low": 0.0001, "high": 0.05, "log": True},
              "arch": {"blocks": {"channels": {"low": 4, "high": 32, "step": 4}}}},
}


def with_search(params: dict, **changes) -> dict:
    """`params` with the tests' search section, `changes` laid over it."""
    return {**params, "search": config.merge(SEARCH, changes)}


@contextmanager
def using(store: str) -> Iterator[None]:
    """Point MLflow (and tracking.tracking_uri()) at `store` for the block, then back."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(store)  # sets $MLFLOW_TRACKING_URI too
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets it


def start_queue(repo, env, jobs: int) -> None:
    """`dvc queue start`, not waiting for the workers: they inherit its output, so a captured
    output would be waited on until the last worker ends (and one that lingers, forever)."""
    subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def stop_workers(repo, env) -> None:
    """Ask the workers to stop, then end any that remain (a worker has been seen to linger, idle,
    after its last task): no process of this test outlives it."""
    subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env, capture_output=True, timeout=120)
    for process in psutil.process_iter(["cwd", "cmdline"]):
        cwd, cmdline = process.info["cwd"] or "", " ".join(process.info["cmdline"] or [])
        if cwd.startswith(str(repo)) and "dvc" in cmdline:
            process.kill()


def wait_for_queue(repo, env, names, runs=None) -> None:
    """Wait until the named experiments' runs are complete and DVC has collected them.

    The store is read directly (`runs()`, by default the repository's own store): `dvc queue
    status` costs seconds of CPU on each call, taken from the experiments it watches."""
    runs = runs or (lambda: stored_runs(repo))
    deadline = time.monotonic() + QUEUE_TIMEOUT
    for attempt in range(QUEUE_TIMEOUT * 2):  # a look every half second; `dvc queue status` every 10 s
        done = {run["tags"].get("dvc.exp_name") for run in runs() if "test/accuracy" in run["metrics"]}
        status = sh("dvc", "queue", "status", cwd=repo, env=env) if names <= done or attempt % 20 == 19 else ""
        assert "Failed" not in status, status
        if names <= done and not any(state in status for state in ("Queued", "Running")):
            return
        assert time.monotonic() < deadline, f"queue still busy after {QUEUE_TIMEOUT} s:\n{status}"
        time.sleep(0.5)


ADMINS: dict[str, dict[str, str]] = {}  # a team server's URL: the admin login `rest` calls it with


def login(user: str, password: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def as_admin(team) -> None:
    """Let `rest` call `team` (an mnistcnn.team.tracking_server.Server) as its admin."""
    ADMINS[team.url] = access.credentials(team.folder, access.ADMIN)


def rest(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """One call of MLflow's REST API as the server's admin: GET with `query`, or POST `body` as JSON."""
    address = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    admin = ADMINS[url]
    secret = base64.b64encode(f"{admin['MLFLOW_TRACKING_USERNAME']}:{admin['MLFLOW_TRACKING_PASSWORD']}".encode())
    request = urllib.request.Request(address, data=data, headers={"Content-Type": "application/json",
                                                                  "Authorization": f"Basic {secret.decode()}"})
    trusted = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    with urllib.request.urlopen(request, timeout=30, context=trusted if url.startswith("https") else None) as response:
        return json.load(response)


def server_runs(url: str, experiment: str, filter_string: str = "") -> list[dict]:
    """Every run of the experiment, oldest first, shaped as tests.conftest.stored_runs shapes them."""
    experiment_id = rest(url, "experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
    found = rest(url, "runs/search", {"experiment_ids": [experiment_id], "filter": filter_string,
                                      "order_by": ["attributes.start_time ASC"], "max_results": 1000})
    return [{"id": run["info"]["run_id"], "status": run["info"]["status"], "name": run["info"]["run_name"],
             **{key: {item["key"]: item["value"] for item in run["data"].get(key, [])}
                for key in ("tags", "params", "metrics")}}
            for run in found.get("runs", [])]
