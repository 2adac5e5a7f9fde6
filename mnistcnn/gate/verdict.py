"""The merge gate's judgement, pure: metrics and thresholds in, check rows and a verdict out.

No git, no DVC, no files: mnistcnn.gate.baseline gathers the inputs and stages.gate writes the report,
so every rule here is unit-tested on plain dicts. Exit codes: 0 every check
passed, 1 a check failed, 2 the gate cannot judge (it fails closed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from mnistcnn.gate import spread
from mnistcnn.params.schema import GateParams
from mnistcnn.training import replicates

PASS, FAIL, CANNOT_JUDGE = 0, 1, 2
TITLES = {PASS: "PASS", FAIL: "FAIL", CANNOT_JUDGE: "CANNOT JUDGE"}


class CannotJudge(ValueError):
    """Something the gate needs is missing or unusable; it exits 2 rather than guess."""


@dataclass(frozen=True)
class Metrics:
    accuracy: float  # the served model's test accuracy, a fraction
    params: int
    loss: float | None  # shown, not judged
    seeds: tuple[float, ...] = ()  # the test accuracy at every seed (metrics/replicates.json); () where none

    @property
    def accuracies(self) -> tuple[float, ...]:
        """What the accuracy checks judge: every seed's, else the served model's alone."""
        return self.seeds or (self.accuracy,)


@dataclass(frozen=True)
class Check:
    """One row of the report's table; `passed` is None for a row shown but not judged."""

    metric: str
    baseline: str
    current: str
    delta: str
    threshold: str
    passed: bool | None
    failure: str = ""  # names the failure in the summary line


@dataclass(frozen=True)
class Verdict:
    code: int  # PASS, FAIL or CANNOT_JUDGE: the exit code
    summary: str  # one line
    checks: tuple[Check, ...] = ()
    notes: tuple[str, ...] = ()  # what a reviewer must also see: no baseline, changed thresholds
    footer: str = ""  # the parameter count against its budget


def _number(raw: dict, key: str, source: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CannotJudge(f"{source}: {key} = {value!r} is not a finite number")
    return value


def parse_metrics(raw: Any, source: str) -> Metrics:
    """Validate a metrics mapping (test accuracy as a fraction, an integer parameter count)."""
    if not isinstance(raw, dict):
        raise CannotJudge(f"{source}: expected a mapping of metrics, got {raw!r}")
    accuracy, params = _number(raw, "accuracy", source), _number(raw, "params", source)
    if not 0 <= accuracy <= 1:
        raise CannotJudge(f"{source}: accuracy = {accuracy!r} is not a fraction in [0, 1]")
    if params != int(params) or params < 0:
        raise CannotJudge(f"{source}: params = {params!r} is not a parameter count")
    loss = raw.get("loss")
    ok_loss = isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss)
    return Metrics(accuracy=float(accuracy), params=int(params), loss=float(loss) if ok_loss else None)


def with_seeds(metrics: Metrics, raw: Any, source: str) -> Metrics:
    """`metrics` with the test accuracy at every seed of a metrics/replicates.json document."""
    found = replicates.per_seed_scores(raw, "test_accuracy")
    if found is None or not all(0 <= value <= 1 for value in found.values()):
        raise CannotJudge(f"{source}: expected each seed's test_accuracy, a fraction, under `seeds`")
    return replace(metrics, seeds=tuple(found[seed] for seed in sorted(found)))


def _accuracy_checks(current: Metrics, baseline: Metrics | None, gate: GateParams) -> list[Check]:
    ours = spread.summary_of(current.accuracies)
    theirs = spread.summary_of(baseline.accuracies) if baseline else None
    base_cell = theirs.interval_text() if theirs else "—"
    minimum = Check("test accuracy %, mean [95% interval]", base_cell, ours.interval_text(), "—",
                    f"mean ≥ {gate.min_accuracy:.2%}", ours.mean >= gate.min_accuracy,
                    f"mean test accuracy {ours.mean:.2%} is below the minimum {gate.min_accuracy:.2%}")
    rule = f"drop ≤ {gate.max_accuracy_drop:.2f} pp, none real (Welch p ≥ {1 - gate.confidence:.2g})"
    served = Check(f"served model's test accuracy ({'the first seed' if current.seeds else 'one seed'})",
                   f"{baseline.accuracy:.2%}" if baseline else "—", f"{current.accuracy:.2%}",
                   _pp((current.accuracy - baseline.accuracy) * 100) if baseline else "—", "—", None)
    if baseline is None:
        return [minimum, Check("test accuracy vs baseline", "—", ours.interval_text(), "—", rule, None), served]
    judged = spread.judge(current.accuracies, baseline.accuracies, gate)
    regression = Check("test accuracy vs baseline", base_cell, ours.interval_text(),
                       f"{_pp(-judged.drop_pp)} ({judged.p_text})", rule, not judged.failed, judged.reason)
    return [minimum, regression, served]


def checks(current: Metrics, baseline: Metrics | None, gate: GateParams) -> list[Check]:
    """The report's rows: accuracy against the minimum and the baseline, the parameter budget, loss."""
    n, base_n = current.params, baseline.params if baseline else None
    budget = Check("parameters", f"{base_n:,}" if base_n is not None else "—", f"{n:,}",
                   f"{n - base_n:+,}" if base_n is not None else "—", f"≤ {gate.max_params:,}",
                   n <= gate.max_params, f"{n:,} parameters exceed the budget of {gate.max_params:,}")
    loss, base_loss = current.loss, baseline.loss if baseline else None
    loss_row = Check("test loss", f"{base_loss:.4f}" if base_loss is not None else "—",
                     f"{loss:.4f}" if loss is not None else "—",
                     f"{loss - base_loss:+.4f}" if None not in (loss, base_loss) else "—", "—", None)
    return [*_accuracy_checks(current, baseline, gate), budget, loss_row]


def judge(current: Metrics, baseline: Metrics | None, gate: GateParams, notes=()) -> Verdict:
    """Every judged row must pass; the summary names each failure, or what passed."""
    rows = checks(current, baseline, gate)
    footer = (f"Parameter count: {current.params:,} of a {gate.max_params:,} budget "
              f"({current.params / gate.max_params:.0%} used).")
    failures = [row.failure for row in rows if row.passed is False]
    if failures:
        return Verdict(FAIL, "; ".join(failures) + ".", tuple(rows), tuple(notes), footer)
    ours = spread.summary_of(current.accuracies)
    against = "no baseline to compare with" if baseline is None else _against(current, baseline, gate)
    summary = (f"mean test accuracy {ours.mean:.2%} over {ours.n} seed{'s' if ours.n > 1 else ''} "
               f"(minimum {gate.min_accuracy:.2%}), {current.params:,} parameters (budget {gate.max_params:,}), "
               f"{against}.")
    return Verdict(PASS, summary, tuple(rows), tuple(notes), footer)


def _against(current: Metrics, baseline: Metrics, gate: GateParams) -> str:
    judged = spread.judge(current.accuracies, baseline.accuracies, gate)
    noise = "one seed on a side: no spread to test" if judged.p is None else \
        f"Welch's t-test p = {judged.p:.3f}; a drop is real at p < {judged.alpha:g}"
    seeds = f"{judged.baseline.n} seed{'s' if judged.baseline.n > 1 else ''}"
    return (f"{_pp(-judged.drop_pp)} against the baseline's mean over {seeds} "
            f"({noise}; allowed drop {gate.max_accuracy_drop:.2f} pp)")


def _pp(delta: float) -> str:
    """A difference in percentage points, signed; one that rounds to zero as +0.00, never -0.00."""
    return f"{round(delta, 2) + 0.0:+.2f} pp"


def stale(changes: list[str]) -> Verdict:
    """Metrics that do not match the current params, code or data are refused, not judged."""
    return Verdict(FAIL, "the metrics are stale: the pipeline is not up to date with its params, "
                   "code or data (the stages below). Run `make repro`, then the gate again.", notes=tuple(changes))


def describe_status(status: dict) -> list[str]:
    """`dvc status --json` as one line per stage: `train: changed deps params.yaml, ...`."""
    lines = []
    for stage, entries in status.items():
        parts = []
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict):
                parts += [f"{kind} {', '.join(paths)}" if isinstance(paths, dict) else f"{kind}"
                          for kind, paths in entry.items()]
            else:
                parts.append(str(entry))
        lines.append(f"`{stage}`: {'; '.join(parts)}")
    return lines


def threshold_changes(proposed: GateParams, in_force: GateParams | None) -> list[str]:
    """A change is judged by the thresholds in force where it merges: say so when it proposes others."""
    if in_force is None:
        return ["The baseline has no `gate:` section: this change's own thresholds are used."]
    changed = [f"`{key}` {getattr(in_force, key)} → {value}" for key, value in proposed
               if getattr(in_force, key) != value]
    if not changed:
        return []
    return [f"**This change moves the thresholds**: {', '.join(changed)}. They take effect once it has "
            "merged; it is judged by the baseline's."]


def markdown(verdict: Verdict, baseline_label: str) -> str:
    """The report a reviewer reads: verdict, summary, notes, then the table."""
    lines = [f"## Metrics gate: {TITLES[verdict.code]}", "",
             f"**{TITLES[verdict.code]}**: {verdict.summary}", "", f"Baseline: {baseline_label}"]
    lines += [""] + [f"- {note}" for note in verdict.notes] if verdict.notes else []
    if verdict.checks:
        lines += ["", "| metric | baseline | current | delta | threshold | verdict |",
                  "| --- | ---: | ---: | ---: | --- | --- |"]
        for row in verdict.checks:
            mark = {True: "pass", False: "**FAIL**", None: "info" if row.threshold == "—" else "no baseline"}
            lines.append(f"| {row.metric} | {row.baseline} | {row.current} | {row.delta} "
                         f"| {row.threshold} | {mark[row.passed]} |")
    lines += ["", verdict.footer] if verdict.footer else []
    return "\n".join(lines) + "\n"
