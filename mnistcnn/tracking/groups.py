"""Replicates in MLflow: each seed's test scores in the run that trained it, the group's summary run.

Every seed's run carries the group key (`replicates.group`), so the runs table groups
them (docs/experiments.md). The summary run holds what the table cannot: the mean, sd,
n and 95% interval of each metric, as `summary/<metric>_<statistic>`; it is found again
by its seeds' weights, so evaluating the same replicates twice writes it once. A group of
one seed gets none: its run is the group (train.replicates: 1 makes one run, as before).
"""

from __future__ import annotations

import os
from typing import Any

from mnistcnn.params.config import digest
from mnistcnn.params.schema import TrainParams
from mnistcnn.tracking import records, runs, store
from mnistcnn.training import replicates
from mnistcnn.training.record import Record

SEEDS_TAG = "replicates.weights"  # the summary run's: the digest of its seeds' weights


def score_seed(experiment: str, train: TrainParams, made: Record, card: dict, test: dict[str, float]) -> str:
    """A replicate's test metrics, added to the run that trained it (its end time kept); where this
    store holds no such run, a new one records the seed's params, validation and test metrics."""
    points = [(f"test/{key}", value, 0) for key, value in test.items()]
    run_id = runs.training_run(experiment, card["weights_sha256"])
    if run_id is not None:
        records.add_to_run(run_id, points=points)
        return run_id
    validation = [(f"val/{key[4:]}", card[key], 0) for key in ("val_accuracy", "val_loss") if key in card]
    tags = {runs.WEIGHTS_TAG: card["weights_sha256"], **made.tags(), replicates.ROLE_TAG: "seed",
            "run.adopted": "evaluate found no run that trained these weights in this store"}
    return records.write_run(store.open_experiment(experiment), runs.run_name(train), tags,
                             made.run_params(train), validation + points)


def write_summary(experiment: str, train: TrainParams, made: Record, summary: dict[str, Any],
                  weights: list[str]) -> str | None:
    """The group's summary run (found again by its seeds' weights, else written); returns its id. One
    seed has no spread to summarise: its own run is the group, and no summary run is written."""
    if summary["n"] == 1:
        return None
    experiment_id = store.open_experiment(experiment)
    tags = {replicates.GROUP_TAG: summary["group"], replicates.ROLE_TAG: "summary", SEEDS_TAG: digest(weights)}
    found = records.oldest_run(experiment_id, tags)
    if found is not None:
        return found
    points = [("summary/n", summary["n"], 0)]
    for metric in replicates.METRICS:
        for statistic, value in (summary.get(metric) or {}).items():
            if statistic != "n" and value is not None:
                points.append((f"summary/{metric}_{statistic}", value, 0))
    seeds = f"{train.seeds[0]}-{train.seeds[-1]}" if len(train.seeds) > 1 else f"{train.seed}"
    name = f"{runs.run_name(train).rsplit('-s', 1)[0]}-s{seeds} summary"
    params = {**made.run_params(train), "seeds": seeds}
    tags = {**tags, **{k: v for k, v in made.tags().items() if k != "params.digest"},
            **runs.identity_tags(dict(os.environ))}
    return records.write_run(experiment_id, name, tags, params, points)
