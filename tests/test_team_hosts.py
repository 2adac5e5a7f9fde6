"""The team across machines: the tracking server on one host's network address, two teammates on
two other hosts, a stranger on a fourth (separate network namespaces: tests/hosts.py). Off
loopback both servers speak TLS only, with the server's own CA, which the teammates trust; a
teammate's pipeline logs a complete run, two search workers share one study over PostgreSQL on
TCP, a worker host's process killed mid-trial has its trial failed and run again on the other
host; the stranger is refused at every door."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import psycopg2
import pytest
import requests
import yaml
from mlflow.exceptions import MlflowException

from mnistcnn.search import studies, study_runs
from mnistcnn.team import access, tls
from mnistcnn.tracking import records
from tests.conftest import ROOT, git_commit, make_repo, server_folder, tool_env
from tests.helpers import SEARCH, as_admin, server_runs, with_search
from tests.hosts import Host, network

PORT, STUDY_PORT = 5001, 5003  # every host has ports of its own
# Trials of seconds (10 epochs of 16 steps, scored 4 times an epoch), none refused, none pruned:
# a worker killed at its trial's first scoring is killed mid-trial.
LONG = ["-S", "search.epochs=10", "-S", "search.max_params=100000", "-S", "search.pruner.kind=none"]


@dataclass(frozen=True)
class Team:
    host: Host  # the server's
    folder: Path
    url: str
    study_url: str  # with the study database's password; sslmode=verify-full

    @property
    def ca(self) -> Path:
        return self.folder / "tls/ca.crt"

    def storage(self) -> optuna.storages.RDBStorage:
        """The study storage, as a teammate with the CA opens it (call it on a host)."""
        return optuna.storages.RDBStorage(studies.storage_url(f"{self.study_url}&sslrootcert={self.ca}", None))


def server_command(folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "stages.tracking_server", *args, "--folder", str(folder)]


@pytest.fixture(scope="module")
def hosts():
    with network("server", "alice", "bob", "stranger") as made:
        yield made


@pytest.fixture(scope="module")
def team(hosts):
    """`make server SERVER_HOST=<the server host's address> ALLOWED_HOSTS=<it>:5001`, run on that host.
    This process reads the runs back as the admin, trusting the CA, from the hosts (`Host.call`)."""
    host, folder = hosts["server"], server_folder()
    started = host.run(server_command(folder, "start", "--host", host.address, "--port", str(PORT),
                                      "--study-port", str(STUDY_PORT), "--allowed-hosts", f"{host.address}:{PORT}"),
                       cwd=ROOT, env=tool_env()).stdout
    assert f"MLflow tracking server at https://{host.address}:{PORT}" in started, started
    made = Team(host, folder, f"https://{host.address}:{PORT}", (folder / "search_storage.url").read_text().strip())
    with pytest.MonkeyPatch.context() as patch:
        for name, value in access.credentials(folder, access.ADMIN).items():
            patch.setenv(name, value)
        patch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(made.ca))
        as_admin(made)
        yield made
    host.run(server_command(folder, "stop"), cwd=ROOT, env=tool_env(), check=False)


def teammate(tmp_path_factory, team: Team, host: Host) -> tuple[Path, dict]:
    """A clone on `host`, its data downloaded, logging to the team server as a user the admin added
    with the command a teammate is told to run, trusting the CA copied to that machine."""
    repo, env = make_repo(tmp_path_factory.mktemp(host.name), store=False)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(with_search(params), sort_keys=False))
    git_commit(repo, "a search section")
    added = team.host.run(server_command(team.folder, "add-user", host.name), cwd=ROOT, env=tool_env()).stdout
    told = dict(re.findall(r"(MLFLOW_TRACKING_\w+)=(\S+)", added))
    assert told["MLFLOW_TRACKING_URI"] == team.url and "PGSSLROOTCERT" in added, added
    ca = repo.parent / "team-ca.crt"
    shutil.copy(team.ca, ca)
    env = {**env, **told, "MLFLOW_TRACKING_SERVER_CERT_PATH": str(ca), "PGSSLROOTCERT": str(ca),
           "SEARCH_STORAGE": team.study_url}
    host.run(["dvc", "repro", "download"], cwd=repo, env=env)
    return repo, env


@pytest.fixture(scope="module")
def clones(tmp_path_factory, team, hosts):
    return {name: teammate(tmp_path_factory, team, hosts[name]) for name in ("alice", "bob")}


def worker(host: Host, clone: tuple[Path, dict], *args: str):
    repo, env = clone
    return host.popen([sys.executable, "-m", "stages.search", *args], cwd=repo, env=env)


def finished(process, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def trials_of(team: Team, study: str) -> list:
    """The study's trials (none while it is not created yet), read from the server's host."""
    def read():
        try:
            return optuna.load_study(study_name=study, storage=team.storage()).trials
        except KeyError:
            return []
    return team.host.call(read)


def test_both_servers_take_tls_only_on_the_network_with_the_servers_own_ca(team, hosts):
    alice = hosts["alice"]
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE(os.stat(team.folder / "tls" / name).st_mode) == 0o600
    assert hosts["server"].address in tls.names_of(team.folder / "tls/server.crt")

    def handshake(port: int) -> str:
        context = ssl.create_default_context(cafile=str(team.ca))
        with socket.create_connection((team.host.address, port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=team.host.address) as wrapped:
            return wrapped.version()
    assert alice.call(handshake, PORT).startswith("TLSv1.")
    assert alice.call(lambda: requests.get(f"{team.url}/health", verify=str(team.ca), timeout=5).text) == "OK"
    with pytest.raises(requests.ConnectionError):  # plain HTTP on the TLS port gets nothing back
        alice.call(requests.get, f"http://{team.host.address}:{PORT}/health", timeout=5)

    password = (team.folder / "study.password").read_text().strip()
    def database(**options):
        with psycopg2.connect(host=team.host.address, port=STUDY_PORT, user="optuna", password=password,
                              dbname="optuna", connect_timeout=5, **options) as connection:
            return connection.info.ssl_in_use
    assert alice.call(database, sslmode="verify-full", sslrootcert=str(team.ca)) is True
    with pytest.raises(psycopg2.OperationalError, match="takes TLS connections only"):
        alice.call(database, sslmode="disable")  # the password would have crossed in clear: refused first
    # MLflow is bound to the address it was given, not to the server host's loopback
    assert team.host.run(["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {PORT}), 3)"],
                         check=False).returncode != 0


def test_a_stranger_is_refused_at_every_door(team, hosts, clones):
    stranger = hosts["stranger"]
    api = f"{team.url}/api/2.0/mlflow"
    def status(method: str, endpoint: str, auth=None, **body) -> int:
        return requests.request(method, f"{api}/{endpoint}", auth=auth, json=body or None, verify=str(team.ca),
                                timeout=10).status_code
    assert stranger.call(status, "GET", "experiments/search?max_results=1") == 401
    assert stranger.call(status, "POST", "runs/create", experiment_id="0") == 401
    assert stranger.call(status, "GET", "experiments/search?max_results=1", auth=("alice", "guessed")) == 401
    assert stranger.call(status, "GET", "experiments/search?max_results=1", auth=("admin", "admin")) == 401
    # A page that DNS rebinding points at the server sends its own host name: refused, even with a login
    admin = tuple(access.credentials(team.folder, access.ADMIN).values())
    rebound = stranger.call(requests.get, f"{api}/experiments/search?max_results=1", auth=admin, timeout=10,
                            verify=str(team.ca), headers={"Host": "attacker.example"})
    assert rebound.status_code == 403 and "DNS rebinding" in rebound.text

    def database(user: str, secret: str | None) -> None:
        psycopg2.connect(host=team.host.address, port=STUDY_PORT, user=user, password=secret, dbname="optuna",
                         sslmode="verify-full", sslrootcert=str(team.ca), connect_timeout=5).close()
    for user, secret in (("optuna", None), ("optuna", "guessed"), ("postgres", None), ("postgres", "")):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            stranger.call(database, user, secret)

    # A teammate who has not set the CA is stopped before any work, in one line that says what to set.
    repo, env = clones["alice"]
    untrusting = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "PGSSLROOTCERT")}
    refused = hosts["alice"].run([sys.executable, "-m", "stages.download"], cwd=repo, env=untrusting, check=False)
    assert refused.returncode != 0 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "does not trust" in refused.stderr and "set MLFLOW_TRACKING_SERVER_CERT_PATH" in refused.stderr
    without_pg = {**untrusting, "MLFLOW_TRACKING_SERVER_CERT_PATH": env["MLFLOW_TRACKING_SERVER_CERT_PATH"]}
    refused = hosts["alice"].run([sys.executable, "-m", "stages.search", "--study", "untrusted", "--trials", "1"],
                                 cwd=repo, env=without_pg, check=False)
    assert refused.returncode != 0 and "set PGSSLROOTCERT" in refused.stderr.strip().splitlines()[-1], refused.stderr
    assert trials_of(team, "untrusted") == []


def test_a_teammates_pipeline_on_another_host_logs_a_complete_run(team, hosts, clones):
    repo, env = clones["alice"]
    hosts["alice"].run(["dvc", "repro"], cwd=repo, env=env)
    card = json.loads((repo / "models/model.json").read_text())
    runs = team.host.call(server_runs, team.url, "mnist-compact-cnn",
                          f"tags.`weights.sha256` = '{card['weights_sha256']}'")
    [run] = runs
    assert run["status"] == "FINISHED" and run["tags"]["mlflow.user"] == "alice"
    assert {"train/loss", "val/accuracy", "test/accuracy"} <= set(run["metrics"]) and run["params"]["model"] == "cnn9k"
    artifacts = team.host.call(lambda: [a.path for a in mlflow.MlflowClient(team.url).list_artifacts(run["id"])])
    assert artifacts and (team.folder / "artifacts").exists()  # uploaded through the server's proxy, over TLS


def test_two_workers_on_two_hosts_share_one_study_and_one_parent_run(team, hosts, clones):
    workers = [worker(hosts[name], clones[name], "--study", "team", "--trials", "3") for name in ("alice", "bob")]
    for process in workers:
        finished(process)
    trials = trials_of(team, "team")
    assert sorted(t.number for t in trials) == list(range(6))  # counts add up, no number twice
    by_worker = {}
    for trial in trials:
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial.number)
    assert sorted(len(numbers) for numbers in by_worker.values()) == [3, 3]

    def logged():
        client = mlflow.MlflowClient(team.url)
        experiment = client.get_experiment_by_name("mnist-compact-cnn-search").experiment_id
        [parent] = client.search_runs([experiment], "tags.`search.study` = 'team' AND tags.`search.role` = 'study'")
        children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        return sorted(int(r.data.tags["trial.number"]) for r in children)
    assert team.host.call(logged) == list(range(6))


def test_a_duplicate_parent_run_a_teammate_may_not_delete_is_taken_out_of_the_study(team, clones):
    """Two workers that each made a parent run keep the older; the other is deleted, or, where the
    teammate may not delete runs (EDIT on another's experiment), tagged out of the study."""
    _, bob_env = clones["bob"]

    def discard() -> None:
        admin = mlflow.MlflowClient(team.url)  # this process is the admin
        experiment_id = admin.create_experiment("made-by-another")
        mlflow.set_tracking_uri(team.url)  # where records writes
        with pytest.MonkeyPatch.context() as patch:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                patch.setenv(name, bob_env[name])
            teammate_client = mlflow.MlflowClient(team.url)
            made = teammate_client.create_run(experiment_id, tags={study_runs.STUDY_TAG: "raced",
                                                                   study_runs.ROLE_TAG: "study"}).info.run_id
            with pytest.raises(MlflowException, match="403"):  # what the worker hit
                teammate_client.delete_run(made)
            records.discard_run(made, study_runs.ROLE_TAG, "duplicate")
        run = admin.get_run(made)
        assert run.data.tags[study_runs.ROLE_TAG] == "duplicate" and run.info.lifecycle_stage == "active"
        own = admin.create_run(experiment_id).info.run_id
        records.discard_run(own, study_runs.ROLE_TAG, "duplicate")  # who may delete, deletes
        assert admin.get_run(own).info.lifecycle_stage == "deleted"

    previous = mlflow.get_tracking_uri()
    try:
        team.host.call(discard)
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_worker_host_killed_mid_trial_has_its_trial_failed_and_run_again_on_the_other(team, hosts, clones):
    doomed = worker(hosts["alice"], clones["alice"], *LONG, "--study", "killed", "--trials", "1")
    deadline = time.monotonic() + 120
    while not (victim := next((t for t in trials_of(team, "killed") if "val_curve" in t.user_attrs), None)):
        assert time.monotonic() < deadline and doomed.poll() is None, "no trial of the first worker training"
        time.sleep(0.2)
    assert victim.user_attrs["worker"].endswith(f":{doomed.pid}")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(30)
    # Its heartbeat is silent from now on: once the grace is over, the next worker to ask for a
    # trial fails it, and is handed it to run again.
    heartbeat = SEARCH["heartbeat"]
    time.sleep(heartbeat["interval"] * heartbeat["missed"])
    survivor = worker(hosts["bob"], clones["bob"], *LONG, "--study", "killed", "--trials", "1")
    output = finished(survivor)
    trials = {t.number: t for t in trials_of(team, "killed")}
    assert trials[victim.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].state.is_finished() and retried[0].params == victim.params
    assert retried[0].user_attrs["worker"].endswith(f":{survivor.pid}")
    assert len(trials) == 2 and f"trial {victim.number} failed: its worker stopped beating" in output
    assert all(t.state == optuna.trial.TrialState.COMPLETE for n, t in trials.items() if n != victim.number)

    def logged():
        client = mlflow.MlflowClient(team.url)
        experiment = client.get_experiment_by_name("mnist-compact-cnn-search").experiment_id
        return [(r.info.status, r.data.tags["trial.ended_by"]) for r in client.search_runs(
            [experiment], f"tags.`search.study` = 'killed' AND tags.`trial.number` = '{victim.number}'")]
    assert team.host.call(logged) == [("FAILED", "its worker stopped beating")]


def test_a_restart_on_the_network_keeps_the_ca_the_users_the_runs_and_the_studies(team, hosts, clones):
    """make server-stop ends MLflow, PostgreSQL's TLS front and PostgreSQL; make server again finds every
    run and trial, and signs with the same CA, so teammates keep the certificate they were given."""
    ca, key = team.ca.read_bytes(), (team.folder / "tls/ca.key").read_bytes()

    def one_trial() -> None:
        study = optuna.create_study(study_name="restart", storage=team.storage())
        study.tell(study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1)}), 0.5)
    team.host.call(one_trial)
    before = trials_of(team, "restart")
    runs = team.host.call(server_runs, team.url, "mnist-compact-cnn-data")  # the teammates' downloads
    stopped = team.host.run(server_command(team.folder, "stop"), cwd=ROOT, env=tool_env()).stdout
    assert "MLflow server" in stopped and "PostgreSQL's TLS front" in stopped and "PostgreSQL (" in stopped, stopped

    def closed(port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(3)
            return probe.connect_ex((team.host.address, port)) != 0
    assert hosts["alice"].call(closed, PORT) and hosts["alice"].call(closed, STUDY_PORT)
    team.host.run(server_command(team.folder, "start", "--host", team.host.address, "--port", str(PORT),
                                 "--study-port", str(STUDY_PORT), "--allowed-hosts", f"{team.host.address}:{PORT}"),
                  cwd=ROOT, env=tool_env())
    assert team.ca.read_bytes() == ca and (team.folder / "tls/ca.key").read_bytes() == key
    assert [(t.number, t.state, t.params, t.value) for t in trials_of(team, "restart")] == \
        [(t.number, t.state, t.params, t.value) for t in before] != []
    assert team.host.call(server_runs, team.url, "mnist-compact-cnn-data") == runs != []
    repo, env = clones["alice"]  # the teammate's own settings, the CA they were given, still work
    assert hosts["alice"].run([sys.executable, "-c", "from mnistcnn.tracking import store; print(store.connect())"],
                              cwd=repo, env=env).stdout.strip() == team.url
