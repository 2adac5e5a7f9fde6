"""A team shares trained models through a DVC remote (here a local folder, as a shared drive):
a fresh reproduction leaves the committed files as they were, and a teammate's clone restores
the pushed model instead of training it."""

import json

import pytest

from tests.conftest import git_commit, make_repo, sh, stored_runs

OUTPUTS = ("data/train.pt", "data/test.pt", "models/model.pt", "models/model.json", "metrics/test.json", "metrics/train_history.json")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """Clone A: reproduced, its results committed with a shared remote configured, then pushed
    (outputs and run-cache), as `make repro && git commit && make push` do."""
    tmp = tmp_path_factory.mktemp("team")
    a, env = make_repo(tmp)
    sh("dvc", "remote", "add", "--default", "team", str(tmp / "remote"), cwd=a, env=env)
    sh("dvc", "repro", cwd=a, env=env)
    git_commit(a, "reproduced, with the team's remote")
    sh("dvc", "push", "--run-cache", cwd=a, env=env)
    return tmp, a, env


def clone(tmp, a, name: str):
    sh("git", "clone", "-q", str(a), str(tmp / name), cwd=tmp)
    return tmp / name


def test_a_fresh_clone_reproduces_the_committed_lock_and_metrics_exactly(team):
    """Every stage run again from nothing, elsewhere: the same data, weights and metrics, byte for byte
    (DVC removes a stage's outputs before it runs, so `dvc repro -f` in place proves no more)."""
    tmp, a, env = team
    c = clone(tmp, a, "c")
    out = sh("dvc", "repro", cwd=c, env=env)
    assert "Running stage 'train'" in out  # trained from scratch: nothing pulled
    assert sh("git", "status", "--porcelain", cwd=c, env=env) == ""
    assert all((c / path).read_bytes() == (a / path).read_bytes() for path in OUTPUTS)


def test_a_teammate_pulls_the_model_and_reproduces_without_training(team):
    tmp, a, env = team
    b = clone(tmp, a, "b")
    sh("dvc", "pull", "--run-cache", cwd=b, env={**env, "MNIST_MIRROR": "/nonexistent"})  # as `make pull` does
    out = sh("dvc", "repro", cwd=b, env={**env, "MNIST_MIRROR": "/nonexistent"})  # a download would fail
    assert "Running stage" not in out, out
    assert not (b / "mlruns/mlflow.db").exists()  # no stage ran, so no run was logged
    assert all((b / path).read_bytes() == (a / path).read_bytes() for path in OUTPUTS)
    assert sh("git", "status", "--porcelain", cwd=b, env=env) == ""

    # Evaluating the pulled model again, against a store that never saw it trained:
    # a complete run, not an MLflow error about a run id this store lacks.
    sh("dvc", "repro", "--force", "--single-item", "evaluate", cwd=b, env=env)
    [run] = stored_runs(b)
    card = json.loads((b / "models/model.json").read_text())
    assert run["status"] == "FINISHED" and run["tags"]["weights.sha256"] == card["weights_sha256"]
    assert "run.adopted" in run["tags"] and run["params"]["model"] == "cnn9k"
    assert {"train/loss", "test/accuracy"} <= set(run["metrics"])
    assert run["metrics"]["test/accuracy"] == json.loads((b / "metrics/test.json").read_text())["accuracy"]
    model_files = list((b / "mlruns/artifacts").rglob("MLmodel"))
    assert len(model_files) == 1
    assert sh("git", "status", "--porcelain", cwd=b, env=env) == ""  # the same metrics, byte for byte


def test_a_run_cache_restore_in_a_teammates_clone_runs_nothing_after_a_param_round_trip(team):
    """`dvc repro --pull` restores a stage whose inputs match a pushed run, where dvc.lock
    alone would not: B changes a param to a value A pushed a run of, and gets A's model.
    Evaluate runs (its metrics live in git, not in the remote), and scores it as A did."""
    tmp, a, env = team
    sh("dvc", "exp", "run", "-S", "train.seed=5", cwd=a, env=env)  # a run of seed 5 lands in A's run-cache
    sh("dvc", "push", "--run-cache", cwd=a, env=env)
    pushed = (a / "models/model.pt").read_bytes()
    b = clone(tmp, a, "b2")
    params = (b / "params.yaml").read_text().replace("\n  seed: 0\n", "\n  seed: 5\n")  # train.seed, not validation's
    (b / "params.yaml").write_text(params)
    out = sh("dvc", "repro", "--pull", cwd=b, env={**env, "MNIST_MIRROR": "/nonexistent"})
    assert "Stage 'train' is cached - skipping run" in out and "Running stage 'train'" not in out, out
    assert (b / "models/model.pt").read_bytes() == pushed
    assert (b / "metrics/test.json").read_bytes() == (a / "metrics/test.json").read_bytes()
