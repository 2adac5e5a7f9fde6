"""Queued DVC experiments log to the team server: the queue's workers run each experiment in a copy
of the repository, and the server address and the teammate's login reach their stages."""

import urllib.error

import pytest
import yaml

from mnistcnn.team import access
from tests.conftest import git_commit, make_repo, sh
from tests.helpers import as_admin, login, server_runs, start_queue, stop_workers, wait_for_queue

EXPERIMENT = "queued-on-the-server"  # this module's own, on the run's shared team server


@pytest.fixture(scope="module")
def repo(tmp_path_factory, team_server):
    """A committed repository whose stages log to the team server as the teammate `erin`."""
    as_admin(team_server)
    repo, env = make_repo(tmp_path_factory.mktemp("queue"), store=False)  # a local store must stay absent
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tracking"]["experiment"] = EXPERIMENT
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit(repo, "its own experiment")
    erin = login("erin", access.add_teammate(team_server.url, team_server.folder, "erin"))
    env = {**env, "MLFLOW_TRACKING_URI": team_server.url, **erin}
    yield repo, env
    stop_workers(repo, env)


def test_a_queued_experiment_lands_on_the_server_with_its_teammates_login(team_server, repo):
    repo, env = repo
    sh("dvc", "exp", "run", "--queue", "-n", "server-1", "-S", "train.seed=1", cwd=repo, env=env)
    start_queue(repo, env, jobs=1)
    wait_for_queue(repo, env, {"server-1"}, runs=lambda: runs_if_any(team_server.url))
    [run] = server_runs(team_server.url, EXPERIMENT)
    assert run["tags"]["dvc.exp_name"] == "server-1"  # made with erin's login: the server lets no one else in
    assert run["status"] == "FINISHED" and "test/accuracy" in run["metrics"]
    assert not (repo / "mlruns/mlflow.db").exists()  # nothing went to a local store


def runs_if_any(url: str) -> list[dict]:
    """The experiment's runs, or none while its first stage has not created it yet."""
    try:
        return server_runs(url, EXPERIMENT)
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
        return []
