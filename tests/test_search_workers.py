"""One study, many workers: two clones search together through the team server's PostgreSQL on
loopback (password-only over TCP), under one MLflow parent run; a worker killed mid-trial has its
trial failed by the other, which runs it again and goes on."""

import os
import signal
import stat
import subprocess
import sys
import time

import mlflow
import optuna
import psycopg2
import pytest
import yaml
from mlflow.exceptions import MlflowException

from mnistcnn.search import studies, study_runs
from mnistcnn.tracking import records
from mnistcnn.team import access, postgres
from tests.conftest import git_commit, make_repo, sh
from tests.helpers import SEARCH, with_search

# Trials of seconds (10 epochs of 16 steps, scored 4 times an epoch), none refused, none pruned:
# a worker killed at its trial's first scoring is killed mid-trial.
LONG = ["-S", "search.epochs=10", "-S", "search.max_params=100000", "-S", "search.pruner.kind=none"]


@pytest.fixture(scope="module")
def team(team_server):
    """The test run's team server (conftest.team_server): its study storage on a TCP port, this
    module's studies and its teammates `first` and `second`."""
    with pytest.MonkeyPatch.context() as patch:  # this process reads the runs back as the admin
        for name, value in access.credentials(team_server.folder, access.ADMIN).items():
            patch.setenv(name, value)
        yield team_server


def clone(tmp_path_factory, team, name: str) -> tuple:
    """A teammate's repository, its data downloaded, logging to the team server."""
    repo, env = make_repo(tmp_path_factory.mktemp(name), store=False)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(with_search(params), sort_keys=False))
    git_commit(repo, "a search section")
    password = access.add_teammate(team.url, team.folder, name)  # each clone is its own teammate
    env = {**env, "MLFLOW_TRACKING_URI": team.url, "SEARCH_STORAGE": team.study_url,
           "MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password}
    sh("dvc", "repro", "download", cwd=repo, env=env)
    return repo, env


@pytest.fixture(scope="module")
def clones(tmp_path_factory, team):
    return clone(tmp_path_factory, team, "first"), clone(tmp_path_factory, team, "second")


def worker(repo, env, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.search", *args], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def trials_if_any(team, study: str) -> list:
    """The study's trials, or none while it is not created yet."""
    try:
        return trials_of(team, study)
    except KeyError:
        return []


def trials_of(team, study: str) -> list:
    url = studies.storage_url(team.study_url, None)
    storage = optuna.storages.RDBStorage(url)
    return optuna.load_study(study_name=study, storage=storage).trials


def test_the_study_storage_takes_only_its_password_over_tcp(team):
    host, port = "127.0.0.1", int(team.study_url.rsplit(":", 1)[1].split("/")[0])
    password = (team.folder / postgres.STUDY_PASSWORD).read_text().strip()
    assert stat.S_IMODE(os.stat(team.folder / postgres.STUDY_PASSWORD).st_mode) == 0o600
    assert f"optuna:{password}@127.0.0.1:{port}/optuna" in team.study_url
    for user, secret in (("optuna", None), ("optuna", "wrong"), ("postgres", None), ("postgres", "")):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host=host, port=port, user=user, password=secret, dbname="optuna", connect_timeout=5)
    psycopg2.connect(host=host, port=port, user="optuna", password=password, dbname="optuna").close()
    hba = [line.split() for line in (team.folder / "postgres/pg_hba.conf").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    assert all(line[-1] == "scram-sha-256" for line in hba if line[0].startswith("host"))


def test_two_workers_in_two_clones_share_one_study_and_one_parent_run(team, clones):
    (first, first_env), (second, second_env) = clones
    workers = [worker(first, first_env, "--study", "team", "--trials", "3"),
               worker(second, second_env, "--study", "team", "--trials", "3")]
    for process in workers:
        finished(process)
    trials = trials_of(team, "team")
    assert sorted(t.number for t in trials) == list(range(6))  # counts add up, no number twice
    by_worker = {}
    for trial in trials:
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial.number)
    assert sorted(len(numbers) for numbers in by_worker.values()) == [3, 3]
    mlflow.set_tracking_uri(team.url)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("mnist-compact-cnn-search")
    parents = client.search_runs([experiment.experiment_id], "tags.`search.study` = 'team' AND "
                                 "tags.`search.role` = 'study'")
    assert len(parents) == 1
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert sorted(int(r.data.tags["trial.number"]) for r in children) == list(range(6))


def test_a_duplicate_parent_run_a_teammate_may_not_delete_is_taken_out_of_the_study(team, clones):
    """Two workers that each made a parent run keep the older; the other is deleted, or, where the
    teammate may not delete runs (EDIT on another's experiment), tagged out of the study."""
    (_, second_env) = clones[1]
    admin = mlflow.MlflowClient(team.url)  # this module's process is the admin
    experiment_id = admin.create_experiment("made-by-another")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(team.url)  # where records writes
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                patch.setenv(name, second_env[name])
            teammate = mlflow.MlflowClient(team.url)
            made = teammate.create_run(experiment_id, tags={study_runs.STUDY_TAG: "raced",
                                                            study_runs.ROLE_TAG: "study"}).info.run_id
            with pytest.raises(MlflowException, match="403"):  # what the worker hit
                teammate.delete_run(made)
            records.discard_run(made, study_runs.ROLE_TAG, "duplicate")
        run = admin.get_run(made)
        assert run.data.tags[study_runs.ROLE_TAG] == "duplicate" and run.info.lifecycle_stage == "active"
        own = admin.create_run(experiment_id).info.run_id
        records.discard_run(own, study_runs.ROLE_TAG, "duplicate")  # who may delete, deletes
        assert admin.get_run(own).info.lifecycle_stage == "deleted"
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_worker_killed_mid_trial_has_its_trial_failed_and_run_again_by_the_other(team, clones):
    (first, first_env), (second, second_env) = clones
    doomed = worker(first, first_env, *LONG, "--study", "killed", "--trials", "1")
    deadline = time.monotonic() + 120
    while not (victim := next((t for t in trials_if_any(team, "killed") if "val_curve" in t.user_attrs), None)):
        assert time.monotonic() < deadline and doomed.poll() is None, "no trial of the first worker training"
        time.sleep(0.2)
    assert victim.user_attrs["worker"].endswith(f":{doomed.pid}")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(30)
    # Its heartbeat is silent from now on: once the grace is over, the next worker to ask for a
    # trial fails it, and is handed it to run again.
    heartbeat = SEARCH["heartbeat"]
    time.sleep(heartbeat["interval"] * heartbeat["missed"])
    survivor = worker(second, second_env, *LONG, "--study", "killed", "--trials", "1")
    output = finished(survivor)
    trials = {t.number: t for t in trials_of(team, "killed")}
    assert trials[victim.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].state.is_finished() and retried[0].params == victim.params
    assert retried[0].user_attrs["worker"].endswith(f":{survivor.pid}")
    assert len(trials) == 2 and f"trial {victim.number} failed: its worker stopped beating" in output
    assert all(t.state == optuna.trial.TrialState.COMPLETE for n, t in trials.items() if n != victim.number)
    mlflow.set_tracking_uri(team.url)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("mnist-compact-cnn-search").experiment_id
    logged = client.search_runs([experiment], f"tags.`search.study` = 'killed' AND tags.`trial.number` = '{victim.number}'")
    assert [(r.info.status, r.data.tags["trial.ended_by"]) for r in logged] == [("FAILED", "its worker stopped beating")]
