"""The one door to MLflow: the stages open their runs here, and log through it what they did.

A run ends as it truly ended: FINISHED, FAILED, or KILLED (Ctrl-C, SIGTERM, or a
process found gone). Where runs are stored and how they are found is mnistcnn.tracking.store;
the names the stages use from it are re-exported here. Nothing waits on the network:
telemetry is off and model requirements are pinned rather than inferred.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow
import torch
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import infer_signature

from mnistcnn.model.arch import DECLARED
from mnistcnn.params.config import digest, flatten
from mnistcnn.tracking import owner, store
from mnistcnn.tracking.store import (  # noqa: F401 (re-exported: the stages call them through this door)
    CODE_ROOT, VIEW, WEIGHTS_TAG, connect, open_experiment, tracking_uri, training_run)

EXAMPLE_IMAGES = 4  # in a logged model's input example


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


@contextmanager
def run(experiment: str, stage: str, run_name: str | None = None, run_id: str | None = None) -> Iterator[str]:
    """Start (or, with `run_id`, resume) a run; it ends FINISHED, FAILED or KILLED as it truly ended.

    A resumed run (evaluate adding the test metrics, promote the served model) keeps the end time
    it had, so its start, end and duration stay those of its training: MLflow would set the end to
    the moment the resuming block ends (a run promoted 45 minutes later read 46 minutes long)."""
    uri = connect()
    with store.lock():
        store.end_orphans(stage)
        experiment_id = None if run_id else store.experiment_id(experiment)
        trained_until = mlflow.MlflowClient().get_run(run_id).info.end_time if run_id else None
        active = mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name)
    try:
        mlflow.set_tags({**({} if run_id else identity_tags(dict(os.environ))), **owner.tags(),
                         f"stage.{stage}": "ran"})
        yield active.info.run_id
    except BaseException as error:
        _end(active.info.run_id, _status(error), trained_until)
        raise
    _end(active.info.run_id, "FINISHED", trained_until)
    if store.is_server(uri):  # MLflow's own two links are off (stages/__init__.py)
        print(f"{stage}: run at {uri.rstrip('/')}/#/experiments/{active.info.experiment_id}/runs/"
              f"{active.info.run_id}", file=sys.stderr)


def _end(run_id: str, status: str, end_time: int | None) -> None:
    mlflow.end_run(status)
    if end_time is not None:  # a resumed run: back to the end it had
        mlflow.MlflowClient().set_terminated(run_id, status, end_time=end_time)


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
    the installed packages: it reads every installed distribution's metadata to warn of a mismatch
    they cannot have, once as the model is saved and again as the input example is validated by
    loading it back (1.1 s of a 5.8-s training on 2 cores). Each module that runs the check binds it
    by name, so each is patched; where MLflow moves the check elsewhere, it runs."""
    # the modules themselves: `mlflow.pyfunc` is a lazy proxy, and patching it would patch nothing
    modules = [module for module in map(importlib.import_module, ("mlflow.utils.environment", "mlflow.pyfunc"))
               if hasattr(module, "warn_dependency_requirement_mismatches")]
    checks = [module.warn_dependency_requirement_mismatches for module in modules]
    for module in modules:
        module.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        for module, check in zip(modules, checks):
            module.warn_dependency_requirement_mismatches = check


def log_model(model: torch.nn.Module, images: torch.Tensor) -> str:
    """Log `model` as an MLflow model (torch.export: loading it unpickles no code), a few of
    the normalised `images` as its input example; returns its URI."""
    example = images[:EXAMPLE_IMAGES].cpu()
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()  # the archive stores contiguous tensors
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
