"""The one door to MLflow: where runs are stored, how they end, what they record.

The default store is a SQLite database with artifacts beside it, under `mlruns/`
at the root of the repository DVC runs the stage for ($DVC_ROOT), else of this
checkout; $MLFLOW_TRACKING_URI overrides it, for example with a team's tracking
server (`make server`), which every stage checks answers before it does any work.
Nothing else here waits on the network: telemetry is off and model requirements
are pinned rather than inferred.

No DVC output names a run: a run id differs from one reproduction to the next.
The train stage tags its run with the SHA-256 of the weights it wrote, and the
run that made a model is found by that hash, in whichever store holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is imported
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a stage's log is for its own progress

import mlflow  # noqa: E402
import torch  # noqa: E402
from mlflow.data.dataset_source_registry import resolve_dataset_source  # noqa: E402
from mlflow.data.meta_dataset import MetaDataset  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.utils import environment as mlflow_environment  # noqa: E402

from mnistcnn import health, owner  # noqa: E402
from mnistcnn.arch import DECLARED  # noqa: E402
from mnistcnn.config import digest, flatten  # noqa: E402

WEIGHTS_TAG = "weights.sha256"
EXAMPLE_IMAGES = 4  # in a logged model's input example
# How the MLflow 3 UI shows the experiment: as model training, not GenAI (traces), and with a
# shared view (what the UI's Share button saves) whose runs table shows the columns people compare
# and lists the runs best validation accuracy first (the UI orders metric columns by name, so the
# order of the runs is where validation can lead); mnistcnn.ui.runs_table_url(..., view=VIEW) opens it.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
VIEW = "training"
EXPERIMENT_TAGS = {
    KIND_TAG: KIND,
    f"mlflow.sharedViewState.{VIEW}": json.dumps({"selectedColumns": [
        "metrics.`val/accuracy`", "metrics.`test/accuracy`", "metrics.`val/loss`", "metrics.`train/loss`",
        "params.`model`", "params.`param_count`", "params.`macs`", "params.`lr`", "params.`epochs`",
        "params.`seed`"], "orderByKey": "metrics.`val/accuracy`", "orderByAsc": False}),
}
CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout running: under `dvc exp --temp`, a copy


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


_connected: str | None = None  # the store this process last connected to


def connect() -> str:
    """Point MLflow at the store; a tracking server must answer first (within seconds, where
    MLflow's own client would retry for minutes). Returns the store's URI. A stage connects
    before any work, then again as each run opens: the server is asked once per store."""
    global _connected
    uri = tracking_uri()
    if uri == _connected:
        return uri
    if uri.startswith(("http://", "https://")):
        problem = health.problem(uri)
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
def _store_lock() -> Iterator[None]:
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


def _experiment_id(name: str) -> str:
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
    with _store_lock():
        return _experiment_id(name)


def training_run(experiment: str, weights_sha256: str) -> str | None:
    """The newest finished run of `experiment` that trained the weights with this SHA-256, or
    None where this store holds none (the model was pulled from a teammate's DVC remote)."""
    with _store_lock():  # a new SQLite store builds its tables on first access
        found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = mlflow.MlflowClient().search_runs(
        [found.experiment_id], f"tags.`{WEIGHTS_TAG}` = '{weights_sha256}' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _git(*args: str, root: Path = CODE_ROOT) -> str | None:
    """git's answer, or None when git could not answer (no git, no repository)."""
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def identity_tags(env: dict[str, str], root: Path = CODE_ROOT) -> dict[str, str]:
    """What a run was made from: the commit, whether tracked files differed, the DVC experiment.

    Under `dvc exp run`, DVC names the experiment and its baseline commit in the environment;
    the tree differs from the baseline by the experiment's changes, so `git.dirty` is true.
    Where git cannot be asked, both say `unknown`.
    """
    status = _git("status", "--porcelain", "--untracked-files=no", root=root)
    tags = {
        "git.commit": env.get("DVC_EXP_BASELINE_REV") or _git("rev-parse", "HEAD", root=root) or "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),  # never a guess
    }
    if env.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = env["DVC_EXP_NAME"]
    return tags


def _status(error: BaseException) -> str:
    """How a run ends when its block raised `error`."""
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C, or SIGTERM through mnistcnn.cli
        return "KILLED"
    if isinstance(error, SystemExit) and error.code in (None, 0):
        return "FINISHED"
    return "FAILED"


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


@contextmanager
def run(experiment: str, stage: str, run_name: str | None = None, run_id: str | None = None) -> Iterator[str]:
    """Start (or, with `run_id`, resume) a run; it ends FINISHED, FAILED or KILLED as it truly ended."""
    connect()
    with _store_lock():
        end_orphans(stage)
        experiment_id = None if run_id else _experiment_id(experiment)
        active = mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name)
    try:
        mlflow.set_tags({**({} if run_id else identity_tags(dict(os.environ))), **owner.tags(),
                         f"stage.{stage}": "ran"})
        yield active.info.run_id
    except BaseException as error:
        mlflow.end_run(_status(error))
        raise
    mlflow.end_run("FINISHED")


def log_params(params: dict[str, Any]) -> None:
    """Nested keys as dotted names; a list (train.arch.blocks) as compact JSON."""
    flat = flatten(params)
    flat = {k: json.dumps(v, separators=(",", ":")) if isinstance(v, list) else v for k, v in flat.items()}
    mlflow.log_params({k: "null" if v is None else v for k, v in flat.items()})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    mlflow.log_metrics(metrics, step=step)


def set_tags(tags: dict[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_provenance(provenance: dict[str, Any], origins: dict[str, str]) -> None:
    """The download stage's record: what each file contained and where it came from."""
    mlflow.log_dict({**provenance, "origins": origins}, "dataset/provenance.json")
    set_tags({"dataset.digest": provenance["digest"], "dataset.sources": ", ".join(sorted(set(origins.values())))})
    log_metrics({"dataset/train_samples": provenance["train_samples"], "dataset/test_samples": provenance["test_samples"]})


def log_dataset_input(provenance: dict[str, Any], dataset_path: Path, context: str) -> None:
    """Link the dataset to the active run as an MLflow input, identified by its content digest."""
    with warnings.catch_warnings():  # a local file matches several source types; any will do
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(dataset_path).resolve()))
    dataset = MetaDataset(source=source, name="mnist", digest=provenance["digest"][:16])
    mlflow.log_input(dataset, context=context, tags={"train_samples": str(provenance["train_samples"])})
    mlflow.log_dict(provenance, "dataset/provenance.json")


def run_name(train) -> str:
    """A training run's name: what a person scanning the runs table tells runs apart by."""
    name = f"{train.model}-{digest(train.arch)[:6]}" if train.model == DECLARED else train.model
    return f"{name}-e{train.epochs}-s{train.seed}"


def pinned_requirements() -> list[str]:
    """A logged model's pip requirements: the torch and mlflow versions running now."""
    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]


@contextmanager
def requirements_unchecked() -> Iterator[None]:
    """While logging a model that names pinned_requirements(), skip MLflow's check of them against
    the installed packages: it reads every installed distribution's metadata (0.3 s a model on 2
    cores) to warn of a mismatch they cannot have. Where MLflow moves the check, it runs."""
    check = getattr(mlflow_environment, "warn_dependency_requirement_mismatches", None)
    if check is None:
        yield
        return
    mlflow_environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        mlflow_environment.warn_dependency_requirement_mismatches = check


def log_model(model: torch.nn.Module, images: torch.Tensor) -> str:
    """Log `model` as an MLflow model (torch.export: loading it unpickles no code), a few of
    the normalised `images` as its input example; returns its URI."""
    example = images[:EXAMPLE_IMAGES].cpu()
    model = model.cpu().eval()
    with torch.no_grad():
        output = model(example).numpy()
    with requirements_unchecked():
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=infer_signature(example.numpy(), output),
            input_example=example.numpy(),
            pip_requirements=pinned_requirements(),
            serialization_format="pt2",
        )
    return info.model_uri


def log_figure(figure, path: str) -> None:
    mlflow.log_figure(figure, path)
