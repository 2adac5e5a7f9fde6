"""The team's tracking server, for real: PostgreSQL and MLflow's server (with its authentication app)
on 127.0.0.1, the pipeline logging to it as a teammate, its runs read back over the REST API, promotion
as the promoter, a restart, logins missing or wrong, and a server that is down."""

import base64
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from mnistcnn import access, server
from tests.conftest import free_port, git_commit, make_repo, server_folder, sh
from tests.test_experiments import start_queue, stop_workers, wait_for_queue

EXPERIMENT = "mnist-compact-cnn"
ADMINS: dict[str, dict[str, str]] = {}  # a server's URL: the admin login `rest` reads it with


def login(user: str, password: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


@pytest.fixture(scope="module")
def tracking_server():
    """PostgreSQL and the MLflow server on free ports, their data in a temporary folder."""
    folder = server_folder()
    started = server.start(folder, "127.0.0.1", free_port())
    ADMINS[started.url] = access.credentials(folder, access.ADMIN)
    yield started
    server.stop(folder)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tracking_server):
    """A repository after `dvc repro` with every stage logging to the server."""
    repo, env = make_repo(tmp_path_factory.mktemp("repo"), store=False)  # a local store must stay absent
    teammate = login("alice", access.add_teammate(tracking_server.url, tracking_server.folder, "alice"))
    env = {**env, "MLFLOW_TRACKING_URI": tracking_server.url, **teammate}
    sh("dvc", "repro", cwd=repo, env=env)
    yield repo, env
    stop_workers(repo, env)


def rest(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """One call of MLflow's REST API: GET with `query`, or POST `body` as JSON."""
    address = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    admin = ADMINS[url]
    secret = base64.b64encode(f"{admin['MLFLOW_TRACKING_USERNAME']}:{admin['MLFLOW_TRACKING_PASSWORD']}".encode())
    request = urllib.request.Request(address, data=data, headers={"Content-Type": "application/json",
                                                                  "Authorization": f"Basic {secret.decode()}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def server_runs(url: str, filter_string: str = "") -> list[dict]:
    """Every run of the experiment, oldest first, shaped as tests.conftest.stored_runs shapes them."""
    experiment = rest(url, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    found = rest(url, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "filter": filter_string,
                                      "order_by": ["attributes.start_time ASC"], "max_results": 1000})
    return [{"id": run["info"]["run_id"], "status": run["info"]["status"], "name": run["info"]["run_name"],
             **{key: {item["key"]: item["value"] for item in run["data"].get(key, [])}
                for key in ("tags", "params", "metrics")}}
            for run in found.get("runs", [])]


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
        "from mnistcnn import mnist\n"
        "model = mlflow.pyfunc.load_model(f'runs:/{sys.argv[1]}/model')\n"
        "data = mnist.load_split('data/test.pt', 'test', json.load(open('data/provenance.json')), 'data/provenance.json')\n"
        "out = model.predict(mnist.normalize(data['test_images']).numpy())\n"
        "print((torch.as_tensor(out).argmax(1) == data['test_labels']).double().mean().item())\n")
    out = subprocess.run([sys.executable, "-c", score, run["id"]], cwd=repo, capture_output=True, text=True,
                         env={**env, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) == pytest.approx(json.loads((repo / "metrics/test.json").read_text())["accuracy"])


def test_two_queued_experiments_both_land_on_the_server(tracking_server, repo):
    repo, env = repo
    for name, seed in (("server-1", 1), ("server-2", 2)):
        sh("dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.seed={seed}", "-S", "train.threads=1",
           cwd=repo, env=env)
    start_queue(repo, env, jobs=2)
    wait_for_queue(repo, env, {"server-1", "server-2"}, runs=lambda: server_runs(tracking_server.url))
    landed = [run for run in server_runs(tracking_server.url) if run["tags"].get("dvc.exp_name", "").startswith("server-")]
    assert sorted(run["tags"]["dvc.exp_name"] for run in landed) == ["server-1", "server-2"]
    assert all(run["status"] == "FINISHED" and "test/accuracy" in run["metrics"] for run in landed)


def test_a_restart_keeps_every_run(tracking_server, repo):
    repo, _ = repo
    before = server_runs(tracking_server.url)
    stopped = server.stop(tracking_server.folder)
    assert len(stopped) == 2  # the MLflow server and PostgreSQL
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{tracking_server.url}/health", timeout=3)
    restarted = server.start(tracking_server.folder, tracking_server.host, tracking_server.port)
    assert server_runs(restarted.url) == before  # and the users: rest() logs in as the same admin
    assert trained_run(restarted.url, repo)["metrics"]["test/accuracy"] > 0.5


@pytest.mark.parametrize("kind", ["refused", "hanging"])
def test_a_server_that_is_down_fails_each_stage_in_seconds_and_nothing_is_written(tmp_path, silent_port, kind):
    repo, env = make_repo(tmp_path)
    sh("dvc", "repro", "download", cwd=repo, env=env)
    uri = f"http://127.0.0.1:{silent_port if kind == 'hanging' else free_port()}"
    for stage in ("download", "train"):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=repo, capture_output=True, text=True,
                                env={**env, "MLFLOW_TRACKING_URI": uri})
        assert time.monotonic() - started < 10
        assert result.returncode == 1, result.stderr
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith(f"error: cannot reach the MLflow tracking server at {uri}")
        assert "make server" in message and "MLFLOW_TRACKING_URI" in message
    assert not (repo / "models").exists() and not (repo / "metrics").exists()
    assert sh("dvc", "status", "download", cwd=repo, env=env).strip().endswith("up to date.")


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
