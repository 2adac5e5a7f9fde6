"""MLflow runs end as they truly ended, and a stage that fails or is interrupted writes no output."""

import errno
import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mnistcnn.tracking import owner, runs
from tests.conftest import ROOT, git_commit, make_repo, params_for, sh, tool_env, stored_runs, write_mnist

OUTPUTS = ("models/model.pt", "models/model.json", "metrics/train.json", "metrics/train_history.json",
           "metrics/val_history.json", "models/replicates/seed-0.pt", "models/replicates/seed-0.json")
FOLDERS = ("models", "models/replicates", "metrics")  # where the train stage writes


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder holding params.yaml and the downloaded synthetic dataset, its store under mlruns/."""
    tmp = tmp_path_factory.mktemp("status")
    folder = tmp / "work"
    folder.mkdir()
    params = params_for(write_mnist(tmp / "mirror"), ["http://127.0.0.1:9/"], epochs=1000)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(sys.executable, "-m", "stages.download", cwd=folder, env=env_for(folder, MNIST_MIRROR=str(tmp / "mirror")))
    return folder


def env_for(folder, **extra):
    """Stages run from `folder`, this checkout's code, and a store under `folder` as under `dvc repro`."""
    return tool_env(PYTHONPATH=str(ROOT), DVC_ROOT=str(folder), **extra)


def fresh_copy(workdir, tmp_path):
    shutil.copytree(workdir, tmp_path / "work")
    return tmp_path / "work"


def leftovers(folder):
    """Outputs, and temporary files of outputs, in the train stage's folders."""
    found = [path for path in OUTPUTS if (folder / path).exists()]
    return found + [p.name for d in FOLDERS if (folder / d).exists() for p in (folder / d).iterdir()
                    if not p.is_dir() or p.name != "replicates"]


def test_a_stage_that_raises_leaves_its_run_failed_and_writes_nothing(workdir, tmp_path):
    folder = fresh_copy(workdir, tmp_path)
    crash = ("from mnistcnn import cli\nfrom mnistcnn.training import engine\nfrom stages import train\n"
             "def fail(*args, **kwargs): raise RuntimeError('boom')\n"
             "engine.train_epoch = fail\n"
             "cli.run(train.main)\n")
    result = subprocess.run([sys.executable, "-c", crash], cwd=folder, env=env_for(folder),
                            capture_output=True, text=True)
    assert result.returncode == 1 and "RuntimeError: boom" in result.stderr
    assert stored_runs(folder)[-1]["status"] == "FAILED"
    assert leftovers(folder) == []


def test_sigterm_mid_training_leaves_its_run_killed_and_writes_nothing(workdir, tmp_path):
    folder = fresh_copy(workdir, tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=folder, env=env_for(folder),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any("train/loss" in run["metrics"] for run in runs_if_any(folder)):  # an epoch has ended
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=120)  # 60 s was once too short beside the serving tests
    said = process.stderr.read()
    assert code == 130 and "interrupted: no output was written" in said, said[-3000:]
    assert stored_runs(folder)[-1]["status"] == "KILLED"
    assert leftovers(folder) == []


def runs_if_any(folder):
    """The store's runs, or none while it does not exist or MLflow is still creating its tables."""
    try:
        return stored_runs(folder) if (folder / "mlruns/mlflow.db").exists() else []
    except sqlite3.OperationalError:  # "no such table": the schema is being built
        return []


def interrupt():
    raise KeyboardInterrupt  # what mnistcnn.cli turns SIGTERM into


@pytest.mark.parametrize("ending, status", [
    (lambda: None, "FINISHED"),
    (lambda: sys.exit(0), "FINISHED"),
    (lambda: sys.exit(1), "FAILED"),
    (lambda: sys.exit("error: bad input"), "FAILED"),
    (lambda: 1 / 0, "FAILED"),
    (interrupt, "KILLED"),
])
def test_a_run_ends_with_the_status_of_how_its_block_ended(tmp_path, monkeypatch, ending, status):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the default store goes under it
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        with runs.run("status", stage="test"):
            ending()
    except (Exception, SystemExit, KeyboardInterrupt):
        pass
    assert [run["status"] for run in stored_runs(tmp_path)] == [status]


def test_a_resumed_run_keeps_the_start_and_end_of_its_training(tmp_path, monkeypatch):
    """Evaluate and promote log into the run that trained the model, seconds or hours later."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with runs.run("resumed", stage="train") as run_id:
        pass
    trained = runs.mlflow.get_run(run_id).info
    time.sleep(1.1)  # MLflow's times are in milliseconds
    with runs.run("resumed", stage="evaluate", run_id=run_id):
        runs.log_metrics({"test/accuracy": 0.99})
    resumed = runs.mlflow.get_run(run_id)
    assert (resumed.info.start_time, resumed.info.end_time, resumed.info.status) == (
        trained.start_time, trained.end_time, "FINISHED")
    assert resumed.data.metrics["test/accuracy"] == 0.99 and resumed.data.tags["stage.evaluate"] == "ran"
    with pytest.raises(ZeroDivisionError), runs.run("resumed", stage="evaluate", run_id=run_id):
        1 / 0
    failed = runs.mlflow.get_run(run_id).info
    assert (failed.end_time, failed.status) == (trained.end_time, "FAILED")


def test_identity_tags_name_the_commit_and_whether_tracked_files_differ(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    (repo / "code.py").write_text("x = 1\n")
    commit = git_commit(repo, "code")
    assert runs.identity_tags({}, root=repo) == {"git.commit": commit, "git.dirty": "false"}
    (repo / "notes.txt").write_text("untracked files change no result\n")
    assert runs.identity_tags({}, root=repo)["git.dirty"] == "false"
    (repo / "code.py").write_text("x = 2\n")
    assert runs.identity_tags({}, root=repo)["git.dirty"] == "true"


def test_identity_tags_say_unknown_where_git_cannot_be_asked(tmp_path):
    assert runs.identity_tags({}, root=tmp_path) == {"git.commit": "unknown", "git.dirty": "unknown"}


def test_identity_tags_name_the_experiment_and_its_baseline_under_dvc_exp(tmp_path):
    tags = runs.identity_tags({"DVC_EXP_NAME": "sweep-1", "DVC_EXP_BASELINE_REV": "a" * 40}, root=tmp_path)
    assert tags["dvc.exp_name"] == "sweep-1" and tags["git.commit"] == "a" * 40


def test_an_experiment_another_client_made_meanwhile_is_taken_not_an_error(tmp_path, monkeypatch):
    """Two search workers on one server hold no common lock: both may find no experiment and both
    create it. Here the other worker creates it, for real, between this one's lookup and create."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    lookup = runs.mlflow.get_experiment_by_name
    theirs = []

    def late_lookup(name):
        if not theirs:  # the first lookup: not there yet, but made by the other worker just after
            theirs.append(runs.mlflow.MlflowClient().create_experiment(name))
            return None
        return lookup(name)

    monkeypatch.setattr(runs.mlflow, "get_experiment_by_name", late_lookup)
    assert runs.open_experiment("shared") == theirs[0]


def test_the_first_run_on_a_new_store_prints_nothing_of_mlflows_own(tmp_path):
    """MLflow announces at INFO that it creates a new store's tables: news to no one on a first run."""
    start = "from mnistcnn.tracking import runs\nwith runs.run('quiet', stage='test'):\n    pass\n"
    result = subprocess.run([sys.executable, "-c", start], env=env_for(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and (tmp_path / "mlruns/mlflow.db").exists()
    assert (result.stdout, result.stderr) == ("", "")


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open."""
    try:
        return any(os.path.realpath(fd) == str(path.resolve()) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:  # the process, or one of its descriptors, went away meanwhile
        return False


def test_stages_starting_together_on_a_new_store_all_get_their_run(tmp_path):
    """MLflow creates a new store's tables without a lock; without ours, two of three fail.

    The test holds the lock while three stages start, so none may touch the store until it
    lets go; then all three start at once, the race made certain rather than left to chance."""
    start = ("import sys\nfrom mnistcnn.tracking import runs\n"
             "with runs.run('together', stage='test', run_name=sys.argv[1]):\n    pass\n")
    store = tmp_path / "mlruns/mlflow.db"
    store.parent.mkdir()
    with open(f"{store}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        processes = [subprocess.Popen([sys.executable, "-c", start, str(n)], env=env_for(tmp_path), cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for n in range(3)]
        deadline = time.monotonic() + 120
        while not all(holds_open(p.pid, Path(f"{store}.lock")) for p in processes):  # all reached the lock
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
            time.sleep(0.2)
        time.sleep(0.5)  # a process that went on past the lock would have touched the store by now
        assert [p.poll() for p in processes] == [None] * 3  # all waiting on the lock,
        assert not store.exists()  # and none has touched the store
    errors = [p.stderr.read() for p in processes if p.wait(timeout=120) != 0]
    assert errors == []
    runs = stored_runs(tmp_path)
    assert sorted(run["name"] for run in runs) == ["0", "1", "2"] and {r["status"] for r in runs} == {"FINISHED"}


def wait_for_an_epoch(folder, process, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while not any("train/loss" in run["metrics"] for run in runs_if_any(folder)):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.5)


def test_a_run_whose_process_was_killed_is_ended_as_killed_by_the_next_stage(workdir, tmp_path):
    folder = fresh_copy(workdir, tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=folder, env=env_for(folder),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_an_epoch(folder, process)
    process.kill()  # SIGKILL: no handler runs, the run cannot end itself
    process.wait(timeout=30)
    killed = stored_runs(folder)[-1]
    assert killed["status"] == "RUNNING" and killed["tags"]["run.pid"] == str(process.pid)

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a run whose owner lives
    other = owner.tags() | {"run.pid": str(live.pid), "run.pid_started": owner._started(live.pid)}
    start = ("import sys, json, mlflow\nfrom mnistcnn.tracking import runs\n"  # a run left RUNNING on purpose
             "client = mlflow.MlflowClient(runs.tracking_uri())\n"
             "client.create_run(client.create_experiment('alive'), tags=json.loads(sys.argv[1]))\n")
    try:
        sh(sys.executable, "-c", start, json.dumps(other), cwd=folder, env=env_for(folder))
        sh(sys.executable, "-c", "from mnistcnn.tracking import runs\nwith runs.run('next', stage='next'):\n    pass\n",
           cwd=folder, env=env_for(folder))
        stored = {run["id"]: run for run in stored_runs(folder)}
        assert stored[killed["id"]]["status"] == "KILLED"
        assert f"process {process.pid} on" in stored[killed["id"]]["tags"]["run.ended_by"]
        assert [r["status"] for r in stored.values() if r["tags"].get("run.pid") == str(live.pid)] == ["RUNNING"]
    finally:
        live.kill()


def test_dvc_repro_after_a_sigkill_of_dvc_and_its_stage_works_and_leaves_nothing_running(tmp_path):
    repo, env = make_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = 1000
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_an_epoch(repo, dvc, timeout=180)
    os.killpg(dvc.pid, signal.SIGKILL)  # dvc and the stage it runs, mid-epoch, as a closed laptop would
    dvc.wait(timeout=30)
    params["train"]["epochs"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc", "repro", cwd=repo, env=env)
    assert "Running stage 'train'" in out and (repo / "metrics/test.json").exists()
    statuses = [run["status"] for run in stored_runs(repo)]
    assert "RUNNING" not in statuses and statuses.count("KILLED") == 1


@pytest.fixture(scope="module")
def trained(workdir, tmp_path_factory):
    """The work folder after one epoch's training: outputs for a failed stage to keep."""
    folder = fresh_copy(workdir, tmp_path_factory.mktemp("trained"))
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(sys.executable, "-m", "stages.train", cwd=folder, env=env_for(folder))
    return folder


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_or_read_only_folder_fails_clearly_and_keeps_the_previous_outputs(trained, tmp_path, error):
    folder = fresh_copy(trained, tmp_path)
    before = {path: (folder / path).read_bytes() for path in OUTPUTS}
    fail = ("import builtins, os\nfrom mnistcnn import cli, outputs\nfrom stages import train\n"
            "def full(path, mode='r', *args, **kwargs):\n"
            f"    if 'w' in mode: raise OSError({error}, os.strerror({error}), str(path))\n"
            "    return builtins.open(path, mode, *args, **kwargs)\n"
            "outputs.open = full  # every output the stage writes, the weights first\n"
            "cli.run(train.main)\n")
    result = subprocess.run([sys.executable, "-c", fail], cwd=folder, env=env_for(folder),
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot write ({os.strerror(error)}); the previous outputs are unchanged" in result.stderr
    assert "models/replicates" in result.stderr  # every seed's weights are written first
    assert {path: (folder / path).read_bytes() for path in OUTPUTS} == before
    assert sorted(leftovers(folder)) == sorted(OUTPUTS + tuple(Path(p).name for p in OUTPUTS))
    assert stored_runs(folder)[-1]["status"] == "FAILED"
