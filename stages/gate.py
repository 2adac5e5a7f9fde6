"""gate command: may this change merge? Its metrics against params.yaml's thresholds and the baseline.

`python -m stages.gate [--rev REV] [--report PATH]`, or `make gate`. Reads the
test metrics the pipeline wrote and the baseline's at a git revision (default:
the merge base of HEAD with `main`, else `origin/main`) through DVC's API,
refuses metrics `dvc status` calls stale, prints a Markdown report and writes it
for a pull-request comment. Exit 0: every check passed; 1: a check failed or the
metrics are stale; 2: it cannot judge (missing, malformed or NaN metrics, an
unknown revision, no `main` to compare with). It fails closed.

Thresholds come from the working tree's params.yaml: a change may move them,
so the report says so whenever they differ from the baseline's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import dvc.api
from dvc.exceptions import DvcException

from stages import cli, params as params_module, verdict
from stages.files import DataError, atomic_path
from stages.params import Params, ParamsError
from stages.verdict import CANNOT_JUDGE, CannotJudge, Metrics, Verdict

BASE_BRANCHES = ("main", "origin/main")  # a CI clone may hold main only as a remote branch


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True)


def _commit(rev: str) -> str | None:
    """The commit `rev` names, or None when git knows no such commit."""
    result = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return result.stdout.strip() if result.returncode == 0 else None


def resolve_baseline(rev: str | None) -> tuple[str, str]:
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


def read_metrics(path: Path, rev: str | None = None) -> Metrics | None:
    """Metrics through DVC's API: the working tree's (rev None) or a commit's; None where that commit has none."""
    where = f"{path} at {rev[:7]}" if rev else str(path)
    try:
        raw = dvc.api.metrics_show(str(path), rev=rev)
    except FileNotFoundError:
        if rev is None:
            raise CannotJudge(f"{path}: missing; the evaluate stage writes it (run `dvc repro`)") from None
        return None
    except DvcException as err:
        raise CannotJudge(f"{where}: DVC cannot read it ({type(err).__name__}: not valid JSON?)") from None
    return verdict.parse_metrics(raw, where)


def baseline_thresholds(rev: str) -> object:
    """The baseline's `gate:` section, to show a change that moves its own thresholds; None if it has none."""
    try:
        return dvc.api.params_show("params.yaml", rev=rev).get("gate")
    except (FileNotFoundError, DvcException):
        return None


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
    current, baseline, committed = read_metrics(path), read_metrics(path, sha), read_metrics(path, "HEAD")
    status = pipeline_status()
    if status:
        return verdict.stale(verdict.describe_status(status))
    notes = verdict.threshold_changes(params.gate, baseline_thresholds(sha))
    if baseline is None:
        notes.insert(0, f"No baseline: `{path}` does not exist at `{sha[:7]}`; "
                        "judged against the absolute thresholds only.")
    if committed != current:
        notes.append(f"These metrics differ from those committed at HEAD: commit `dvc.lock` and `{path}` "
                     "so that what merges is what was judged.")
    return verdict.judge(current, baseline, params.gate, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.gate", description=__doc__.split("\n")[0])
    parser.add_argument("--rev", help="baseline git revision (default: the merge base of HEAD and main)")
    parser.add_argument("--report", type=Path, help="where to write the Markdown report "
                                                    "(default: paths.gate_report in params.yaml)")
    args = parser.parse_args(argv)
    report_path, label = args.report, "not resolved"
    try:
        params = params_module.load()
        report_path = report_path or params.paths.gate_report
        sha, label = resolve_baseline(args.rev)
        result = assess(sha, params)
    except (CannotJudge, ParamsError, DataError) as err:
        result = Verdict(CANNOT_JUDGE, f"{err}")
    report = verdict.markdown(result, label)
    print(report, end="")
    if report_path is not None:
        with atomic_path(report_path) as tmp:
            tmp.write_text(report, encoding="utf-8")
        print(f"gate: report written to {report_path}", file=sys.stderr)
    return result.code


if __name__ == "__main__":
    cli.run(main)
