"""The gate's rule on replicates: the change's test accuracies against the baseline's, with their noise.

A change fails when its mean test accuracy is below the baseline's and either
- the drop is real: Welch's one-sided t-test (scipy.stats) gives p < 1 - gate.confidence, the
  chance that seeds alone would put the change's mean this far below; or
- the mean dropped more than gate.max_accuracy_drop percentage points, however noisy the seeds.
Where either side has one seed there is no spread to test with: the second rule alone judges,
and the report says so. benchmarks/gate_rates.py measures how often the rule fails a change that
does nothing and how often it catches a regression (docs/gate.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mnistcnn.params.schema import GateParams
from mnistcnn.training import replicates
from mnistcnn.training.replicates import Summary

TOLERANCE_PP = 1e-9  # 0.9728 - 0.9698 is 0.30000000000000027 pp in floats: that drop is 0.3 pp


@dataclass(frozen=True)
class Judgement:
    current: Summary  # the change's test accuracies (fractions), summarised
    baseline: Summary
    drop_pp: float  # the baseline's mean minus the change's, in percentage points
    p: float | None  # Welch's one-sided p of a drop this large by chance; None with one seed on a side
    failed: bool
    reason: str  # the failure, for the summary line; empty when it passed
    alpha: float  # 1 - gate.confidence: a drop with a smaller p is real

    @property
    def p_text(self) -> str:
        return "no spread on one side" if self.p is None else f"p {self.p:.3f}"


def summary_of(values: Sequence[float]) -> Summary:
    return replicates.summarize(list(values))


def judge(current: Sequence[float], baseline: Sequence[float], gate: GateParams) -> Judgement:
    """The rule above, on each side's test accuracy at each seed (fractions)."""
    ours, theirs = summary_of(current), summary_of(baseline)
    drop_pp = (theirs.mean - ours.mean) * 100
    alpha = round(1 - gate.confidence, 10)
    p = replicates.p_lower(list(current), list(baseline))
    if drop_pp > gate.max_accuracy_drop + TOLERANCE_PP:
        reason = (f"mean test accuracy dropped {drop_pp:.2f} pp against the baseline "
                  f"(allowed {gate.max_accuracy_drop:.2f} pp)")
    elif p is not None and drop_pp > 0 and p < alpha:
        reason = (f"mean test accuracy dropped {drop_pp:.2f} pp against the baseline, more than its seeds' "
                  f"noise (Welch's t-test p = {p:.3f} < {alpha:g})")
    else:
        reason = ""
    return Judgement(ours, theirs, drop_pp, p, bool(reason), reason, alpha)
