"""The address `mnistcnn.ui` gives opens MLflow's runs table: a real server over a SQLite
store, rendered by a real headless Chromium (`make browser` installs it)."""

from __future__ import annotations

import contextlib
import html
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from mnistcnn import health, tracking, ui
from tests.conftest import free_port

EXPERIMENT = "mnist-compact-cnn"
RUNS = {"quick25k-e1-s0": (0.9854, 0.9871), "cnn24k-e1-s1": (0.9811, 0.9923)}  # run name: validation, test accuracy


def build_store(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One experiment, made as the pipeline makes it (its runs view shows the validation and test
    accuracy: the table shows no metric by default), with the two FINISHED runs of RUNS."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    experiment_id = tracking.open_experiment(EXPERIMENT)
    client = mlflow.MlflowClient(uri)
    for name, (validation, accuracy) in RUNS.items():
        run_id = client.create_run(experiment_id, run_name=name).info.run_id
        for key, value in {"model": name.split("-")[0], "lr": 0.02, "epochs": 1}.items():
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "test/accuracy", accuracy)
        client.log_metric(run_id, "val/accuracy", validation)
        client.set_terminated(run_id, "FINISHED")


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Return once the server answers /health; fail with its log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        if health.check(url, timeout=2):
            return
        time.sleep(0.3)
    pytest.fail(f"MLflow server at {url} never answered /health:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path, monkeypatch) -> str:
    """A real MLflow UI server over a fresh SQLite store; yields its URL, stops it after."""
    if not os.access(ui.CHROMIUM, os.X_OK):  # before the slow part: nothing to render with
        pytest.fail(f"{ui.CHROMIUM} is missing: run `make browser` to install Debian's chromium")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    build_store(uri, monkeypatch)
    url, log = f"http://127.0.0.1:{free_port()}", tmp_path / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--artifacts-destination", str(tmp_path / "artifacts"),
               "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **ui.SERVER_ENV})
    try:
        wait_until_healthy(url, process, log)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in a session of its own and all it started: TERM, then KILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):  # the whole group has exited
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)


def test_runs_table_url_names_the_runs_route():
    assert ui.runs_table_url("http://127.0.0.1:5000/", "3") == "http://127.0.0.1:5000/#/experiments/3/runs"
    assert ui.runs_table_url("http://h:1", "3", view="a b").endswith("/#/experiments/3/runs?viewStateShareKey=a%20b")


def test_the_runs_table_lists_every_run_with_its_accuracy(server, tmp_path):
    experiment_id = ui.experiment_id(server, EXPERIMENT)
    assert experiment_id is not None, f"the server lists no experiment {EXPERIMENT}"
    page = ui.render(ui.runs_table_url(server, experiment_id, view=tracking.VIEW), tmp_path / "chromium", "--dump-dom")
    missing = [text for name, accuracies in RUNS.items() for text in (name, *map(str, accuracies)) if text not in page]
    text = " ".join(html.unescape(re.sub(r"<(script|style).*?</\1>|<[^>]+>", " ", page, flags=re.S)).split())
    assert not missing, f"the runs table lacks {missing}; the page read: {text[:3000]}"
    # best validation accuracy first: quick25k's run, though cnn24k's is newer and the better on test
    assert text.index("val/accuracy") < text.index("quick25k-e1-s0") < text.index("cnn24k-e1-s1"), text[:3000]
