"""The MLflow Model Registry: the versions `make promote` creates and the alias it moves.

A version is identified by the SHA-256 of its weights (the tag `weights.sha256`),
so promoting the same model twice finds the version made the first time.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mnistcnn.tracking import WEIGHTS_TAG

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
