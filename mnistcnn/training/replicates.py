"""Replicates: one train section run at several seeds, and what their spread says.

A result at one seed is one draw: the seed moves the default's test accuracy by about
0.1 pp, as much as the differences people choose by. So the pipeline trains
train.replicates seeds; their runs share a group key (the train section's digest
without its seed), and a group is summarised by its mean, standard deviation, n and
the 95% interval of its mean (Student's t). Two groups differ beyond their noise when
Welch's t-test says so. The statistics are scipy.stats'; a group of one seed has no
spread, and none is made up: its sd, interval and tests are None.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import BaseModel

from mnistcnn.params.config import digest

GROUP_TAG = "replicates.group"  # on every seed's run and on the group's summary run
ROLE_TAG = "replicates.role"  # seed: one replicate; summary: the group's statistics
SEED_KEYS = ("seed", "replicates")  # what the group key leaves out: which seeds, how many
METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")  # summarised per group
NO_SPREAD = "one seed: no spread (set train.replicates to 2 or more)"


def group_key(train: BaseModel | dict[str, Any]) -> str:
    """The digest of a train section without its seed: equal for the replicates of one recipe."""
    data = train.model_dump() if isinstance(train, BaseModel) else dict(train)
    return digest({key: value for key, value in data.items() if key not in SEED_KEYS})[:12]


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    sd: float | None  # None for one seed
    low: float | None  # the interval of the mean at the given confidence; None for one seed
    high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "ci95_low": self.low, "ci95_high": self.high}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Summary:
        return cls(raw["n"], raw["mean"], raw.get("sd"), raw.get("ci95_low"), raw.get("ci95_high"))

    def text(self, scale: float = 100, places: int = 2) -> str:
        """`99.12 ± 0.09 (n 3)`: mean ± sd, scaled (100: a fraction as percent), or `(n 1, no spread)`."""
        if self.sd is None:
            return f"{self.mean * scale:.{places}f} (n 1, no spread)"
        return f"{self.mean * scale:.{places}f} ± {self.sd * scale:.{places}f} (n {self.n})"

    def interval_text(self, scale: float = 100, places: int = 2) -> str:
        """`99.12 [98.90, 99.34] (n 3)`: the mean and its interval, or the mean alone for one seed."""
        if self.low is None:
            return f"{self.mean * scale:.{places}f} (n 1, no interval)"
        return f"{self.mean * scale:.{places}f} [{self.low * scale:.{places}f}, {self.high * scale:.{places}f}] (n {self.n})"


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample standard deviation (n - 1) and Student's t interval of the mean."""
    from scipy import stats  # here: 0.6 s of import a train or evaluate stage needs only at its end

    if not values:
        raise ValueError("no values to summarise")
    if len(values) == 1:
        return Summary(1, float(values[0]), None, None, None)
    if min(values) == max(values):  # no spread at all (scipy warns of precision loss on it)
        return Summary(len(values), float(values[0]), 0.0, float(values[0]), float(values[0]))
    mean, sd = float(stats.tmean(values)), float(stats.tstd(values))  # tstd: the sample sd, n - 1
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=stats.sem(values))
    return Summary(len(values), mean, sd, float(low), float(high))


def _welch(first: Sequence[float], second: Sequence[float], alternative: str) -> float:
    """Welch's t-test p-value; where neither side varies, the means decide (0 or 1)."""
    from scipy import stats

    if min(first) == max(first) and min(second) == max(second):
        below = sum(first) / len(first) < sum(second) / len(second)
        differ = sum(first) / len(first) != sum(second) / len(second)
        return float(not (below if alternative == "less" else differ))
    with warnings.catch_warnings():  # a side of equal values: scipy warns of precision loss, its variance is 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(first, second, equal_var=False, alternative=alternative).pvalue)


def p_lower(candidate: Sequence[float], baseline: Sequence[float]) -> float | None:
    """Welch's one-sided t-test: the p-value of `candidate`'s mean being below `baseline`'s by chance
    alone; None when a side has one value (no spread to test with)."""
    if len(candidate) < 2 or len(baseline) < 2:
        return None
    return _welch(candidate, baseline, "less")


def p_differ(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Welch's two-sided t-test: the p-value of the two means differing this much by chance alone;
    None when a side has one value."""
    if len(first) < 2 or len(second) < 2:
        return None
    return _welch(first, second, "two-sided")


def summaries(per_seed: dict[int, dict[str, float]], confidence: float = 0.95) -> dict[str, Summary]:
    """Each metric of METRICS that every seed has, summarised over the seeds."""
    found = {}
    for metric in METRICS:
        values = [row[metric] for row in per_seed.values() if row.get(metric) is not None]
        if values and len(values) == len(per_seed):
            found[metric] = summarize(values, confidence)
    return found


def document(group: str, served_seed: int, per_seed: dict[int, dict[str, float]]) -> dict[str, Any]:
    """metrics/replicates.json: the group, n, the served seed, each metric's summary, and each seed's
    scores keyed by seed (DVC's metrics drop lists; a one-seed group says it has no spread)."""
    found = summaries(per_seed)
    return {"group": group, "n": len(per_seed), "served_seed": served_seed,
            **({"spread": NO_SPREAD} if len(per_seed) == 1 else {}),
            **{metric: summary.as_dict() for metric, summary in found.items()},
            "seeds": {str(seed): row for seed, row in sorted(per_seed.items())}}


def per_seed_scores(raw: Any, metric: str) -> dict[int, float] | None:
    """One metric's value at each seed of a metrics/replicates.json document (as DVC's API reads it),
    or None where it is not such a document."""
    seeds = raw.get("seeds") if isinstance(raw, dict) else None
    if not isinstance(seeds, dict):
        return None
    found = {}
    for seed, row in seeds.items():
        value = row.get(metric) if isinstance(row, dict) else None
        if not str(seed).isdigit() or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            return None
        found[int(seed)] = float(value)
    return found or None
