"""Runs read back as plain records: every run of an experiment, for a reader that pools them.

A record is the run's id, name, status and start, its tags, params and latest metrics
(the value at the highest step: a training's final validation accuracy), and the whole
history, by step, of the metrics asked for (a trial's `seeds/val_accuracy`, a point a
seed). The frontier (stages/frontier.py) reads the pipeline's and the search's runs so.
"""

from __future__ import annotations

from typing import Any

import mlflow

from mnistcnn.tracking import store

PAGE = 1000  # runs a search_runs call returns at most


def _record(client: mlflow.MlflowClient, run, histories: tuple[str, ...]) -> dict[str, Any]:
    by_step = {}
    for key in histories:
        if key in run.data.metrics:  # the latest logged at a step wins, as in MLflow's own latest value
            points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.timestamp, m.step))
            by_step[key] = {point.step: point.value for point in points}
    return {"id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "start": run.info.start_time, "tags": dict(run.data.tags), "params": dict(run.data.params),
            "metrics": dict(run.data.metrics), "histories": by_step}


def experiment_runs(name: str, histories: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every active run of the experiment `name`, oldest first (none where the store lacks it)."""
    store.connect()
    with store.lock():  # a new SQLite store builds its tables on first access
        experiment = mlflow.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        return []
    client, found, token = mlflow.MlflowClient(), [], None
    while True:
        page = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"],
                                  max_results=PAGE, page_token=token)
        found += page
        token = page.token
        if not token:
            break
    found.sort(key=lambda run: (run.info.start_time or 0, run.info.run_id))
    return [_record(client, run, histories) for run in found]
