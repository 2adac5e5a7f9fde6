"""The search: an Optuna study over params.yaml's search space, every trial a training run.

A trial is the train stage's training with the trial's values set (mnistcnn.search.space):
same seed, same held-out images, same code, so the best trial's recipe reproduces its
validation accuracy as a DVC experiment bit for bit. A trial reports its validation
accuracy at each scoring (search.scorings_per_epoch an epoch) for the pruner, and
returns the one at its final step. The test images are never read.

The study lives in a storage (mnistcnn.search.studies) every worker joins; it holds the
digest of its search and train sections, so a second run of it with another space is
refused rather than mixed in.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from mnistcnn.model import arch
from mnistcnn.params import config
from mnistcnn.params.config import ParamsError
from mnistcnn.params.schema import Params, PrunerParams, SearchParams
from mnistcnn.search import space
from mnistcnn.search.studies import SearchError

SPACE_TAG = "space_digest"  # the study's user attribute: the search section it was made with
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial
optuna.logging.set_verbosity(logging.WARNING)  # a line a trial is the search's own (stages/search.py)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def pruner(params: PrunerParams) -> optuna.pruners.BasePruner:
    """The pruner search.pruner names; its steps are a trial's scorings, 1, 2, ..."""
    if params.kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=params.min_scorings,
                                                      reduction_factor=params.reduction)
    if params.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=params.startup_trials,
                                           n_warmup_steps=params.min_scorings - 1)
    return optuna.pruners.NopPruner()


def open_study(name: str, storage: RDBStorage, search: SearchParams, base: dict) -> optuna.Study:
    """The study, created or joined; seeded TPE (the seed offset by the trials already there, so
    two workers draw different trials). Refused when it was made with another search section or
    from another starting train section (`base`): its trials would not be comparable."""
    digest = config.digest({"search": search.model_dump(exclude={"trials", "study", "heartbeat"}), "base": base})
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                pruner=pruner(search.pruner))
    made_with = study.user_attrs.get(SPACE_TAG)
    if made_with is None:
        study.set_user_attr(SPACE_TAG, digest)
    elif made_with != digest:
        raise SearchError(f"study {name!r} was made with another search section or train section (digest "
                          f"{made_with[:12]}, this one's {digest[:12]}): name a new one with --study")
    seed = search.seed + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    return study


def base_train(params: Params, params_path: Path) -> dict:
    """The train section trials start from: params.yaml's (overrides applied), or search.base's
    recipe over it; the architecture it selects declared under `arch`, the epoch budget and scorings set."""
    from mnistcnn.params import recipes  # noqa: PLC0415

    search, train = params.search, config.as_dict(params.train)
    if search.base:
        train = config.merge(train, recipes.load(search.base, params_path))
    declared = config.parse_train(train).architecture.model_dump()
    validation = {**train["validation"], "per_epoch": search.scorings_per_epoch}
    return {**train, "model": arch.DECLARED, "arch": declared, "epochs": search.epochs, "validation": validation}


@dataclass(frozen=True)
class Space:
    """The trials' parameters by name, and the section they are set in."""

    base: dict
    named: dict[str, space.Leaf]

    def section(self, values: dict) -> dict:
        return space.apply(self.base, values)


def check(params: Params, params_path: Path) -> Space:
    """The space over its starting train section, checked before any trial: every end and choice
    must be a value the schema allows there, and some architecture in it must fit the budget."""
    search, base = params.search, base_train(params, params_path)
    named = space.names(search.space, arch.Arch.model_validate(base["arch"]))
    for name, leaf in named.items():
        for value in leaf.corners():
            try:
                config.parse_train(space.apply(base, {name: value}))
            except ParamsError as err:
                key = name.split("[")[0] + name.split("]")[-1] if "[" in name else name
                raise ParamsError(f"search.space.{key}: {value!r} is not allowed: {err}") from None
    smallest = None
    for values in space.corners(named, search.seed):
        try:
            count = arch.count_parameters(arch.Arch.model_validate(space.apply(base, values)["arch"]))
        except ValueError:
            continue  # a combination that cannot be built; the trial that draws it fails its check
        if count <= search.max_params:
            return Space(base, named)
        smallest = count if smallest is None else min(smallest, count)
    raise ParamsError(f"search.max_params = {search.max_params:,}: no architecture of the space fits "
                      f"(the smallest of its corners has {smallest:,} parameters)" if smallest is not None else
                      f"search.space: no combination of its ends and choices builds an architecture")


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


def best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial of highest final validation accuracy (the first, on a tie), or None."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


@dataclass(frozen=True)
class Data:
    """The training images to fit, and the held-out ones to score on: never the test images."""

    images: object  # (N, 1, 28, 28) float, on the device
    labels: object  # (N,) int64
    validation: tuple  # (images, labels) held out

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.labels), len(self.validation[1])


def objective(trials: Space, search: SearchParams, data: Data, device) -> Callable[[optuna.Trial], float]:
    """Optuna's objective: a trial's values in, the train stage's training, the validation accuracy
    at its final step out; reported at every scoring, stopped when the pruner says so."""
    from mnistcnn.training import engine, reproducible  # noqa: PLC0415 (torch: seconds to import)
    from mnistcnn.model import models

    def run(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", WORKER)
        section = trials.section(suggest(trial, trials.named))
        trial.set_user_attr("train", section)
        try:
            train = config.parse_train(section)  # a combination that cannot be built fails the trial here
        except ParamsError as err:
            trial.set_user_attr("error", str(err))
            raise
        declared = train.architecture
        count = arch.count_parameters(declared)
        trial.set_user_attr("param_count", count)
        trial.set_user_attr("macs", arch.count_macs(declared))
        trial.set_user_attr("arch.digest", config.digest(declared))
        trial.set_user_attr("params.digest", config.digest(train))
        if count > search.max_params:
            trial.set_user_attr("outcome", "over budget")
            raise optuna.TrialPruned(f"{count:,} parameters, over search.max_params = {search.max_params:,}")
        curve, history = [], []

        def on_score(row: dict) -> None:
            curve.append(row)
            trial.set_user_attr("val_curve", curve)
            trial.set_user_attr("epochs_trained", row["epoch"])
            trial.report(row["accuracy"], len(curve))
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {row['accuracy']:.4f} at scoring {len(curve)}")

        reproducible.seed_everything(train.seed)  # as the train stage: the same seed, then the model
        model = models.build(declared, train.dropout).to(device)
        engine.fit(model, train, data.images, data.labels, lambda row, seconds: history.append(row),
                   data.validation, on_score)
        trial.set_user_attr("history", history)
        trial.set_user_attr("val_loss", curve[-1]["loss"])
        return curve[-1]["accuracy"]  # at the final step: never the best step

    return run
