"""compare: the experiments side by side, a row per group of replicates, in a table that fits the terminal.

`dvc exp show` gives every metric and param a column named by its file, and a row per
experiment whatever its seeds. This shows a row per group (one train section at any
seeds, pooled across experiments: mnistcnn.training.replicates): mean ± sd (n) of
validation accuracy (choose on it) and test accuracy, whether a group differs from the
best by more than the seeds' noise (`vs best`: Welch's two-sided t-test on validation),
the parameter count (`!` over gate.max_params), then the train params that differ, the
shortest first, as many as fit, an architecture as its channels (`12-24-40-24`); marks
and what did not fit are said below the table. `dvc exp show` still shows everything.
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
from mnistcnn.training import replicates

METRICS = (("validation", "metrics/train.json", "val_accuracy"), ("test", "metrics/test.json", "accuracy"),
           ("params", "metrics/test.json", "params"))
REPLICATES = "metrics/replicates.json"
ALPHA = 0.05  # a group whose validation differs from the best's with p below this is `worse`


def _row(entry: dict) -> dict[str, Any]:
    """One experiment: its served model's metrics, every seed's scores where it has replicates (else
    the served model's as its one seed), its train params, its group."""
    name = entry.get("name") or (entry["rev"] if entry["rev"] == "workspace" else entry["rev"][:7])
    data = entry.get("data") or {}
    metrics = data.get("metrics") or {}
    values = {label: (metrics.get(path) or {}).get("data", {}).get(key) for label, path, key in METRICS}
    train = (((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}).get("train") or {}
    document = (metrics.get(REPLICATES) or {}).get("data")
    seeds = {label: replicates.per_seed_scores(document, key) for label, key in
             (("validation", "val_accuracy"), ("test", "test_accuracy"))}
    for label in seeds:
        if seeds[label] is None and values[label] is not None:
            seeds[label] = {train.get("seed", 0): values[label]}
    group = document.get("group") if isinstance(document, dict) and seeds["test"] else None
    kind = 2 if entry["rev"] == "workspace" else 0 if entry.get("name") and entry.get("experiment") else 1
    return {"name": name, **values, "seeds": seeds, "group": group or f"experiment {name}", "kind": kind,
            "train": config.flatten(train), "failed": bool(entry.get("error"))}


def rows(shown: list[dict]) -> list[dict[str, Any]]:
    """One row per workspace, commit and experiment of `dvc exp show --json`."""
    found = []
    for commit in shown:
        found.append(_row(commit))
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                found.append(_row({**revision, "experiment": True}))
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


def groups(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows pooled by group: each seed once (the same seed of one group trains the same bits), the
    experiments named by the first and how many more, the first's train params and count."""
    pooled: dict[str, dict[str, Any]] = {}
    for row in found:
        group = pooled.setdefault(row["group"], {**row, "names": [], "seeds": {"validation": {}, "test": {}}})
        group["names"].append((row["kind"], row["name"]))  # named by an experiment first, the workspace last
        group["failed"] = group["failed"] and row["failed"]
        group["params"] = group["params"] if group["params"] is not None else row["params"]
        for label in ("validation", "test"):
            group["seeds"][label].update(row["seeds"][label] or {})
    for group in pooled.values():
        group["name"] = min(group["names"])[1] + (f"+{len(group['names']) - 1}" if len(group["names"]) > 1 else "")
        for label in ("validation", "test"):
            scores = list(group["seeds"][label].values())
            group[label] = replicates.summarize(scores) if scores else None
    return list(pooled.values())


def _spread(summary: replicates.Summary | None, failed: bool) -> str:
    """`98.75 ± 0.16 (n 3)` in percent; one seed `98.71 (n 1)`, no sd made up."""
    if summary is None:
        return "failed" if failed else "-"
    if summary.sd is None:
        return f"{summary.mean * 100:.2f} (n 1)"
    return f"{summary.mean * 100:.2f} ± {summary.sd * 100:.2f} (n {summary.n})"


def _versus(group: dict[str, Any], best: dict[str, Any] | None) -> str:
    """`best`; `≈` within the seeds' noise of the best, `worse` beyond it (Welch, validation); `?` untestable."""
    if best is None or group["validation"] is None:
        return "-"
    if group is best:
        return "best"
    p = replicates.p_differ(list(group["seeds"]["validation"].values()), list(best["seeds"]["validation"].values()))
    return "?" if p is None else ("≈" if p >= ALPHA else "worse")


def table(found: list[dict[str, Any]], width: int, budget: int | None = None) -> str:
    """A row per group, best mean validation first, in lines of at most `width` characters: the
    metrics, the verdict against the best and the parameter count always, then the train params that
    differ, the shortest first, as many as fit; what did not fit, and what the marks mean, said below."""
    pooled = groups(found)
    ordered = sorted(pooled, key=lambda g: (g["validation"] is None, -(g["validation"].mean if g["validation"] else 0)))
    best = ordered[0] if ordered and ordered[0]["validation"] is not None else None
    columns = [["experiment", *(g["name"] for g in ordered)],
               ["validation %", *(_spread(g["validation"], g["failed"]) for g in ordered)],
               ["vs best", *(versus := [_versus(g, best) for g in ordered])],
               ["test %", *(_spread(g["test"], False) for g in ordered)],
               ["params", *(_metric(g["params"], budget) for g in ordered)]]
    keys = sorted({k for g in pooled for k in g["train"]} - ({"replicates"} if len(pooled) > 1 else set()))
    differ = [[key, *_column(key, ordered)] for key in keys if len({_digest(g["train"].get(key)) for g in pooled}) > 1]
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
    lines += _legend(pooled, set(versus), budget)
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in lines)


def _legend(pooled: list[dict[str, Any]], marks: set[str], budget: int | None) -> list[str]:
    """What the marks in the table mean, those that appear (`marks`: the vs-best column's)."""
    lines = []
    if marks & {"≈", "worse"}:
        lines.append(f"vs best: ≈ within the seeds' noise of the best, worse beyond (Welch's t-test, "
                     f"validation, p < {ALPHA})")
    if "?" in marks:
        lines.append("?: one seed on a side, no spread to test (train.replicates: 2 or more)")
    if any(len(g["names"]) > 1 for g in pooled):
        lines.append("+k: pooled with k more rows (commits, experiments) of the same train section, each seed once")
    if any(g["failed"] for g in pooled):
        lines.append("failed: the experiment failed, no metrics (dvc exp show lists its error)")
    if any(g["validation"] is None and not g["failed"] for g in pooled):  # a DVC output: pulled or not
        lines.append("-: no validation metrics here: unfinished, or not in this DVC cache (make pull)")
    if any(_over(g["params"], budget) for g in pooled):
        lines.append(f"!: over gate.max_params = {budget:,}: `make gate` refuses it")
    return lines


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
