"""The team's tracking server, for real: PostgreSQL and MLflow's server (with its authentication app)
on 127.0.0.1, the pipeline logging to it as a teammate, its runs read back over the REST API, promotion
as the promoter, and logins missing or wrong. (Its restart: test_postgres.py; a server that is down:
test_server_down.py; queued experiments: test_server_queue.py.)"""

import json
import os
import subprocess
import sys
import time

import pytest

from mnistcnn.team import access
from tests import helpers
from tests.conftest import ROOT, git_commit, make_repo, sh
from tests.helpers import as_admin, login, rest

EXPERIMENT = "mnist-compact-cnn"  # params.yaml's tracking.experiment, and promote's registered model


@pytest.fixture(scope="module")
def tracking_server(team_server):
    """The test run's team server (conftest.team_server); this module's runs go to its experiment
    mnist-compact-cnn, and its promotions to the registered model of that name."""
    as_admin(team_server)
    return team_server


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tracking_server):
    """A repository after `dvc repro` with every stage logging to the server."""
    repo, env = make_repo(tmp_path_factory.mktemp("repo"), store=False)  # a local store must stay absent
    teammate = login("alice", access.add_teammate(tracking_server.url, tracking_server.folder, "alice"))
    env = {**env, "MLFLOW_TRACKING_URI": tracking_server.url, **teammate}
    (repo.parent / "repro.out").write_text(sh("dvc", "repro", cwd=repo, env=env))  # what the teammate saw
    return repo, env


def server_runs(url: str, filter_string: str = "") -> list[dict]:
    return helpers.server_runs(url, EXPERIMENT, filter_string)


def trained_run(url: str, repo) -> dict:
    weights = json.loads((repo / "models/model.json").read_text())["weights_sha256"]
    found = server_runs(url, f"tags.`weights.sha256` = '{weights}'")
    assert len(found) == 1, found
    return found[0]


def test_the_pipeline_logs_a_complete_run_to_the_server(tracking_server, repo):
    repo, _ = repo
    url = tracking_server.url
    run = trained_run(url, repo)
    metrics = json.loads((repo / "metrics/test.json").read_text())
    assert run["status"] == "FINISHED" and run["name"] == "cnn9k-e1-s0"
    assert run["params"]["model"] == "cnn9k" and run["params"]["param_count"] == "8890"
    assert run["metrics"]["test/accuracy"] == metrics["accuracy"]
    assert run["tags"]["stage.train"] == run["tags"]["stage.evaluate"] == "ran"
    history = rest(url, "metrics/get-history", run_id=run["id"], metric_key="train/loss")["metrics"]
    assert [point["step"] for point in history] == [16]  # the optimiser's steps: 500 images in batches of 32
    validation = rest(url, "metrics/get-history", run_id=run["id"], metric_key="val/accuracy")["metrics"]
    assert [point["step"] for point in validation] == [16] and "val/accuracy" in run["metrics"]
    figures = rest(url, "artifacts/list", run_id=run["id"], path="evaluation")["files"]
    assert [f["path"] for f in figures] == ["evaluation/confusion_matrix.png"]
    experiment = rest(url, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    assert not (repo / "mlruns/mlflow.db").exists()  # nothing went to the local store
    assert list((tracking_server.folder / "artifacts").rglob("MLmodel"))  # the server stored the model


def test_the_logged_model_loads_from_the_server_in_a_fresh_process_and_scores_the_metrics(tracking_server, repo):
    repo, env = repo
    run = trained_run(tracking_server.url, repo)
    score = (
        "import json, sys, mlflow, torch\n"
        "from mnistcnn.data import mnist\n"
        "model = mlflow.pyfunc.load_model(f'runs:/{sys.argv[1]}/model')\n"
        "data = mnist.load_split('data/test.pt', 'test', json.load(open('data/provenance.json')), 'data/provenance.json')\n"
        "out = model.predict(mnist.normalize(data['test_images']).numpy())\n"
        "print((torch.as_tensor(out).argmax(1) == data['test_labels']).double().mean().item())\n")
    out = subprocess.run([sys.executable, "-c", score, run["id"]], cwd=repo, capture_output=True, text=True,
                         env={**env, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) == pytest.approx(json.loads((repo / "metrics/test.json").read_text())["accuracy"])


def test_a_stage_without_or_with_a_wrong_login_says_what_to_set_before_any_work(tracking_server, repo):
    repo, env = repo
    for kind, credentials, wanted in (("none", {}, "needs a login: set MLFLOW_TRACKING_USERNAME and "
                                                   "MLFLOW_TRACKING_PASSWORD"),
                                      ("wrong", login("alice", "guess"), "refused the login of "
                                                                         "MLFLOW_TRACKING_USERNAME=alice")):
        anonymous = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING_")}
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "stages.evaluate"], cwd=repo, capture_output=True, text=True,
                                env={**anonymous, "MLFLOW_TRACKING_URI": tracking_server.url, **credentials})
        assert result.returncode == 1 and time.monotonic() - started < 15, (kind, result.stderr)
        message = result.stderr.strip().splitlines()
        assert len(message) == 1 and message[0].startswith("error: ") and wanted in message[0], (kind, message)


def commit_results(repo) -> None:
    """Promote names a commit: the results are committed first (once)."""
    if sh("git", "status", "--porcelain", cwd=repo).strip():
        git_commit(repo, "reproduced against the server")


def test_a_teammates_promote_is_refused_before_anything_is_written(tracking_server, repo):
    repo, env = repo
    commit_results(repo)
    runs = server_runs(tracking_server.url)
    result = subprocess.run([sys.executable, "-m", "stages.promote"], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "MLFLOW_TRACKING_USERNAME=alice may read" in result.stderr and "only the promoter" in result.stderr
    model = rest(tracking_server.url, "registered-models/get", name=EXPERIMENT)["registered_model"]
    assert "latest_versions" not in model and server_runs(tracking_server.url) == runs


def test_promote_registers_the_model_on_the_server_once(tracking_server, repo):
    repo, env = repo
    commit_results(repo)
    env = {**env, **access.credentials(tracking_server.folder, access.PROMOTER)}  # as `make promote` does
    trained = trained_run(tracking_server.url, repo)["id"]
    before = rest(tracking_server.url, "runs/get", run_id=trained)["run"]["info"]
    for attempt in range(2):
        result = subprocess.run([sys.executable, "-m", "stages.promote"], cwd=repo, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    after = rest(tracking_server.url, "runs/get", run_id=trained)["run"]["info"]  # the model went into it
    assert [after[key] for key in ("status", "start_time", "end_time")] == [
        before[key] for key in ("status", "start_time", "end_time")]
    model = rest(tracking_server.url, "registered-models/get", name=EXPERIMENT)["registered_model"]
    assert [v["version"] for v in model["latest_versions"]] == ["1"]  # the second promote made none
    assert model["aliases"] == [{"alias": "champion", "version": "1"}]
    version = rest(tracking_server.url, "model-versions/get", name=EXPERIMENT, version="1")["model_version"]
    assert version["run_id"] == trained_run(tracking_server.url, repo)["id"]


def test_make_server_shows_where_the_study_url_is_and_never_its_password(tracking_server):
    """The study URL holds the PostgreSQL password: a file of mode 0600, not a line that logs and
    scrollback keep. A second start finds the server running and reports it, as `make server` does."""
    from mnistcnn.team import postgres  # noqa: PLC0415

    folder = tracking_server.folder
    said = sh(sys.executable, "-m", "stages.tracking_server", "start", "--folder", str(folder),
              "--port", str(tracking_server.port), cwd=ROOT, env=dict(os.environ))
    assert postgres.study_password(folder) not in said and "optuna:" not in said
    assert f'export SEARCH_STORAGE="$(cat {tracking_server.study_url_file})"' in said
    assert tracking_server.study_url_file.stat().st_mode & 0o777 == 0o600
    assert tracking_server.study_url_file.read_text() == tracking_server.study_url


def test_a_teammates_repro_says_where_each_stages_run_is_once_and_nothing_of_mlflows(tracking_server, repo):
    repo, _ = repo
    said = (repo.parent / "repro.out").read_text()
    run = trained_run(tracking_server.url, repo)
    experiment = rest(tracking_server.url, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    link = f"{tracking_server.url}/#/experiments/{experiment['experiment_id']}/runs/{run['id']}"
    links = [line for line in said.splitlines() if " run at " in line]
    assert [line.split(":")[0] for line in links] == ["download", "train", "evaluate"]  # its own run, then one
    assert links[1:] == [f"train: run at {link}", f"evaluate: run at {link}"]
    assert "View run" not in said and "View experiment" not in said and "INFO mlflow" not in said
    lines = [line for line in said.splitlines() if line.startswith(("download:", "train:", "evaluate:", "ERROR"))]
    assert len(lines) == len(set(lines)) > 3, said  # no stage's line twice (DVC's own "Updating lock" is per stage)
