"""A trial of the search: its values suggested, the train stage's training, its validation accuracy.

A trial is the train stage's training (mnistcnn.training.trainer) with the trial's values
set (mnistcnn.search.space): same seed, same held-out images, same code, so the best
trial's recipe reproduces its validation accuracy as a DVC experiment bit for bit. A
trial reports its validation accuracy at each scoring (search.scorings_per_epoch an
epoch) for the pruner, and returns the one at its final step. The test images are never read.
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


def objective(trials: Space, search: SearchParams, data: Data, device) -> Callable[[optuna.Trial], float]:
    """Optuna's objective: a trial's values in, the train stage's training, the validation accuracy
    at its final step out; reported at every scoring, stopped when the pruner says so."""
    from mnistcnn.training import record, trainer  # noqa: PLC0415 (torch: seconds to import)

    def run(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", WORKER)
        section = trials.section(suggest(trial, trials.named))
        trial.set_user_attr("train", section)
        try:
            train = config.parse_train(section)  # a combination that cannot be built fails the trial here
        except ParamsError as err:
            trial.set_user_attr("error", str(err))
            raise
        made = record.record(train, data.dataset_digest)
        for key, value in {"param_count": made.params, "macs": made.macs, **made.tags()}.items():
            trial.set_user_attr(key, value)
        if made.params > search.max_params:
            trial.set_user_attr("outcome", "over budget")
            raise optuna.TrialPruned(f"{made.params:,} parameters, over search.max_params = {search.max_params:,}")
        curve = []

        def on_score(row: dict) -> None:
            curve.append(row)
            trial.set_user_attr("val_curve", curve)
            trial.set_user_attr("epochs_trained", row["epoch"])
            trial.report(row["accuracy"], len(curve))
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {row['accuracy']:.4f} at scoring {len(curve)}")

        _, history = trainer.train_model(train, data.images, data.labels, device, lambda row, seconds: None,
                                         data.validation, on_score)
        trial.set_user_attr("history", history)
        trial.set_user_attr("val_loss", curve[-1]["loss"])
        return curve[-1]["accuracy"]  # at the final step: never the best step

    return run
