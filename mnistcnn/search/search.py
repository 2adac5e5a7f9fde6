"""The search's study: its space checked before any trial, the sampler and pruner, the winner.

Every trial is a training run (mnistcnn.search.objective). The study lives in a storage
(mnistcnn.search.studies) every worker joins; it holds the digest of its search and train
sections, so a second run of it with another space is refused rather than mixed in. The
winner is the complete trial of highest mean validation accuracy over the most seeds (the race's
survivors): the test images are never read.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from mnistcnn.model import arch
from mnistcnn.params import config, recipes
from mnistcnn.params.config import ParamsError
from mnistcnn.params.schema import Params, PrunerParams, SearchParams
from mnistcnn.search import space
from mnistcnn.search.studies import SearchError

SPACE_TAG = "space_digest"  # the study's user attribute: the search section it was made with


@contextmanager
def quiet() -> Iterator[None]:
    """Optuna's own log lines and experimental-feature warnings held back: a line a trial is the
    search's own (stages/search.py)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def pruner(params: PrunerParams) -> optuna.pruners.BasePruner:
    """The pruner search.pruner names; its steps are a trial's scorings, 1, 2, ..."""
    if params.kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=params.min_scorings,
                                                      reduction_factor=params.reduction)
    if params.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=params.startup_trials,
                                           n_warmup_steps=params.min_scorings - 1)
    return optuna.pruners.NopPruner()


def open_study(name: str, storage: RDBStorage, search: SearchParams, trials: Space) -> optuna.Study:
    """The study, created or joined; seeded TPE (the seed offset by the trials already there, so
    two workers draw different trials). Refused when it was made with another search section or
    from another starting train section (`base`): its trials would not be comparable."""
    section = {**search.model_dump(exclude={"trials", "study", "heartbeat"}),
               "space": {key: leaf.model_dump() for key, leaf in trials.leaves.items()}}
    digest = config.digest({"search": section, "base": trials.base})
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
    leaves: dict[str, space.Leaf]  # search.space, parsed
    named: dict[str, space.Leaf]  # a leaf under arch.blocks once a block

    def section(self, values: dict) -> dict:
        return space.apply(self.base, values)

    def fit(self, section: dict, budget: int) -> dict | None:
        """`section` as it is where it is within `budget` parameters; else with every block's channels
        scaled down by the one largest factor that fits (each rounded to the space's channel grid, not
        below its low end: the shape is kept); None where even the narrowest is over."""
        blocks = section["arch"]["blocks"]
        leaf = self.leaves.get("arch.blocks.channels")
        low, step = (leaf.low, leaf.step or 1) if isinstance(leaf, space.Range) and leaf.integer else (1, 1)

        def scaled(factor: float) -> dict:
            narrower = [{**block, "channels": max(min(block["channels"], low),
                                                  low + step * math.floor((block["channels"] * factor - low) / step + 0.5))}
                        for block in blocks]
            return {**section, "arch": {**section["arch"], "blocks": narrower}}

        def fits(candidate: dict) -> bool:
            return arch.count_parameters(arch.Arch.model_validate(candidate["arch"])) <= budget

        if fits(section):
            return section
        if not fits(scaled(0.0)):
            return None
        inside, outside = 0.0, 1.0  # the widths are steps of the factor: 30 halvings find the last that fits
        for _ in range(30):
            middle = (inside + outside) / 2
            inside, outside = (middle, outside) if fits(scaled(middle)) else (inside, middle)
        return scaled(inside)


def check(params: Params, params_path: Path) -> Space:
    """The space over its starting train section, checked before any trial: every end and choice
    must be a value the schema allows there, and some architecture in it must fit the budget."""
    search, base = params.search, base_train(params, params_path)
    try:
        leaves = space.parse(search.space)
    except space.SpaceError as err:
        raise ParamsError(err.under("search.space")) from None
    named = space.names(leaves, arch.Arch.model_validate(base["arch"]))
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
            return Space(base, leaves, named)
        smallest = count if smallest is None else min(smallest, count)
    raise ParamsError(f"search.max_params = {search.max_params:,}: no architecture of the space fits "
                      f"(the smallest of its corners has {smallest:,} parameters)" if smallest is not None else
                      "search.space: no combination of its ends and choices builds an architecture")


def seeds(trial: optuna.trial.FrozenTrial) -> int:
    """The seeds a complete trial was trained at: more than one where it survived the race."""
    return len(trial.user_attrs.get("seed_accuracies") or [None])


def trial_epochs(trial: optuna.trial.FrozenTrial) -> float:
    """The epochs a trial trained, its raced seeds' included (an over-budget trial trains none)."""
    first = trial.user_attrs.get("epochs_trained", 0.0)
    return first + (seeds(trial) - 1) * (trial.user_attrs.get("train") or {}).get("epochs", 0)


def best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The winner, or None: of the complete trials raced at the most seeds, the one of highest mean
    validation accuracy (the first, on a tie). A single seed's luck cannot beat a raced mean."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    most = max(seeds(t) for t in complete)
    return max((t for t in complete if seeds(t) == most), key=lambda t: (t.value, -t.number))
