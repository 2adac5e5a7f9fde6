"""compare: the experiments side by side, in a table that fits the terminal (`make compare`).

`dvc exp show` gives every metric and param a column, named by its file
(`metrics/test.json:accuracy`), so a 120-column terminal shows four of them. This
shows what one chooses on and what tells the rows apart: each row's validation
accuracy (choose on it), test accuracy and parameter count, best validation first,
then only the train params whose values differ between the rows. A row without
metrics shows `-` and says why: a failed experiment, an unfinished one, or a commit
whose metrics/train.json (a DVC output) this clone's cache lacks until `make pull`.
`dvc exp show` (in the activated .venv) still shows everything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from typing import Any

from mnistcnn import cli
from mnistcnn.params.config import flatten

METRICS = (("validation", "metrics/train.json", "val_accuracy"), ("test", "metrics/test.json", "accuracy"),
           ("params", "metrics/test.json", "params"))


def _row(entry: dict) -> dict[str, Any]:
    name = entry.get("name") or (entry["rev"] if entry["rev"] == "workspace" else entry["rev"][:7])
    data = entry.get("data") or {}
    metrics = data.get("metrics") or {}
    values = {label: (metrics.get(path) or {}).get("data", {}).get(key) for label, path, key in METRICS}
    train = (((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}).get("train") or {}
    return {"name": name, **values, "train": flatten(train), "failed": bool(entry.get("error"))}


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
    """A param as params.yaml holds it; a missing one as `-`."""
    if value is None:
        return "-"
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def _metric(value: Any) -> str:
    """An accuracy to 4 places, a count as it is."""
    return f"{value:.4f}" if isinstance(value, float) else _cell(value)


def table(found: list[dict[str, Any]], width: int) -> str:
    """The rows, best validation first, in lines of at most `width` characters."""
    keys = sorted({k for row in found for k in row["train"]})
    differ = [k for k in keys if len({_cell(row["train"].get(k)) for row in found}) > 1]
    ordered = sorted(found, key=lambda row: (row["validation"] is None, -(row["validation"] or 0)))
    header = ["experiment", *(label for label, _, _ in METRICS)]
    cells = [[row["name"], *(_metric(row[label]) for label, _, _ in METRICS)] for row in ordered]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = []
    for line, row in zip([header, *cells], [None, *ordered]):
        fixed = "  ".join(text.ljust(w) if i == 0 else text.rjust(w) for i, (text, w) in enumerate(zip(line, widths)))
        if row is None:
            rest = "differs: " + (", ".join(differ) if differ else "nothing")
        else:
            rest = " ".join(f"{k}={_cell(row['train'].get(k))}" for k in differ)
            if row["failed"]:
                rest = "failed: no metrics"
            elif row["validation"] is None:  # metrics/train.json is a DVC output: a clone has it once pulled
                rest = "no validation metrics here: unfinished, or not in this DVC cache (make pull)"
        full = f"{fixed}  {rest}"
        lines.append(full if len(full) <= width else full[: width - 1] + "…")
    return "\n".join(line.rstrip() for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=shutil.get_terminal_size().columns,
                        help="characters a line (default: the terminal's)")
    args, passed = parser.parse_known_args()  # the rest goes to `dvc exp show` (-A, --rev, -n ...)
    shown = subprocess.run(["dvc", "exp", "show", "--json", *passed], capture_output=True, text=True)
    if shown.returncode != 0:
        print(shown.stderr.strip() or "dvc exp show failed", file=sys.stderr)
        return cli.EXIT_ERROR
    print(table(rows(json.loads(shown.stdout)), max(args.width, 40)))
    return 0


if __name__ == "__main__":
    cli.run(main)
