"""The search's sections of params.yaml (`make search`): the study, its pruner, its workers' heartbeats.

No stage of the pipeline reads them; mnistcnn.params.schema declares them in params.yaml's whole.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from mnistcnn.params.fields import MAX_REPLICATES, PRUNERS, Section, choice, integer


class PrunerParams(Section):
    """What stops a trial early, on its validation accuracy at each scoring (mnistcnn.search.search)."""

    kind: choice(PRUNERS)  # halving: asynchronous successive halving; median: below the median so far
    min_scorings: integer(1)  # scorings a trial runs before it can be stopped (halving: its first rung)
    reduction: integer(2)  # halving: one trial in `reduction` goes on at each rung
    startup_trials: integer(0)  # median: the first trials are never stopped (they set the median)


class HeartbeatParams(Section):
    """A worker's trial is failed when `missed` heartbeats in a row do not come, and run again."""

    interval: integer(1)  # seconds between a worker's heartbeats
    missed: integer(2)  # heartbeats missed before another worker fails the trial
    retries: integer(0)  # times a failed (killed, interrupted) trial is run again

    @property
    def grace(self) -> int:
        """Seconds of silence before a trial is failed."""
        return self.interval * self.missed


class RaceParams(Section):
    """Winners confirmed on seeds: a trial that completes the epoch budget among the best few so far is
    trained again at more seeds, and its value is the mean validation accuracy over them."""

    seeds: integer(1, MAX_REPLICATES)  # a survivor's seeds, train.seed first (1: no racing)
    survivors: integer(1)  # a complete trial races when its first seed ranks among this many best


class SearchParams(Section):
    """`make search` (stages/search.py): an Optuna study over train keys; no stage depends on it."""

    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                                description="a name: letters, digits, '_', '.', '-' (the winner's recipe file)")]
    trials: integer(1)  # a worker's trials, unless --trials says otherwise
    seed: integer(0)  # the sampler's (TPE): a study run by one worker proposes the same trials again
    base: Annotated[str | None, Field(description="null (params.yaml's train section) or a recipe name")]
    epochs: integer(1)  # the epoch budget: every trial trains this many
    max_params: integer(1)  # the parameter budget: a bigger trial is refused before training
    fit: bool  # a proposal over the budget has its blocks' channels scaled down by one factor until it fits
    scorings_per_epoch: integer(1)  # validation scorings an epoch, each reported to the pruner
    pruner: PrunerParams
    race: RaceParams
    heartbeat: HeartbeatParams
    # train keys, each a range {low, high} or {choices: [...]}: read by the search (mnistcnn/search/space.py)
    space: Annotated[dict[str, Any], Field(min_length=1, description="a mapping of train keys to ranges "
                                                                     "{low, high} or {choices: [...]}")]
