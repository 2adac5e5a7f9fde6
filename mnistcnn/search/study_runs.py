"""A study in MLflow: one parent run per study, a child run per trial, the study's figures.

The parent is found by its study's name in the search experiment (`<experiment>-search`),
so every worker, on any machine that logs to the same tracking server, hangs its
trials under the same one; when two workers create it at once, both keep the older.
A trial's run is written when the trial ends, from what Optuna stored of it (its
values, curve, outcome), so a trial a dead worker left is logged by the worker that
fails it. The figures are redrawn from the whole study whenever a worker stops. The
runs are written through the tracking door (mnistcnn.tracking.records).
"""

from __future__ import annotations

import json
import os
import warnings

import optuna
from optuna.trial import TrialState

from mnistcnn.tracking import records, runs

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
    role = {STUDY_TAG: study, ROLE_TAG: "study"}
    found = records.oldest_run(experiment_id, role)
    if found is not None:
        return found
    made = records.write_run(experiment_id, study, {**role, "search.storage": storage,
                                                    **runs.identity_tags(dict(os.environ))})
    found = records.oldest_run(experiment_id, role)
    if found != made:  # another worker made one first: keep theirs (or, where ours cannot be deleted,
        records.discard_run(made, ROLE_TAG, "duplicate")  # mark ours a duplicate no worker takes for it)
    return found


def outcome(trial: optuna.trial.FrozenTrial) -> str:
    """complete, pruned, over budget or failed: Optuna's state, unless the trial recorded its own."""
    return trial.user_attrs.get("outcome") or STATES.get(trial.state, trial.state.name.lower())


def log_trial(experiment: str, parent: str, study: str, trial: optuna.trial.FrozenTrial, tags: dict) -> str:
    """One trial as a child run of `parent`: its train section, counts, curves, state and outcome."""
    attrs, state = trial.user_attrs, outcome(trial)
    start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
    end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
    run_tags = {STUDY_TAG: study, ROLE_TAG: "trial", "trial.number": trial.number, "trial.state": state,
                "trial.worker": attrs.get("worker", "unknown"), **runs.identity_tags(dict(os.environ)), **tags,
                **{k: v for k, v in attrs.items() if k.startswith(("arch.", "params.", "dataset.", "replicates."))}}
    seeds = attrs.get("seed_accuracies") or []
    if seeds:
        run_tags["trial.seeds"] = len(seeds)
    if attrs.get("fitted"):
        run_tags["trial.fitted"] = attrs["fitted"]  # the channels drawn -> those trained, to fit the budget
    if attrs.get("error"):
        run_tags["trial.error"] = attrs["error"][:5000]
    params = {**attrs.get("train", {}), "param_count": attrs.get("param_count"), "macs": attrs.get("macs")}
    points = [(f"val/{key}", row[key], row["step"]) for row in attrs.get("val_curve", []) for key in ("accuracy", "loss")]
    points += [(f"train/{key}", row[key], row["step"]) for row in attrs.get("history", []) for key in ("loss", "accuracy")]
    points.append(("trial/epochs_trained", attrs.get("epochs_trained", 0.0), 0))
    points += [("seeds/val_accuracy", accuracy, seed) for seed, accuracy in seeds]  # the race's, step = seed
    if trial.value is not None:
        points.append(("trial/value", trial.value, 0))  # what the winner is chosen on: the mean over its seeds
    return records.write_run(records.experiment_of(parent), f"{study}-{trial.number}", run_tags, params, points,
                             start, end, "FAILED" if trial.state == TrialState.FAIL else "FINISHED", parent=parent)


def log_study(parent: str, study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> list[str]:
    """The study's figures and its best trial on the parent run; returns the figures drawn."""
    import matplotlib  # noqa: PLC0415 (only a worker that stops draws)

    matplotlib.use("Agg")  # files only: no display
    from matplotlib import pyplot  # noqa: PLC0415

    drawn = {}
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
            drawn[f"figures/{name}"] = figure
    optuna.logging.set_verbosity(quiet)
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(outcome(t) == state for t in trials) for state in
              ("complete", "pruned", "over budget", "failed")}
    tags = {f"trials.{k.replace(' ', '_')}": v for k, v in counts.items()}
    documents, points = {}, []
    if best is not None:
        documents["best_trial.json"] = {"number": best.number, "val_accuracy": best.value, "params": best.params,
                                        "train": best.user_attrs.get("train")}
        points.append(("best/val_accuracy", best.value, len(trials)))
        tags.update({"best.trial": best.number, "best.params": json.dumps(best.params, separators=(",", ":"))})
    records.add_to_run(parent, tags, points, documents, drawn)
    for figure in drawn.values():
        pyplot.close(figure)
    return [path.removeprefix("figures/") for path in drawn]
