"""The accuracy-for-size front: the models no smaller-or-equal model beats on validation accuracy.

Every tracked training is a run: a pipeline run of one seed, or a complete search trial
at one seed or several (its `seeds/val_accuracy`, one point a seed, step = the seed).
`runs` reads them from plain run records (tags, params, latest metrics, histories; read
by mnistcnn/tracking/reading.py) and says why each other run is left out; `pool` joins
the runs of one group (one train section at any seed) into a `Point`, each seed once;
`front` keeps the points that no other point dominates (at most as many parameters and at
least the mean validation accuracy, strictly one of the two), one of each tie. No MLflow, no torch: lists in, lists out.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mnistcnn.training import replicates

PIPELINE = "pipeline"
SEED_HISTORY = "seeds/val_accuracy"  # a trial's validation accuracy at each seed it trained at (step = seed)


@dataclass(frozen=True)
class Run:
    """One training's scores: validation (and, for a pipeline run, test) accuracy by seed."""
    group: str
    source: str  # `pipeline`, or `search <study>`
    name: str
    params: int
    epochs: int
    held_out: tuple[int, int]  # validation.size, validation.seed: which images it was scored on
    validation: dict[int, float]
    test: dict[int, float]


@dataclass(frozen=True)
class Point:
    """A group: one train section, its seeds pooled, each once."""
    group: str
    name: str
    sources: tuple[str, ...]
    params: int
    epochs: int
    runs: int
    validation: replicates.Summary
    test: replicates.Summary | None
    seeds: dict[str, dict[int, float]]  # validation and test: each seed's score

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sources": list(self.sources), "group": self.group, "params": self.params,
                "epochs": self.epochs, "runs": self.runs,
                **{label: None if summary is None else {**summary.as_dict(), "seeds": self.seeds[label]}
                   for label, summary in (("validation", self.validation), ("test", self.test))}}


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _group(raw: dict[str, Any]) -> str:
    """The group key; a run older than the tag: its params digest (one seed's section), else itself."""
    tags = raw["tags"]
    if tags.get(replicates.GROUP_TAG):
        return tags[replicates.GROUP_TAG]
    return f"params {tags['params.digest']}" if tags.get("params.digest") else f"run {raw['id']}"


def _scores(raw: dict[str, Any], trial: bool) -> tuple[dict[int, float], dict[int, float]] | str:
    """Validation and test accuracy by seed, or why there are none. A trial is never scored on test."""
    seed, metrics = _integer(raw["params"].get("seed")), raw["metrics"]
    per_seed = raw.get("histories", {}).get(SEED_HISTORY) if trial else None
    if per_seed:
        return {int(step): value for step, value in per_seed.items()}, {}
    if "val/accuracy" not in metrics:
        return "no val/accuracy"
    if seed is None:
        return "no seed param"
    test = {seed: metrics["test/accuracy"]} if "test/accuracy" in metrics and not trial else {}
    return {seed: metrics["val/accuracy"]}, test


def entry(raw: dict[str, Any]) -> Run | str:
    """A run record as a training's scores, or why it is none (a pruned trial, a summary run, ...)."""
    tags, params = raw["tags"], raw["params"]
    role = tags.get("search.role")
    if raw["status"] != "FINISHED":
        return f"{raw['status'].lower()} (not finished)"
    if role is not None and role != "trial":
        return f"search {role} run"
    if role == "trial" and tags.get("trial.state") != "complete":
        return f"{tags.get('trial.state', 'unknown')} trial"
    if role is None and tags.get(replicates.ROLE_TAG) == "summary":
        return "replicates summary run"
    scores = _scores(raw, trial=role == "trial")
    if isinstance(scores, str):
        return scores
    counts = [_integer(params.get(key)) for key in ("param_count", "epochs", "validation.size", "validation.seed")]
    if None in counts:
        return "no param_count, epochs or validation params"
    if role == "trial":
        study = tags.get("search.study", "?")
        source, name = f"search {study}", f"{study} trial {tags.get('trial.number', '?')}"
    else:
        source, name = PIPELINE, re.sub(r"-s\d+$", "", raw.get("name") or raw["id"])  # the group's, not one seed's
    return Run(_group(raw), source, name, counts[0], counts[1], (counts[2], counts[3]), *scores)


def runs(records: list[dict[str, Any]], held_out: tuple[int, int],
         max_epochs: int | None = None) -> tuple[list[Run], Counter[str]]:
    """The trainings scored on the same held-out images (`held_out`: size, seed) and of at most
    `max_epochs`, in the records' order; and how many records were left out, by reason."""
    kept, left_out = [], Counter()
    for raw in records:
        found = entry(raw)
        if isinstance(found, str):
            left_out[found] += 1
        elif found.held_out != held_out:
            left_out[f"scored on other held-out images (validation {found.held_out[0]}/{found.held_out[1]})"] += 1
        elif max_epochs is not None and found.epochs > max_epochs:
            left_out[f"over {max_epochs} epochs"] += 1
        else:
            kept.append(found)
    return kept, left_out


def pool(found: list[Run]) -> list[Point]:
    """One point per group, in order of first appearance: each seed's score once (the same seed of a
    group trains the same bits; the first run seen keeps it), named by its first pipeline run of a
    named model (quick25k-e1), else its first trial (moon8k trial 19: where a declared one came from),
    else its first run."""
    groups: dict[str, list[Run]] = {}
    for run in found:
        groups.setdefault(run.group, []).append(run)
    points = []
    for key, members in groups.items():
        seeds: dict[str, dict[int, float]] = {"validation": {}, "test": {}}
        for run in members:
            for label, scores in (("validation", run.validation), ("test", run.test)):
                for seed, value in scores.items():
                    seeds[label].setdefault(seed, value)
        named = [run for run in members if run.source == PIPELINE and not run.name.startswith("declared-")]
        first = (named or [run for run in members if run.source != PIPELINE] or members)[0]
        seeds = {label: dict(sorted(scores.items())) for label, scores in seeds.items()}
        points.append(Point(key, first.name, tuple(dict.fromkeys(run.source for run in members)), first.params,
                            first.epochs, len(members), replicates.summarize(list(seeds["validation"].values())),
                            replicates.summarize(list(seeds["test"].values())) if seeds["test"] else None, seeds))
    return points


def _dominates(other: Point, point: Point) -> bool:
    """`other` is at most as big and at least as good, and strictly one of the two."""
    at_least = other.params <= point.params and other.validation.mean >= point.validation.mean
    return at_least and (other.params < point.params or other.validation.mean > point.validation.mean)


def front(points: list[Point]) -> list[Point]:
    """The Pareto front, fewest parameters first: the points no other point dominates (none is at
    most as big and at least as good, and strictly one of the two); of points equal in both, the
    first is kept."""
    kept, seen = [], set()
    for point in points:
        beaten = any(_dominates(other, point) for other in points)
        if not beaten and (point.params, point.validation.mean) not in seen:
            seen.add((point.params, point.validation.mean))
            kept.append(point)
    return sorted(kept, key=lambda point: point.params)  # stable: ties stay in order


def best_under(points: list[Point], budget: int) -> Point | None:
    """The best mean validation accuracy with at most `budget` parameters (fewer parameters, then
    the first, on a tie), or None where no point fits."""
    fits = [point for point in points if point.params <= budget]
    return min(fits, key=lambda p: (-p.validation.mean, p.params), default=None)  # min: the first of equals
