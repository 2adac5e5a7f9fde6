"""What the merge gate compares with: git revisions, and metrics and thresholds read through DVC.

The gate's rules are pure (mnistcnn.gate.verdict); this module gathers their inputs:
the baseline commit (the merge base of HEAD with `main`, else `origin/main`),
a revision's metrics and `gate:` section, and whether `dvc status` calls the
working tree's metrics stale. Anything it cannot read is a CannotJudge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import dvc.api
from dvc.exceptions import DvcException

from mnistcnn.gate import verdict
from mnistcnn.gate.verdict import CannotJudge, Metrics, Verdict
from mnistcnn.params import config
from mnistcnn.params.config import ParamsError
from mnistcnn.params.schema import GateParams, Params, PathsParams

BASE_BRANCHES = ("main", "origin/main")  # a CI clone may hold main only as a remote branch


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True)


def _commit(rev: str) -> str | None:
    """The commit `rev` names, or None when git knows no such commit."""
    result = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return result.stdout.strip() if result.returncode == 0 else None


def resolve(rev: str | None) -> tuple[str, str]:
    """The baseline commit and how the report names it: `rev` as given, else the merge base with main."""
    if rev is not None:
        sha = _commit(rev)
        if sha is None:
            raise CannotJudge(f"--rev {rev}: unknown git revision")
        return sha, f"`{sha[:7]}` (`--rev {rev}`)"
    for branch in BASE_BRANCHES:
        if _commit(branch):
            base = _git("merge-base", "HEAD", branch)
            if base.returncode != 0:
                raise CannotJudge(f"no merge base of HEAD and {branch}: {base.stderr.strip() or 'unrelated histories'}")
            sha = base.stdout.strip()
            return sha, f"`{sha[:7]}`, the merge base of HEAD and `{branch}`"
    raise CannotJudge(f"no branch {' or '.join(BASE_BRANCHES)} to compare with: "
                      "fetch it (`git fetch origin main`) or name a baseline with --rev REV")


def _show(path: Path, rev: str | None) -> Any:
    """A metrics file through DVC's API: the working tree's (rev None) or a commit's; None where that
    commit has none."""
    where = f"{path} at {rev[:7]}" if rev else str(path)
    try:
        return dvc.api.metrics_show(str(path), rev=rev)
    except FileNotFoundError:
        if rev is None:
            raise CannotJudge(f"{path}: missing; the evaluate stage writes it (run `dvc repro`)") from None
        return None
    except DvcException as err:
        raise CannotJudge(f"{where}: DVC cannot read it ({type(err).__name__}: not valid JSON?)") from None


def read_metrics(paths: PathsParams, rev: str | None = None) -> Metrics | None:
    """The served model's test metrics, with every seed's test accuracy where the revision has
    paths.replicate_metrics (a commit from before replicates has not); None where it has no metrics."""
    where = f" at {rev[:7]}" if rev else ""
    raw = _show(paths.test_metrics, rev)
    if raw is None:
        return None
    metrics = verdict.parse_metrics(raw, f"{paths.test_metrics}{where}")
    seeds = _show(paths.replicate_metrics, rev)
    return metrics if seeds is None else verdict.with_seeds(metrics, seeds, f"{paths.replicate_metrics}{where}")


def _gate_section(rev: str, params_file: str) -> Any:
    """The `gate:` section of params.yaml at `rev`, as YAML; None where it has none."""
    listed = _git("ls-tree", "--name-only", rev, "--", params_file)
    if listed.returncode != 0:
        raise CannotJudge(f"git cannot list {params_file} at {rev[:7]}: {listed.stderr.strip()}")
    if not listed.stdout.strip():
        return None
    shown = _git("show", f"{rev}:{params_file}")
    if shown.returncode != 0:
        raise CannotJudge(f"git cannot read {params_file} at {rev[:7]}: {shown.stderr.strip()}")
    try:
        raw = config.parse_yaml(shown.stdout, f"{params_file} at {rev[:7]}")
    except ParamsError as err:
        raise CannotJudge(f"{params_file} at {rev[:7]}: {err}") from None
    return raw["gate"] if isinstance(raw, dict) and "gate" in raw else None


def thresholds(rev: str, params_file: str = "params.yaml", newer: GateParams | None = None
               ) -> tuple[GateParams | None, list[str]]:
    """The thresholds in force at `rev`, its `gate:` section validated; None where it has none (a commit
    from before the gate). Keys the section lacks (the gate gained them later) are taken from `newer`,
    the change's own, where given, and listed. A failure of git, or a section that is not valid,
    cannot be judged."""
    section = _gate_section(rev, params_file)
    if section is None:
        return None, []
    filled = [key for key, _ in newer or () if isinstance(section, dict) and key not in section]
    if filled:
        section = {**{key: getattr(newer, key) for key in filled}, **section}
    try:
        return config.parse_gate(section), filled
    except ParamsError as err:
        raise CannotJudge(f"{params_file} at {rev[:7]}: {err}") from None


def pipeline_status() -> dict:
    """`dvc status --json`: empty when every stage is up to date with its params, code and data."""
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True)
    try:
        status = json.loads(result.stdout) if result.returncode == 0 else None
    except json.JSONDecodeError:
        status = None
    if not isinstance(status, dict):
        raise CannotJudge(f"`dvc status --json` failed: {result.stderr.strip() or result.stdout.strip()}")
    return status


def assess(sha: str, params: Params) -> Verdict:
    """Judge against the baseline commit, failing closed: anything unjudgeable (2) before stale (1)."""
    path = params.paths.test_metrics
    current, base = read_metrics(params.paths), read_metrics(params.paths, sha)
    committed = read_metrics(params.paths, "HEAD")
    status = pipeline_status()
    if status:
        return verdict.stale(verdict.describe_status(status))
    in_force, filled = thresholds(sha, newer=params.gate)  # the rules where it merges, not the change's own
    notes = verdict.threshold_changes(params.gate, in_force)
    if filled:
        notes.append(f"The baseline's `gate:` has no {', '.join(f'`{key}`' for key in filled)}: "
                     "this change's own value is used.")
    if base is None:
        notes.insert(0, f"No baseline: `{path}` does not exist at `{sha[:7]}`; "
                        "judged against the absolute thresholds only.")
    if base is not None and not base.seeds:
        notes.append(f"The baseline has no `{params.paths.replicate_metrics}` (a commit from before replicates): "
                     "judged against its one model, with no spread on its side.")
    if committed != current:
        notes.append(f"These metrics differ from those committed at HEAD: commit `dvc.lock`, `{path}` and "
                     f"`{params.paths.replicate_metrics}` so that what merges is what was judged.")
    return verdict.judge(current, base, in_force or params.gate, notes)
