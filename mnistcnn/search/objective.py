"""A trial of the search: its values suggested, the train stage's training, its validation accuracy.

A trial is the train stage's training (mnistcnn.training.trainer) with the trial's values
set (mnistcnn.search.space), scaled to fit the parameter budget: same seeds, same held-out
images, same code, so the best trial's recipe reproduces its validation accuracy as a DVC
experiment bit for bit. A trial over the budget is never trained; Optuna is told by how much
(Trial.set_constraint). A trial reports its validation accuracy at each scoring
(search.scorings_per_epoch an epoch) for the pruner; one that completes among the best few
is raced at more seeds and returns their mean. The test images are never read.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

import optuna

from mnistcnn.params import config
from mnistcnn.params.config import ParamsError
from mnistcnn.params.schema import SearchParams
from mnistcnn.search import space
from mnistcnn.search.search import Space

WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial


def suggest(trial: optuna.Trial, named: dict[str, space.Leaf]) -> dict:
    """The trial's value of every parameter of the space."""
    values = {}
    for name, leaf in named.items():
        if isinstance(leaf, space.Choice):
            values[name] = trial.suggest_categorical(name, leaf.choices)
        elif leaf.integer:
            values[name] = trial.suggest_int(name, leaf.low, leaf.high, step=leaf.step or 1, log=leaf.log)
        else:
            values[name] = trial.suggest_float(name, leaf.low, leaf.high, step=leaf.step, log=leaf.log)
    return values


@dataclass(frozen=True)
class Data:
    """The training images to fit, and the held-out ones to score on: never the test images."""

    images: object  # (N, 1, 28, 28) float, on the device
    labels: object  # (N,) int64
    validation: tuple  # (images, labels) held out
    dataset_digest: str  # the download's digest of the files they came from

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.labels), len(self.validation[1])


def propose(trial: optuna.Trial, trials: Space, search: SearchParams, dataset_digest: str):
    """The trial's train section and its record: its values suggested, scaled to fit the budget
    where search.fit says so, counted. Its overshoot (parameters over search.max_params) goes to
    Optuna as the trial's constraint, feasible at 0 or below, so the sampler learns the budget;
    a trial still over it is pruned untrained."""
    from mnistcnn.training import record  # noqa: PLC0415 (torch: seconds to import)

    trial.set_user_attr("worker", WORKER)
    section = trials.section(suggest(trial, trials.named))
    trial.set_user_attr("train", section)
    try:
        config.parse_train(section)  # a combination that cannot be built fails the trial here
        fitted = trials.fit(section, search.max_params) if search.fit else None
        if fitted is not None and fitted != section:
            trial.set_user_attr("fitted", fitted_from(section, fitted))
            section = fitted
            trial.set_user_attr("train", section)
        train = config.parse_train(section)
    except ParamsError as err:
        trial.set_user_attr("error", str(err))
        raise
    made = record.record(train, dataset_digest)
    for key, value in {"param_count": made.params, "macs": made.macs, **made.tags()}.items():
        trial.set_user_attr(key, value)
    trial.set_constraint("params_over_budget", made.params - search.max_params)
    if made.params > search.max_params:
        trial.set_user_attr("outcome", "over budget")
        raise optuna.TrialPruned(f"{made.params:,} parameters, over search.max_params = {search.max_params:,}")
    return train, made


def fitted_from(section: dict, fitted: dict) -> str:
    """`12-24-40-24 -> 8-20-32-20`: the channels drawn, and those trained."""
    def widths(train: dict) -> str:
        return "-".join(str(block["channels"]) for block in train["arch"]["blocks"])

    return f"{widths(section)} -> {widths(fitted)}"


def survives(trial: optuna.Trial, accuracy: float, survivors: int) -> bool:
    """Whether a trial's first seed ranks among the `survivors` best first seeds of the study's
    complete trials (on a tie, both go on): only those are trained at more seeds."""
    complete = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    firsts = [t.user_attrs["seed_accuracies"][0][1] for t in complete if t.user_attrs.get("seed_accuracies")]
    return sum(first > accuracy for first in firsts) < survivors


def objective(trials: Space, search: SearchParams, data: Data, device) -> Callable[[optuna.Trial], float]:
    """Optuna's objective: a trial's values in, the train stage's training, its validation accuracy at
    its final step out, reported at every scoring and stopped when the pruner says so; a survivor of
    the race (search.race) is trained at its other seeds, and its value is the mean over them."""
    from mnistcnn.training import replicates, trainer  # noqa: PLC0415 (torch: seconds to import)

    def fit_seed(train, on_score) -> list[dict]:
        return trainer.train_model(train, data.images, data.labels, device, lambda row, seconds: None,
                                   data.validation, on_score)[1]

    def run(trial: optuna.Trial) -> float:
        train, _ = propose(trial, trials, search, data.dataset_digest)
        curve = []

        def on_score(row: dict) -> None:
            curve.append(row)
            trial.set_user_attr("val_curve", curve)
            trial.set_user_attr("epochs_trained", row["epoch"])
            trial.report(row["accuracy"], len(curve))
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {row['accuracy']:.4f} at scoring {len(curve)}")

        trial.set_user_attr("history", fit_seed(train, on_score))
        trial.set_user_attr("val_loss", curve[-1]["loss"])
        seeds = [[train.seed, curve[-1]["accuracy"]]]  # at the final step: never the best step
        if search.race.seeds > 1 and survives(trial, seeds[0][1], search.race.survivors):
            for seed in range(train.seed + 1, train.seed + search.race.seeds):
                scores = []
                fit_seed(train.model_copy(update={"seed": seed}), scores.append)
                seeds.append([seed, scores[-1]["accuracy"]])
                trial.set_user_attr("seed_accuracies", seeds)  # as it goes: a stopped race shows how far it got
        trial.set_user_attr("seed_accuracies", seeds)
        return replicates.summarize([accuracy for _, accuracy in seeds]).mean  # the evaluate stage's mean

    return run
