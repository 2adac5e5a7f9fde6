"""A study in MLflow: one parent run per study, a child run per trial, the study's figures.

The parent is found by its study's name in the search experiment (`<experiment>-search`),
so every worker, on any machine that logs to the same tracking server, hangs its
trials under the same one; when two workers create it at once, both keep the older.
A trial's run is written when the trial ends, from what Optuna stored of it (its
values, curve, outcome), so a trial a dead worker left is logged by the worker that
fails it. The figures are redrawn from the whole study whenever a worker stops.
"""

from __future__ import annotations

import json
import os
import warnings

import matplotlib

matplotlib.use("Agg")  # files only: no display
import mlflow  # noqa: E402
import optuna  # noqa: E402
from matplotlib import pyplot  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from mnistcnn.params.config import flatten  # noqa: E402
from mnistcnn.tracking import runs  # noqa: E402

STUDY_TAG, ROLE_TAG = "search.study", "search.role"
STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
FIGURES = {  # artifact name -> its drawing function in optuna.visualization.matplotlib
    "optimization_history.png": "plot_optimization_history",
    "intermediate_values.png": "plot_intermediate_values",
    "param_importances.png": "plot_param_importances",
}


def experiment_name(experiment: str) -> str:
    return f"{experiment}-search"


def parent_run(experiment: str, study: str, storage: str) -> str:
    """The id of the study's parent run, created if the experiment holds none."""
    experiment_id = runs.open_experiment(experiment_name(experiment))  # first: a new store's tables, locked
    client = mlflow.MlflowClient()
    query = f"tags.`{STUDY_TAG}` = '{study}' AND tags.`{ROLE_TAG}` = 'study'"

    def oldest():
        runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"], max_results=2)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))[0].info.run_id if runs else None

    found = oldest()
    if found is not None:
        return found
    tags = {STUDY_TAG: study, ROLE_TAG: "study", "search.storage": storage, MLFLOW_RUN_NAME: study,
            **runs.identity_tags(dict(os.environ))}
    made = client.create_run(experiment_id, tags=tags, run_name=study).info.run_id
    client.set_terminated(made, "FINISHED")
    found = oldest()
    if found != made:  # another worker made one first: keep theirs
        discard(client, made)
    return found


def discard(client: mlflow.MlflowClient, run_id: str) -> None:
    """Delete a parent run that lost the race to another worker's. A teammate may not delete runs in
    an experiment another teammate made (EDIT allows no deleting: 403): there the run is taken out
    of the study instead, tagged as a duplicate, so no worker takes it for the parent."""
    try:
        client.delete_run(run_id)
    except MlflowException as error:
        if error.get_http_status_code() != 403:
            raise
        client.set_tag(run_id, ROLE_TAG, "duplicate")


def outcome(trial: optuna.trial.FrozenTrial) -> str:
    """complete, pruned, over budget or failed: Optuna's state, unless the trial recorded its own."""
    return trial.user_attrs.get("outcome") or STATES.get(trial.state, trial.state.name.lower())


def log_trial(experiment: str, parent: str, study: str, trial: optuna.trial.FrozenTrial, tags: dict) -> str:
    """One trial as a child run of `parent`: its train section, counts, curves, state and outcome."""
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent).info.experiment_id
    state = outcome(trial)
    start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
    run_tags = {MLFLOW_PARENT_RUN_ID: parent, STUDY_TAG: study, ROLE_TAG: "trial", "trial.number": trial.number,
                "trial.state": state, "trial.worker": trial.user_attrs.get("worker", "unknown"),
                **runs.identity_tags(dict(os.environ)), **tags,
                **{k: v for k, v in trial.user_attrs.items() if k.startswith(("arch.", "params.", "dataset."))}}
    if trial.user_attrs.get("error"):
        run_tags["trial.error"] = trial.user_attrs["error"][:5000]
    run = client.create_run(experiment_id, start_time=start, run_name=f"{study}-{trial.number}",
                            tags={k: str(v) for k, v in run_tags.items()})
    section = trial.user_attrs.get("train", {})
    values = {**section, "param_count": trial.user_attrs.get("param_count"), "macs": trial.user_attrs.get("macs")}
    params = [Param(k, json.dumps(v, separators=(",", ":")) if isinstance(v, list) else str(v))
              for k, v in flatten(values).items()]
    metrics = [Metric(f"val/{key}", row[key], start or 0, row["step"])
               for row in trial.user_attrs.get("val_curve", []) for key in ("accuracy", "loss")]
    metrics += [Metric(f"train/{key}", row[key], start or 0, row["step"])
                for row in trial.user_attrs.get("history", []) for key in ("loss", "accuracy")]
    metrics.append(Metric("trial/epochs_trained", trial.user_attrs.get("epochs_trained", 0.0), start or 0, 0))
    for i in range(0, len(params), 100):  # MLflow's limits on one batch
        client.log_batch(run.info.run_id, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
    end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
    client.set_terminated(run.info.run_id, "FAILED" if trial.state == TrialState.FAIL else "FINISHED", end_time=end)
    return run.info.run_id


def log_study(parent: str, study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> list[str]:
    """The study's figures and its best trial on the parent run; returns the figures drawn."""
    client = mlflow.MlflowClient()
    drawn = []
    quiet = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials" and the like: drawn when there are
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib figures are marked experimental
        from optuna.visualization import matplotlib as figures  # noqa: PLC0415

        for name, function in FIGURES.items():
            try:
                axes = getattr(figures, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # too few trials for this figure yet (importances need two complete ones)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            client.log_figure(parent, figure, f"figures/{name}")
            pyplot.close(figure)
            drawn.append(name)
    optuna.logging.set_verbosity(quiet)
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(outcome(t) == state for t in trials) for state in
              ("complete", "pruned", "over budget", "failed")}
    client.log_batch(parent, tags=[RunTag(f"trials.{k.replace(' ', '_')}", str(v)) for k, v in counts.items()])
    if best is not None:
        client.log_dict(parent, {"number": best.number, "val_accuracy": best.value, "params": best.params,
                                 "train": best.user_attrs.get("train")}, "best_trial.json")
        client.log_batch(parent, metrics=[Metric("best/val_accuracy", best.value, 0, len(trials))],
                         tags=[RunTag("best.trial", str(best.number)),
                               RunTag("best.params", json.dumps(best.params, separators=(",", ":")))])
    return drawn
