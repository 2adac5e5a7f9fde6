"""gate command: may this change merge? Its metrics against params.yaml's thresholds and the baseline.

`python -m stages.gate [--rev REV] [--report PATH]`, or `make gate`. Reads the
test metrics the pipeline wrote and the baseline's at a git revision (default:
the merge base of HEAD with `main`, else `origin/main`) through DVC's API,
refuses metrics `dvc status` calls stale, prints a Markdown report and writes it
for a pull-request comment. Exit 0: every check passed; 1: a check failed or the
metrics are stale; 2: it cannot judge (missing, malformed or NaN metrics, an
unknown revision, no `main` to compare with). It fails closed.

Thresholds come from the baseline's params.yaml: a change is judged by the rules
in force where it merges, and one that moves them (to loosen its own gate, say)
only proposes them: they take effect once it has merged, and the report says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnistcnn import cli
from mnistcnn.gate import baseline, verdict
from mnistcnn.gate.verdict import CANNOT_JUDGE, CannotJudge, Verdict
from mnistcnn.outputs import DataError, atomic_path
from mnistcnn.params import config
from mnistcnn.params.config import ParamsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.gate", description=__doc__.split("\n")[0])
    parser.add_argument("--rev", help="baseline git revision (default: the merge base of HEAD and main)")
    parser.add_argument("--report", type=Path, help="where to write the Markdown report "
                                                    "(default: paths.gate_report in params.yaml)")
    args = parser.parse_args(argv)
    report_path, label = args.report, "not resolved"
    try:
        params = config.load()
        report_path = report_path or params.paths.gate_report
        sha, label = baseline.resolve(args.rev)
        result = baseline.assess(sha, params)
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
