"""Where runs are stored, and how a stage finds its experiment and the runs it needs.

The default store is a SQLite database with artifacts beside it, under `mlruns/`
at the root of the repository DVC runs the stage for ($DVC_ROOT), else of this
checkout; $MLFLOW_TRACKING_URI overrides it, for example with a team's tracking
server (`make server`), which every stage checks answers before it does any work.

No DVC output names a run: a run id differs from one reproduction to the next.
The train stage tags its run with the SHA-256 of the weights it wrote, and the
run that made a model is found by that hash (`training_run`), in whichever store
holds it. mnistcnn.tracking.runs, the stages' one door to MLflow, opens runs here.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
from mlflow.exceptions import MlflowException

from mnistcnn.tracking import health, owner

# A new store's "Creating initial MLflow database tables..." is news to no one: the first run makes one.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

WEIGHTS_TAG = "weights.sha256"
# How the MLflow 3 UI shows the experiment: as model training, not GenAI (traces), and with a
# shared view (what the UI's Share button saves) whose runs table shows the columns people compare
# and lists the runs best validation accuracy first (the UI orders metric columns by name, so the
# order of the runs is where validation can lead); mnistcnn.team.ui.runs_table_url(..., view=VIEW) opens it.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
VIEW = "training"
EXPERIMENT_TAGS = {
    KIND_TAG: KIND,
    f"mlflow.sharedViewState.{VIEW}": json.dumps({"selectedColumns": [
        "metrics.`val/accuracy`", "metrics.`test/accuracy`", "metrics.`val/loss`", "metrics.`train/loss`",
        "params.`model`", "params.`param_count`", "params.`macs`", "params.`lr`", "params.`epochs`",
        "params.`seed`"], "orderByKey": "metrics.`val/accuracy`", "orderByAsc": False}),
}
CODE_ROOT = Path(__file__).resolve().parents[2]  # the checkout running: under `dvc exp --temp`, a copy


def store_root() -> Path:
    """The repository whose `mlruns/` holds the runs.

    `dvc exp run --temp` and queued experiments run in a copy under .dvc/tmp/exps that
    DVC deletes afterwards; DVC sets $DVC_ROOT to the repository the copy came from
    (and, for `dvc repro`, to the repository itself), so runs outlive the copy.
    """
    return Path(os.environ.get("DVC_ROOT") or CODE_ROOT)


def default_uri() -> str:
    return f"sqlite:///{store_root() / 'mlruns' / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def is_server(uri: str) -> bool:
    """Whether the store at `uri` is a tracking server (over HTTP), not a database of this checkout."""
    return uri.startswith(("http://", "https://"))


_connected: str | None = None  # the store this process last connected to


def connect() -> str:
    """Point MLflow at the store; a tracking server must answer first (within seconds, where
    MLflow's own client would retry for minutes). Returns the store's URI. A stage connects
    before any work, then again as each run opens: the server is asked once per store."""
    global _connected
    uri = tracking_uri()
    if uri == _connected:
        return uri
    if is_server(uri):
        problem = health.problem(uri)
        if problem is not None and (untrusted := health.untrusted(uri, problem)):
            raise health.ServerUnreachable(f"{untrusted}; nothing was written")
        if problem is not None:
            raise health.ServerUnreachable(
                f"cannot reach the MLflow tracking server at {uri} ({problem}); nothing was written. "
                "Start it (`make server`), or unset MLFLOW_TRACKING_URI to log to mlruns/ in this checkout")
        login = health.login_problem(uri)
        if login is not None:
            raise health.LoginRefused(f"{login}; nothing was written")
    mlflow.set_tracking_uri(uri)
    _connected = uri
    return uri


@contextmanager
def lock() -> Iterator[None]:
    """Let one process at a time open a SQLite store and create its experiment.

    MLflow builds a new database's tables, and creates experiments, without a lock: two
    stages starting together (`dvc queue start -j 2`) fail in its schema migration
    ("table _alembic_tmp_metrics already exists") or on the experiment name. Writes
    after that are safe together: MLflow waits up to 20 s on SQLite's own lock.
    """
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def experiment_id(name: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        for key, value in EXPERIMENT_TAGS.items():
            if experiment.tags.get(key) != value:  # made before these tags, or by hand
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    # In the default store, artifacts sit beside the database; elsewhere the store decides.
    # (Not decided by $MLFLOW_TRACKING_URI: mlflow.set_tracking_uri sets that variable.)
    default = mlflow.get_tracking_uri() == default_uri()
    artifacts = (store_root() / "mlruns" / "artifacts").as_uri() if default else None
    try:
        return mlflow.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_TAGS)
    except MlflowException as error:
        # A server's clients hold no common lock: a teammate's worker may have made it just now.
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.get_experiment_by_name(name).experiment_id


def open_experiment(name: str) -> str:
    """The experiment's id, created (tagged for the runs view) if the store lacks it."""
    connect()
    with lock():
        return experiment_id(name)


def active_experiment(store_uri: str, name: str) -> str | None:
    """The id of the active experiment `name` in the store at `store_uri`, None if it has none."""
    experiment = mlflow.MlflowClient(tracking_uri=store_uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment and experiment.lifecycle_stage == "active" else None


def training_run(experiment: str, weights_sha256: str) -> str | None:
    """The newest finished run of `experiment` that trained the weights with this SHA-256, or
    None where this store holds none (the model was pulled from a teammate's DVC remote)."""
    with lock():  # a new SQLite store builds its tables on first access
        found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = mlflow.MlflowClient().search_runs(
        [found.experiment_id], f"tags.`{WEIGHTS_TAG}` = '{weights_sha256}' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def end_orphans(stage: str) -> list[str]:
    """End as KILLED every RUNNING run in the store whose process on this host is gone; returns their ids."""
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000) if experiments else []
    ended = []
    for orphan in found:
        if owner.is_gone(orphan.data.tags):
            tags = orphan.data.tags
            client.set_tag(orphan.info.run_id, "run.ended_by",
                           f"process {tags[owner.PID]} on {tags[owner.HOST]} was gone (killed or lost) "
                           f"when the {stage} stage (process {os.getpid()}) opened the store")
            client.set_terminated(orphan.info.run_id, "KILLED")
            ended.append(orphan.info.run_id)
    return ended
