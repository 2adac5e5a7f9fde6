"""DVC experiments: queued and temporary runs log to the repository's own MLflow store, one run each."""

import json
import re
import sys

import pytest

from tests.conftest import ROOT, git_commit, make_repo, sh, stored_runs
from tests.helpers import start_queue, stop_workers, wait_for_queue


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository after `dvc repro`, with its results committed: the experiments' baseline."""
    repo, env = make_repo(tmp_path_factory.mktemp("exp"))
    sh("dvc", "repro", cwd=repo, env=env)
    baseline = git_commit(repo, "baseline run")
    yield repo, env, baseline
    stop_workers(repo, env)


ROW = re.compile(r"\S+\s+(\d+\.\d{2} |-|failed)")  # a row of make compare's table: a name, then validation %


def experiments(repo, env) -> dict[str, str]:
    """Each experiment's name and commit, from `dvc exp show`."""
    rows = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo, env=env))
    return {exp["name"]: exp["rev"] for row in rows for exp in (row.get("experiments") or [])
            for exp in exp["revs"] if exp.get("name")}


def test_a_queued_sweep_and_a_temp_run_each_leave_one_complete_run_in_the_repos_store(repo):
    repo, env, baseline = repo
    before = {run["id"] for run in stored_runs(repo)}
    for name, seed in (("sweep-1", 1), ("sweep-2", 2)):
        sh("dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.seed={seed}", cwd=repo, env=env)
    start_queue(repo, env, jobs=2)
    wait_for_queue(repo, env, {"sweep-1", "sweep-2"})
    # DVC writes 1e-5 into params.yaml as 1e-05: a float in YAML 1.2, which the stages must read as DVC does
    sh("dvc", "exp", "run", "--temp", "-n", "temp-3", "-S", "train.seed=3", "-S", "train.lr=1e-5", cwd=repo, env=env)

    new = [run for run in stored_runs(repo) if run["id"] not in before]
    names = sorted(run["tags"].get("dvc.exp_name", "") for run in new)
    assert names == ["sweep-1", "sweep-2", "temp-3"], [(r["name"], r["status"], r["tags"]) for r in new]
    for run in new:
        assert run["status"] == "FINISHED" and "test/accuracy" in run["metrics"]
        assert run["tags"]["git.commit"] == baseline and run["tags"]["git.dirty"] == "true"
    assert next(run for run in new if run["tags"]["dvc.exp_name"] == "temp-3")["params"]["lr"] == "1e-05"
    assert not list((repo / ".dvc/tmp").rglob("mlflow.db"))  # no store left in a temporary copy

    found = experiments(repo, env)
    assert {"sweep-1", "sweep-2", "temp-3"} <= set(found)
    read = ("import sys, json, dvc.api\nfor rev in sys.argv[1:]:\n"
            "    print(json.loads(dvc.api.read('models/model.json', rev=rev))['weights_sha256'])")
    revs = [found[run["tags"]["dvc.exp_name"]] for run in new]
    cards = sh(sys.executable, "-c", read, *revs, cwd=repo, env=env).split()
    # each experiment's model card (a DVC output) names its own weights, and so its run
    assert cards == [run["tags"]["weights.sha256"] for run in new]


def test_a_declared_architecture_runs_as_an_experiment_and_compares_on_validation_first(repo):
    repo, env, _ = repo
    blocks = "[{channels:6,pool:max},{channels:12,convs:2,pool:max},{channels:16,dropout:channel}]"
    sh("dvc", "exp", "run", "-n", "declared-1", "-S", "train.model=declared", "-S", f"train.arch.blocks={blocks}",
       "-S", "train.arch.head.pool=avg", cwd=repo, env=env)
    run = next(run for run in stored_runs(repo) if run["tags"].get("dvc.exp_name") == "declared-1")
    assert run["status"] == "FINISHED" and {"val/accuracy", "test/accuracy"} <= set(run["metrics"])
    declared = json.loads(run["params"]["arch.blocks"])
    assert [(b["channels"], b["convs"], b["pool"], b["dropout"]) for b in declared] == [
        (6, 1, "max", "none"), (12, 2, "max", "none"), (16, 1, "none", "channel")]
    # conv 1->6, 6->12, 12->12, 12->16 (3x3, no bias before BN), their BNs, and the linear layer on 16 averages
    assert run["params"]["param_count"] == str(54 + 648 + 1296 + 1728 + 2 * (6 + 12 + 12 + 16) + 170)
    assert run["name"].startswith("declared-") and run["tags"]["model"] == "declared"

    compare = sh("make", "-s", "-n", "compare", "COMPARE_ARGS=--width 80", cwd=ROOT, env=env)  # what it runs
    table = sh("bash", "-c", compare, cwd=repo, env=env).splitlines()
    assert table[0].split()[:7] == ["experiment", "validation", "%", "vs", "best", "test", "%"]
    assert all(len(line) <= 80 for line in table), [line for line in table if len(line) > 80]  # it fits
    # the workspace holds declared-1's params: one group, named by the experiment
    declared = next(line.split() for line in table if line.startswith("declared-1+1 "))
    assert declared[2:4] == ["(n", "1)"] and declared[8] == run["params"]["param_count"]  # one seed, twice
    if any(line.startswith("sweep-") for line in table):  # the first test's sweeps: main's recipe at seeds 1, 2
        pooled = next(line.split() for line in table if line.startswith("sweep-1+2 "))
        assert pooled[5] == "3)"  # main's seed 0 and theirs: one group of 3 seeds
    assert abs(float(declared[1]) - run["metrics"]["val/accuracy"] * 100) < 5e-3  # a percentage to 2 places
    rows = [line.split() for line in table[1:] if ROW.match(line)]  # not the notes under the table
    validations = [float(row[1]) for row in rows if row[1] not in ("-", "failed")]
    assert validations == sorted(validations, reverse=True) and len(validations) >= 3  # best validation first
    header, *wide = sh("bash", "-c", compare.replace("--width 80", "--width 1000"), cwd=repo, env=env).splitlines()
    row = next(line.split() for line in wide if line.startswith("declared-1+1 "))
    assert "model" in header.split() and "declared" in row[9:]  # the train params after the count tell it apart


def test_a_workspace_experiment_stays_applied_for_the_next_and_reset_brings_back_the_commit(repo):
    """The chain docs/experiments.md warns of: a second workspace experiment inherits the first's -S
    value. `make reset` (stages.reset) then leaves `git status` clean and the committed weights."""
    repo, env, baseline = repo
    committed = sh("git", "show", "HEAD:params.yaml", cwd=repo, env=env)  # the workspace may hold an earlier test's
    sh("dvc", "exp", "run", "-n", "chain-1", "-S", "train.seed=1", cwd=repo, env=env)
    sh("dvc", "exp", "run", "-n", "chain-2", "-S", "train.lr=0.0123", cwd=repo, env=env)  # no run-cache hit
    chained = [run for run in stored_runs(repo) if run["tags"].get("dvc.exp_name") == "chain-2"]
    assert [run["params"]["seed"] for run in chained] == ["1"]  # applied by chain-1, not asked for
    assert sh("git", "status", "--porcelain", "--untracked-files=no", cwd=repo, env=env)

    said = sh(sys.executable, "-m", "stages.reset", cwd=repo, env=env)
    assert "params.yaml" in said and "dvc.lock" in said
    assert sh("git", "status", "--porcelain", cwd=repo, env=env) == ""
    assert (repo / "params.yaml").read_text() == committed
    assert "Running stage" not in sh("dvc", "repro", cwd=repo, env=env)  # the outputs are the commit's again
    assert sh("git", "rev-parse", "HEAD", cwd=repo, env=env).strip() == baseline
