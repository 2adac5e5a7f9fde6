"""From a passing gate to a served model, for real: `stages.promote` against the SQLite store of a
reproduced repository, then MLflow's scoring server answering good and bad requests."""

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import mlflow
import pytest
import torch
import yaml

from benchmarks import load
from mnistcnn.data import mnist
from mnistcnn.outputs import save_torch, sha256_file, write_json
from mnistcnn.serving import registry as mnistcnn_registry
from mnistcnn.serving import classifier
from mnistcnn.serving.scoring_server import BODY_TIMEOUT, HEADER_TIMEOUT
from tests.conftest import git_commit, make_repo, sh
from tests.helpers import using

NAME, ALIAS = "mnist-compact-cnn", "champion"
EXPERIMENT = "mnist-compact-cnn"  # params.yaml's tracking.experiment


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A reproduced repository on main, its results committed: the gate passes against itself."""
    repo, env = make_repo(tmp_path_factory.mktemp("promote"))
    sh("dvc", "repro", cwd=repo, env=env)
    git_commit(repo, "reproduced")
    return repo, {**env, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def promote(repo, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.promote"], cwd=repo, env=env, capture_output=True, text=True)


def store(repo, env) -> mlflow.MlflowClient:
    """A client of the store the stages used: the repository's own, unless `env` names another."""
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo / 'mlruns/mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def registry(repo, env) -> dict:
    """The registered model's versions (number: tags) and where the alias points, as the store
    the stages used holds them now."""
    client = store(repo, env)
    versions = client.search_model_versions(f"name = '{NAME}'")
    try:
        alias = str(client.get_model_version_by_alias(NAME, ALIAS).version)
    except mlflow.exceptions.MlflowException:
        alias = None
    found = {str(v.version): {**v.tags, "description": v.description} for v in versions}
    return {"versions": found, "alias": alias}


def trained(repo, env) -> mlflow.entities.RunInfo:
    """The run that trained the repository's model, as the store holds it now."""
    client = store(repo, env)
    weights = json.loads((repo / "models/model.json").read_text())["weights_sha256"]
    [run] = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                               f"tags.`weights.sha256` = '{weights}'")
    return run.info


def test_promote_registers_the_commits_model_once_and_moves_the_alias(repo):
    repo, env = repo
    before = trained(repo, env)
    first = promote(repo, env)
    assert first.returncode == 0, first.stderr
    after = trained(repo, env)  # the served model is logged into the training run: its times stay as trained
    assert (after.status, after.start_time, after.end_time) == ("FINISHED", before.start_time, before.end_time)
    client = store(repo, env)
    version = client.get_model_version(NAME, "1")  # made from models:/<the logged model's id>
    served = client.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
    assert (served.source_run_id, served.experiment_id) == (after.run_id, after.experiment_id)
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
    with load.serving(repo, 2, env, repo.parent / "serve.log") as (url, pid):
        load.load(url, load.image_body(repo), clients=4, seconds=2)  # warm: each worker's first requests grow it
        yield url, repo, pid


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_the_served_champion_answers_raw_pixels_and_survives_a_hundred_bad_requests(scoring_server):
    url, repo, _ = scoring_server
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


HOLDER = """import sys
print("ready", flush=True)
sys.stdin.readline()
held = b"x" * (50 * 2**20)
print("holding", flush=True)
sys.stdin.readline()
"""


def test_the_memory_bound_sees_a_process_read_50_mb_and_not_other_processes_come_and_go():
    """The bound below must be able to fail, and must not fail for what other tests run meanwhile
    (PSS moves by hundreds of MB when other processes map torch; the bound measures allocations)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        with load.PeakMemory(holder.pid) as others_meanwhile:
            for other in [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"]) for _ in range(4)]:
                other.wait()
        with load.PeakMemory(holder.pid) as reading:
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline() == "holding\n"
            time.sleep(0.6)  # three samples
    finally:
        holder.kill()
        holder.wait()
    assert others_meanwhile.growth < 8 * 2**20, load.megabytes(others_meanwhile)
    assert reading.growth >= 50 * 2**20, load.megabytes(reading)


def test_the_scoring_server_holds_32_clients_without_an_error(scoring_server):
    url, repo, pid = scoring_server
    body = load.image_body(repo)
    with load.PeakMemory(pid) as memory:
        result = load.load(url, body, clients=32, seconds=2)
    assert result["errors"] == 0 and result["answers"] > 32, result
    print(f"32 clients: {result}; {load.megabytes(memory)}")
    assert not memory.replaced, f"scoring workers {memory.replaced} died meanwhile"
    assert memory.growth < 128 * 2**20  # bounded: no request grows it


@pytest.mark.parametrize("name", list(load.ABUSES))
def test_abuse_is_refused_or_cut_off_in_seconds_and_others_are_served_meanwhile(scoring_server, name):
    url, repo, pid = scoring_server
    probe, *args = load.ABUSES[name]
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(load.timed(probe, url, *args)))
    with load.PeakMemory(pid) as memory:
        thread.start()
        good = load.load(url, load.image_body(repo), clients=2, seconds=3)
        thread.join()
    expected = {"50 MB body, declared": "413", "50 MB body, chunked": "413", "JSON 100,000 deep": "400",
                "headers a byte a second": "closed", "body a byte a second": "408"}[name]
    assert expected in outcome["outcome"], outcome
    limit = BODY_TIMEOUT if "body a byte" in name else HEADER_TIMEOUT
    assert outcome["seconds"] <= limit + 3, outcome
    assert good["errors"] == 0 and good["answers"] > 0, good
    print(f"{name}: {outcome}; {load.megabytes(memory)}")
    assert not memory.replaced, f"scoring workers {memory.replaced} died meanwhile"
    assert memory.growth < 64 * 2**20  # no worker read 50 MB into memory, let alone parsed it


def tampered(repo, folder, commit: str | None, change_weights: bool) -> tuple[str, str]:
    """A version made as anyone who can write to the registry could make one: the champion's tags, but
    `commit` as its git.commit (None: no such tag), its weights changed or not, and a card and
    weights.sha256 tag that agree with them; the alias moved to it. Returns it and the champion."""
    with using(f"sqlite:///{repo / 'mlruns/mlflow.db'}"):
        client = mlflow.MlflowClient()
        champion = client.get_model_version_by_alias(NAME, ALIAS)
        state = torch.load(repo / "models/model.pt", weights_only=True)
        if change_weights:
            first = next(iter(state))
            state[first] = state[first] + 0.01
        weights, card = folder / "model.pt", folder / "model.json"
        save_torch(state, weights)
        write_json(card, {**json.loads((repo / "models/model.json").read_text()), "weights_sha256": sha256_file(weights)})
        with mlflow.start_run(experiment_id=client.get_run(champion.run_id).info.experiment_id) as run:
            model_uri = classifier.log_served_model(weights, card)
        tags = {**champion.tags, "weights.sha256": sha256_file(weights), "git.commit": commit or ""}
        version = mnistcnn_registry.register(NAME, model_uri, run.info.run_id, tags, description="tampered")
        mnistcnn_registry.move_alias(NAME, ALIAS, version.version)
    return str(version.version), str(champion.version)


@pytest.mark.parametrize("kind", ["weights changed", "commit not on main", "no commit"])
def test_serve_refuses_a_champion_whose_weights_main_did_not_train(scoring_server, repo, tmp_path, kind):
    repo, env = repo
    head = sh("git", "rev-parse", "HEAD", cwd=repo).strip()
    if kind == "commit not on main":
        sh("git", "checkout", "-q", "-b", f"side-{tmp_path.name}", cwd=repo)
        sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "off main",
           cwd=repo)  # the same weights, on a commit main does not hold
        head = sh("git", "rev-parse", "HEAD", cwd=repo).strip()
        sh("git", "checkout", "-q", "main", cwd=repo)
    version, champion = tampered(repo, tmp_path, None if kind == "no commit" else head,
                                 change_weights=kind == "weights changed")
    try:
        refused = subprocess.run([sys.executable, "-m", "stages.serve", "--port", "1"], cwd=repo, env=env,
                                 capture_output=True, text=True, timeout=120)
    finally:
        with using(f"sqlite:///{repo / 'mlruns/mlflow.db'}"):
            mnistcnn_registry.move_alias(NAME, ALIAS, champion)
    wanted = {"weights changed": "its models/model.pt is not the one commit", "commit not on main":
              "is not on main: only what was merged is served", "no commit": "it has no git.commit tag"}[kind]
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"error: refused to serve {NAME} version {version}: ") and wanted in lines[0], lines
