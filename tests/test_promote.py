"""From a passing gate to a served model, for real: `stages.promote` against the SQLite store of a
reproduced repository, then MLflow's scoring server answering good and bad requests."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import pytest
import torch
import yaml

from mnistcnn import mnist
from tests.conftest import free_port, git_commit, make_repo, sh

NAME, ALIAS = "mnist-compact-cnn", "champion"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A reproduced repository on main, its results committed: the gate passes against itself."""
    repo, env = make_repo(tmp_path_factory.mktemp("promote"))
    sh("dvc", "repro", cwd=repo, env=env)
    git_commit(repo, "reproduced")
    return repo, {**env, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def promote(repo, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.promote"], cwd=repo, env=env, capture_output=True, text=True)


def registry(repo, env) -> dict:
    """The registered model's versions (number: tags) and where the alias points, as the store
    the stages used (the repository's own, unless `env` names another) holds them now."""
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo / 'mlruns/mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{NAME}'")
    try:
        alias = str(client.get_model_version_by_alias(NAME, ALIAS).version)
    except mlflow.exceptions.MlflowException:
        alias = None
    found = {str(v.version): {**v.tags, "description": v.description} for v in versions}
    return {"versions": found, "alias": alias}


def test_promote_registers_the_commits_model_once_and_moves_the_alias(repo):
    repo, env = repo
    first = promote(repo, env)
    assert first.returncode == 0, first.stderr
    found = registry(repo, env)
    assert list(found["versions"]) == ["1"] and found["alias"] == "1"
    tags = found["versions"]["1"]
    card = json.loads((repo / "models/model.json").read_text())
    metrics = json.loads((repo / "metrics/test.json").read_text())
    assert tags["git.commit"] == sh("git", "rev-parse", "HEAD", cwd=repo).strip()
    assert tags["weights.sha256"] == card["weights_sha256"] and tags["dataset.digest"] == card["dataset_digest"]
    assert float(tags["test.accuracy"]) == metrics["accuracy"] and tags["param_count"] == "8890"
    assert tags["params.digest"] and tags["gate"].startswith("PASS")
    assert tags["description"].startswith("## Metrics gate: PASS")

    again = promote(repo, env)
    assert again.returncode == 0 and "no new version" in again.stdout
    assert list(registry(repo, env)["versions"]) == ["1"]


def test_promote_refuses_stale_metrics_and_leaves_the_registry_unchanged(repo):
    repo, env = repo
    before = registry(repo, env)
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(params.replace("epochs: 1", "epochs: 2"))  # not reproduced
        refused = promote(repo, env)
    finally:
        (repo / "params.yaml").write_text(params)
    assert refused.returncode == 1
    assert "refused, registry unchanged" in refused.stderr and "stale" in refused.stderr
    assert registry(repo, env) == before


def test_promote_refuses_a_failing_gate(repo):
    repo, env = repo
    before = registry(repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["gate"]["max_params"] = 100  # committed on main: the thresholds in force; the model has 8,890
    original = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    head = git_commit(repo, "a parameter budget the model misses")
    try:
        refused = promote(repo, env)
        assert refused.returncode == 1 and "the gate did not pass (Metrics gate: FAIL)" in refused.stderr
        assert registry(repo, env) == before
    finally:
        (repo / "params.yaml").write_text(original)
        git_commit(repo, f"back from {head[:7]}")


def test_promote_refuses_when_the_store_holds_no_run_of_the_model(repo, tmp_path):
    repo, env = repo
    empty = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'other.db'}"}
    refused = promote(repo, empty)
    assert refused.returncode == 1 and "holds no run that trained models/model.pt" in refused.stderr
    assert registry(repo, empty) == {"versions": {}, "alias": None}


@pytest.fixture(scope="module")
def scoring_server(repo):
    """`python -m stages.serve` (MLflow's scoring server) on the champion, on a free port."""
    repo, env = repo
    if promote(repo, env).returncode != 0:
        pytest.fail("promotion failed before serving")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "stages.serve", "--port", str(port)], cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the scoring server did not start"
                time.sleep(0.5)
        yield url, repo
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_the_served_champion_answers_raw_pixels_and_survives_a_hundred_bad_requests(scoring_server):
    url, repo = scoring_server
    provenance = json.loads((repo / "data/provenance.json").read_text())
    data = mnist.load_split(repo / "data/test.pt", "test", provenance, "data/provenance.json")
    images, labels = data["test_images"][:64], data["test_labels"][:64]
    good = json.dumps({"inputs": images.tolist()}).encode()  # 0-255 integers: no normalisation by the client

    status, answer = post(url, good)
    assert status == 200, answer
    digits = [p["digit"] for p in answer["predictions"]]
    metrics = json.loads((repo / "metrics/test.json").read_text())
    accuracy = (torch.tensor(digits) == labels).double().mean().item()
    assert accuracy >= metrics["accuracy"] - 0.05  # 64 of the 200 images the metrics were measured on
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-4 for p in answer["predictions"])

    one = images[0].tolist()
    bad = [b"not json", b"{", json.dumps({"inputs": []}).encode(), json.dumps({"inputs": [[one[0]]]}).encode(),
           json.dumps({"inputs": [[["a"] * 28] * 28]}).encode(), json.dumps({"inputs": [[[300] * 28] * 28]}).encode(),
           json.dumps({"inputs": [[[-1] * 28] * 28]}).encode(), json.dumps({"inputs": [[[1] * 27] * 28]}).encode(),
           json.dumps({"inputs": [[[float("nan")] * 28] * 28]}).encode(),  # NaN: Python's JSON reads it
           json.dumps({"wrong_key": [one]}).encode()]
    for attempt in range(100):
        status, answer = post(url, bad[attempt % len(bad)])
        assert 400 <= status < 500, (attempt % len(bad), status, answer)
        assert answer.get("message"), answer  # says what was wrong
    status, answer = post(url, good)
    assert status == 200 and [p["digit"] for p in answer["predictions"]] == digits
