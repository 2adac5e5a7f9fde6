"""The address `make ui` prints opens MLflow's runs table in model-training mode: `mnistcnn.team.ui`
starting a real server over a SQLite store, the page rendered by a real headless Chromium
(`make browser` installs it), driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from mnistcnn.team import ui
from mnistcnn.tracking import health, runs
from tests.conftest import ROOT, free_port

EXPERIMENT = "mnist-compact-cnn"
RUNS = {"quick25k-e1-s0": (0.9854, 0.9871), "cnn24k-e1-s1": (0.9811, 0.9923)}  # run name: validation, test accuracy
# The sidebar in GenAI mode, not in model-training mode; and the other way round.
GENAI_ONLY = ["Sessions", "Judges", "Playground", "Prompts", "Agent versions", "AI Gateway"]
TRAINING_ONLY = ["Model registry"]


def build_store(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One experiment, made as the pipeline makes it (its runs view shows the validation and test
    accuracy: the table shows no metric by default), with the two FINISHED runs of RUNS."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    experiment_id = runs.open_experiment(EXPERIMENT)
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


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> tuple[str, Path]:
    """`python -m mnistcnn.team.ui` as `make ui` runs it (with one worker), over a fresh SQLite store;
    yields its URL and the file its output went to, and stops it after."""
    if not os.access(ui.CHROMIUM, os.X_OK):  # before the slow part: nothing to render with
        pytest.fail(f"{ui.CHROMIUM} is missing: run `make browser` to install Debian's chromium")
    folder = tmp_path_factory.mktemp("ui")
    uri, port, log = f"sqlite:///{folder / 'mlflow.db'}", free_port(), folder / "ui.log"
    with pytest.MonkeyPatch.context() as monkeypatch:
        build_store(uri, monkeypatch)
    command = [sys.executable, "-m", "mnistcnn.team.ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(port), "--experiment", EXPERIMENT, "--workers", "1"]
    with open(log, "w") as out:  # this checkout's code, whatever is installed
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process, log)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop(process)


def printed_address(log: Path) -> str:
    """The address of the runs table that `mnistcnn.team.ui` printed first."""
    first = log.read_text().splitlines()[0]
    assert first.startswith(f"MLflow UI: runs of {EXPERIMENT} at http://"), first
    return first.rsplit(" at ", 1)[1]


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in a session of its own and all it started: TERM, then KILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):  # the whole group has exited
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)


def test_runs_table_url_names_the_runs_route_in_model_training_mode():
    assert (ui.runs_table_url("http://127.0.0.1:5000/", "3")
            == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning")
    assert ui.runs_table_url("http://h:1", "3", view="a b").endswith(
        "/#/experiments/3/runs?viewStateShareKey=a%20b&workflowType=machine_learning")
    assert ui.experiments_url("http://h:1/") == "http://h:1/#/experiments?workflowType=machine_learning"


def test_make_ui_prints_its_address_and_nothing_a_user_cannot_act_on(server):
    url, log = server  # started, and asked for /health until it answered: each a request
    experiment_id = ui.experiment_id(url, EXPERIMENT)
    address = f"MLflow UI: runs of {EXPERIMENT} at {ui.runs_table_url(url, experiment_id, runs.VIEW)}"
    lines = log.read_text().splitlines()
    # besides the address, only MLflow's note that the server takes local connections only
    assert [line for line in lines if not line.startswith("[MLflow] Security middleware")] == [address], lines


def test_the_printed_address_opens_the_runs_table_in_model_training_mode(server):
    _, log = server
    wanted = [item for name, accuracies in RUNS.items() for item in (name, *map(str, accuracies))]
    with ui.chromium() as browser:
        text = " ".join(ui.shown(browser.new_page(), printed_address(log), wanted).split())
    missing = [item for item in wanted if item not in text]
    assert not missing, f"the runs table lacks {missing}; the page read: {text[:3000]}"
    # best validation accuracy first: quick25k's run, though cnn24k's is newer and the better on test
    assert text.index("val/accuracy") < text.index("quick25k-e1-s0") < text.index("cnn24k-e1-s1"), text[:3000]
    sidebar = text[:text.index("Settings")]  # the sidebar, above the page: it ends with Docs, Settings
    genai = [item for item in GENAI_ONLY if item in sidebar]
    assert not genai and all(item in sidebar for item in TRAINING_ONLY), f"a GenAI sidebar ({genai}): {sidebar}"
