"""The MLflow Model Registry: the versions `make promote` creates and the alias it moves.

A version is identified by the SHA-256 of its weights (the tag `weights.sha256`),
so promoting the same model twice finds the version made the first time.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

import mlflow
import requests
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mnistcnn.tracking.runs import WEIGHTS_TAG
from mnistcnn.tracking.store import is_server

DESCRIPTION = "Compact CNNs for MNIST digits: each version passed the merge gate (make promote)."


def version_of(name: str, weights_sha256: str) -> ModelVersion | None:
    """The version of `name` registered for these weights, if any."""
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    versions = client.search_model_versions(f"name = '{name}'", max_results=1000)
    return next((v for v in versions if v.tags.get(WEIGHTS_TAG) == weights_sha256), None)


def register(name: str, model_uri: str, run_id: str, tags: dict[str, Any], description: str) -> ModelVersion:
    """A new version of `name` (created if missing) for the model at `model_uri`."""
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name, description=DESCRIPTION)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # A logged model's URI is models:/<model id>; a tracking server wants that id named too.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    return client.create_model_version(name, model_uri, run_id=run_id, description=description,
                                       tags={k: str(v) for k, v in tags.items()}, model_id=model_id)


def alias_version(name: str, alias: str) -> str | None:
    """The version `alias` points at, or None."""
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def move_alias(name: str, alias: str, version: str) -> None:
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of models:/NAME@ALIAS or models:/NAME/VERSION; ValueError otherwise."""
    rest = uri.removeprefix("models:/")
    name, at, alias = rest.partition("@")
    if rest != uri and at and name and alias:
        return name, alias, None
    name, slash, version = rest.partition("/")
    if rest != uri and slash and name and version.isdigit():
        return name, None, version
    raise ValueError(f"{uri!r} names no registry version: give models:/NAME@ALIAS or models:/NAME/VERSION")


def fetch(uri: str, files: list[str], folder: Path) -> tuple[ModelVersion, dict[str, Path]]:
    """The version `uri` names, and only these artifacts of its model (the served model's
    `artifacts/<file>`), downloaded into `folder`: none of its code."""
    name, alias, number = parse_uri(uri)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    source = version.source
    model_id = version.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)
    location = client.get_logged_model(model_id).artifact_location if model_id else source
    return version, {file: Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location.rstrip('/')}/artifacts/{file}", dst_path=str(folder))) for file in files}


def registration_refused(tracking_uri: str, name: str) -> str | None:
    """Why this login may not register versions of `name` or move its aliases on the tracking
    server at `tracking_uri`, asked before anything is written; None when it may (or the store has
    no users). The team server grants it to its admin and to whoever holds EDIT or MANAGE on the
    model, its promoter (mnistcnn/team/access.py); everyone else reads it only."""
    if not is_server(tracking_uri):
        return None
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    answer = requests.get(f"{tracking_uri.rstrip('/')}/api/3.0/mlflow/users/current/permissions", timeout=30,
                          auth=(user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None)
    if answer.status_code == 404:
        return None  # a server without MLflow's authentication app: everyone may
    answer.raise_for_status()
    found = answer.json()
    if found.get("is_admin") or any(
            grant["resource_type"] == "registered_model" and fnmatch.fnmatchcase(name, grant["resource_pattern"])
            and grant["permission"] in ("EDIT", "MANAGE") for grant in found.get("permissions", [])):
        return None
    return (f"MLFLOW_TRACKING_USERNAME={user} may read {name} on {tracking_uri} but not register versions or "
            "move its aliases: only the promoter may (`make promote` logs in as it with the password in the "
            "server's promoter.password)")
