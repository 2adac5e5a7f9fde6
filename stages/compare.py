"""compare: the experiments side by side, in a table that fits the terminal (`make compare`).

`dvc exp show` gives every metric and param a column, named by its file
(`metrics/test.json:accuracy`), so a 120-column terminal shows four of them. This
shows what one chooses on and what tells the rows apart: each row's validation
accuracy (choose on it), test accuracy and parameter count, best validation first,
a `!` after a count over gate.max_params; then the train params whose values differ
between the rows, the shortest first, an architecture as its channels (`12-24-40-24`),
as many as fit, the rest named below. A row without metrics shows `-` or `failed`,
said below: a failed experiment, an unfinished one, or a commit whose
metrics/train.json (a DVC output) this clone's cache lacks until `make pull`.
`dvc exp show` (in the activated .venv) still shows everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from typing import Any

from mnistcnn import cli
from mnistcnn.params import config

METRICS = (("validation", "metrics/train.json", "val_accuracy"), ("test", "metrics/test.json", "accuracy"),
           ("params", "metrics/test.json", "params"))


def _row(entry: dict) -> dict[str, Any]:
    name = entry.get("name") or (entry["rev"] if entry["rev"] == "workspace" else entry["rev"][:7])
    data = entry.get("data") or {}
    metrics = data.get("metrics") or {}
    values = {label: (metrics.get(path) or {}).get("data", {}).get(key) for label, path, key in METRICS}
    train = (((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}).get("train") or {}
    return {"name": name, **values, "train": config.flatten(train), "failed": bool(entry.get("error"))}


def rows(shown: list[dict]) -> list[dict[str, Any]]:
    """One row per workspace, commit and experiment of `dvc exp show --json`."""
    found = []
    for commit in shown:
        found.append(_row(commit))
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                found.append(_row(revision))
    return found


def _cell(value: Any) -> str:
    """A param as params.yaml holds it, a missing one as `-`; an architecture's blocks as their
    channels (`12-24-40-24`), another long value as a digest."""
    if value is None:
        return "-"
    if isinstance(value, list) and value and all(isinstance(b, dict) and "channels" in b for b in value):
        return "-".join(str(block["channels"]) for block in value)
    text = json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 16 else _digest(value)


def _digest(value: Any) -> str:
    return "#" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]


def _column(key: str, found: list[dict[str, Any]]) -> list[str]:
    """One param's cells; values that summarise alike but differ also show their digests."""
    values = [row["train"].get(key) for row in found]
    cells, digests = [_cell(value) for value in values], [_digest(value) for value in values]
    meanings = defaultdict(set)  # each summary: the values it stands for
    for cell, digest in zip(cells, digests):
        meanings[cell].add(digest)
    return [f"{cell}{digest}" if len(meanings[cell]) > 1 else cell for cell, digest in zip(cells, digests)]


def _over(count: Any, budget: int | None) -> bool:
    return budget is not None and isinstance(count, int) and count > budget


def _metric(value: Any, budget: int | None = None) -> str:
    """An accuracy to 4 places, a count as it is, `!` after a count over the budget."""
    if isinstance(value, float):
        return f"{value:.4f}"
    return _cell(value) + ("!" if _over(value, budget) else "")


def _lay_out(columns: list[list[str]]) -> list[str]:
    """Columns (each a header, then a cell a row) as lines; the first left-aligned, the rest right."""
    widths = [max(map(len, column)) for column in columns]
    return ["  ".join(text.ljust(w) if i == 0 else text.rjust(w)
                      for i, (text, w) in enumerate(zip(line, widths))).rstrip() for line in zip(*columns)]


def table(found: list[dict[str, Any]], width: int, budget: int | None = None) -> str:
    """The rows, best validation first, in lines of at most `width` characters: the metrics and the
    parameter count always, then the train params that differ, the shortest first, as many as fit;
    what did not fit, and what the marks mean, said below."""
    ordered = sorted(found, key=lambda row: (row["validation"] is None, -(row["validation"] or 0)))
    columns = [["experiment", *(row["name"] for row in ordered)]]
    for label, _, _ in METRICS:
        columns.append([label, *("failed" if row["failed"] and label == "validation" else
                                 _metric(row[label], budget if label == "params" else None) for row in ordered)])
    keys = sorted({k for row in found for k in row["train"]})
    differ = [[key, *_column(key, ordered)] for key in keys if len({_digest(row["train"].get(key)) for row in found}) > 1]
    left_out = []
    for column in sorted(differ, key=lambda column: (max(map(len, column)), column[0])):
        if not left_out and max(map(len, _lay_out([*columns, column]))) <= width:
            columns.append(column)
        else:
            left_out.append(column[0])
    lines = _lay_out(columns)
    if not differ:
        lines[0] += "  (no train param differs)"
    if left_out:
        wider = max(map(len, _lay_out(columns + [c for c in differ if c[0] in left_out])))
        lines.append(f"not shown: {', '.join(left_out)} (COMPARE_ARGS=--width={wider} shows them)")
    if any(row["failed"] for row in found):
        lines.append("failed: the experiment failed, no metrics (dvc exp show lists its error)")
    if any(row["validation"] is None and not row["failed"] for row in found):  # a DVC output: pulled or not
        lines.append("-: no validation metrics here: unfinished, or not in this DVC cache (make pull)")
    if any(_over(row["params"], budget) for row in found):
        lines.append(f"!: over gate.max_params = {budget:,}: `make gate` refuses it")
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=shutil.get_terminal_size().columns,
                        help="characters a line (default: the terminal's)")
    args, passed = parser.parse_known_args()  # the rest goes to `dvc exp show` (-A, --rev, -n ...)
    shown = subprocess.run(["dvc", "exp", "show", "--json", *passed], capture_output=True, text=True)
    if shown.returncode != 0:
        print(shown.stderr.strip() or "dvc exp show failed", file=sys.stderr)
        return cli.EXIT_ERROR
    budget = config.load().gate.max_params
    print(table(rows(json.loads(shown.stdout)), max(args.width, 40), budget))
    return 0


if __name__ == "__main__":
    cli.run(main)
