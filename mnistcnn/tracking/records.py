"""Runs written whole, after the fact: the search's study run and its trials' runs.

A trial's run is written when the trial ends, from what Optuna stored of it, by whichever
worker ends it, so its start and end are the trial's own, not the moment it is written.
They are written here, so that every run the project makes goes through this door.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from mnistcnn.params.config import flatten

Point = tuple[str, float, int]  # a metric's (key, value, step)


def oldest_run(experiment_id: str, tags: dict[str, str]) -> str | None:
    """The earliest-started run of the experiment with all these tags (the lowest id on a tie), or None."""
    query = " AND ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    found = mlflow.MlflowClient().search_runs([experiment_id], query, order_by=["attributes.start_time ASC"],
                                               max_results=2)
    return sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))[0].info.run_id if found else None


def write_run(experiment_id: str, name: str, tags: dict[str, Any], params: dict[str, Any] | None = None,
              points: list[Point] = (), start: int | None = None, end: int | None = None,
              status: str = "FINISHED", parent: str | None = None) -> str:
    """A run, ended with `status`: its tags, its params flattened to dotted keys (a list as compact
    JSON), its metrics, started and ended at these times (ms since the epoch); returns its id."""
    client = mlflow.MlflowClient()
    tags = {MLFLOW_RUN_NAME: name, **({MLFLOW_PARENT_RUN_ID: parent} if parent else {}), **tags}
    run_id = client.create_run(experiment_id, start_time=start, run_name=name,
                               tags={k: str(v) for k, v in tags.items()}).info.run_id
    logged = [Param(k, json.dumps(v, separators=(",", ":")) if isinstance(v, list) else str(v))
              for k, v in flatten(params or {}).items()]
    metrics = [Metric(key, value, start or 0, step) for key, value, step in points]
    for i in range(0, len(logged), 100):  # MLflow's limits on one batch
        client.log_batch(run_id, params=logged[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    client.set_terminated(run_id, status, end_time=end)
    return run_id


def discard_run(run_id: str, tag: str, value: str) -> None:
    """Delete a run; where this login may not (a teammate's experiment: MLflow answers 403), tag it
    `tag = value` instead, so that no reader takes it for what it was meant to be."""
    client = mlflow.MlflowClient()
    try:
        client.delete_run(run_id)
    except MlflowException as error:
        if error.get_http_status_code() != 403:
            raise
        client.set_tag(run_id, tag, value)


def experiment_of(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.experiment_id


def add_to_run(run_id: str, tags: dict[str, Any] | None = None, points: list[Point] = (),
               documents: dict[str, Any] | None = None, figures: dict[str, Any] | None = None) -> None:
    """Tags, metrics, JSON documents and figures (artifact path -> content) added to an ended run."""
    client = mlflow.MlflowClient()
    for path, figure in (figures or {}).items():
        client.log_figure(run_id, figure, path)
    for path, document in (documents or {}).items():
        client.log_dict(run_id, document, path)
    client.log_batch(run_id, metrics=[Metric(key, value, 0, step) for key, value, step in points],
                     tags=[RunTag(key, str(value)) for key, value in (tags or {}).items()])
