"""frontier: the accuracy-vs-parameter-count front of every tracked run and trial.

    python -m stages.frontier [--max-epochs N] [--under N] [--figure PATH] [--experiment NAME]

`make frontier FRONTIER_ARGS="..."`. Reads the pipeline's seed runs (experiment
`<experiment>`) and the search's complete trials (`<experiment>-search`) from the
MLflow store, keeps those scored on params.yaml's held-out images (train.validation),
pools them by group, each seed once (mnistcnn/search/frontier.py), and prints the
front: the groups no other group dominates (at most as many parameters and at least the
mean validation accuracy, strictly one of the two). Draws it (--figure) and logs it as a run of `<experiment>-frontier`
(front.json, the figure, `front/val_accuracy` at step = parameters).
"""

from __future__ import annotations

import argparse
import shutil
from collections import Counter
from pathlib import Path

from mnistcnn import cli
from mnistcnn.params import config
from mnistcnn.search import frontier
from mnistcnn.search.frontier import Point

FIGURE = Path("frontier.png")  # git-ignored; the README's is drawn with --figure docs/frontier.png


class FrontierError(Exception):
    """Nothing to draw a front from."""


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.frontier", description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, help="only runs of at most N epochs")
    parser.add_argument("--under", type=int, metavar="N", help="also print the best point with at most N parameters")
    parser.add_argument("--experiment", help="the MLflow experiment (default: params.yaml's tracking.experiment)")
    parser.add_argument("--figure", type=Path, default=FIGURE, help=f"where to draw the front (default: {FIGURE})")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--width", type=int, default=shutil.get_terminal_size().columns,
                        help="characters a line (default: the terminal's)")
    return parser.parse_args(argv)


def _cells(point: Point) -> list[str]:
    test = point.test.text() if point.test is not None else "-"
    return [f"{point.params:,}", point.validation.text(), test, str(point.epochs), point.name, ", ".join(point.sources)]


def table(shown: list[Point], width: int) -> list[str]:
    """A line per point, in columns; a line over `width` characters cut with `…`."""
    rows = [["params", "validation %", "test %", "epochs", "name", "source"], *map(_cells, shown)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i < 4 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             .rstrip() for row in rows]
    return [line if len(line) <= width else line[: width - 1] + "…" for line in lines]


def _left_out(reasons: Counter[str]) -> str:
    return "; ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "none"


def draw(points: list[Point], on_front: list[Point], under: int | None):
    """Every point faint, the front as a step line with the seeds' sd, its test means beside it; where
    runs of several epoch budgets mix, each budget's own front dotted."""
    from matplotlib import ticker  # noqa: PLC0415 (only here: drawing is this stage's last step)
    from matplotlib.figure import Figure  # noqa: PLC0415 (Agg, files only; no pyplot, no display)

    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    axes.set_xscale("log")
    sizes = [p.params for p in points] + ([under] if under is not None else [])
    low, high = min(sizes) / 1.6, max(sizes) * 1.6
    axes.set_xlim(low, high)
    axes.scatter([p.params for p in points], [p.validation.mean * 100 for p in points], s=14, color="0.55",
                 alpha=0.35, label=f"every group ({len(points)}), validation")
    budgets = sorted({p.epochs for p in points})
    for colour, epochs in enumerate(budgets if len(budgets) > 1 else []):  # the front of each epoch budget
        own = frontier.front([p for p in points if p.epochs == epochs])
        axes.step([p.params for p in own], [p.validation.mean * 100 for p in own], where="post", linewidth=0.9,
                  linestyle=":", color=f"C{colour + 2}", label=f"front of the {epochs}-epoch runs alone")
    xs, ys = [p.params for p in on_front], [p.validation.mean * 100 for p in on_front]
    axes.step(xs, ys, where="post", color="C0", linewidth=1.2)
    axes.errorbar(xs, ys, yerr=[(p.validation.sd or 0) * 100 for p in on_front], fmt="o", color="C0", capsize=3,
                  label="front, validation: mean ± sd over seeds")
    scored = [p for p in on_front if p.test is not None]
    if scored:
        beside = (high / low) ** 0.012  # a little right of its point, whatever the axis spans
        axes.scatter([p.params * beside for p in scored], [p.test.mean * 100 for p in scored], marker="^", s=30,
                     color="C1", zorder=3, label="front, test mean (pipeline runs)")
    for point in on_front:
        axes.annotate(point.name, (point.params, point.validation.mean * 100), textcoords="offset points",
                      xytext=(4, -10), fontsize=7, color="0.25")
    if under is not None:
        axes.axvline(under, color="0.4", linestyle="--", linewidth=0.8, label=f"{under:,} parameters")
    axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 3, 5, 7)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("parameters (log scale)")
    axes.set_ylabel("accuracy %")
    axes.set_title("The accuracy-vs-size front")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def read(experiment: str, held_out: tuple[int, int], max_epochs: int | None):
    """The points of both experiments' runs, the runs kept, the records read and why others were left out."""
    from mnistcnn.tracking import reading  # noqa: PLC0415 (MLflow: once the params are read)

    records = reading.experiment_runs(experiment) + reading.experiment_runs(
        f"{experiment}-search", histories=(frontier.SEED_HISTORY,))
    kept, left_out = frontier.runs(records, held_out, max_epochs)
    if not kept:
        if not any(isinstance(frontier.entry(raw), frontier.Run) for raw in records):
            raise FrontierError(f"no runs with validation accuracy in experiment {experiment} (or "
                                f"{experiment}-search); run make repro or make search first")
        raise FrontierError(f"no run of experiment {experiment} is left to compare: {_left_out(left_out)}")
    return frontier.pool(kept), kept, records, left_out


def log(experiment: str, summary: dict, figure) -> str:
    """The front as a run of `<experiment>-frontier`: front.json, the figure, a point per front member."""
    from mnistcnn.tracking import records, store  # noqa: PLC0415

    points = [(f"front/{label}_accuracy", point[label]["mean"], point["params"]) for point in summary["front"]
              for label in ("validation", "test") if point[label] is not None]
    tags = {f"frontier.{key}": summary[key] for key in ("points", "runs", "dominated")}
    tags["frontier.front"] = len(summary["front"])
    params = {key: summary[key] for key in ("experiment", "validation", "max_epochs", "under") if summary[key]}
    run_id = records.write_run(store.open_experiment(f"{experiment}-frontier"), "frontier", tags, params, points)
    records.add_to_run(run_id, documents={"front.json": summary}, figures={"frontier.png": figure})
    return run_id


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    params = config.load(args.params)
    experiment = args.experiment or params.tracking.experiment
    held_out = (params.train.validation.size, params.train.validation.seed)
    points, kept, records, left_out = read(experiment, held_out, args.max_epochs)
    on_front = frontier.front(points)
    best = frontier.best_under(points, args.under) if args.under is not None else None
    print("\n".join(table(on_front, max(args.width, 40))))
    print(f"{len(points)} groups from {len(kept)} runs ({len(records)} read); {len(points) - len(on_front)} "
          f"dominated (not shown); validation on {held_out[0]:,} held-out images (seed {held_out[1]})")
    print(f"left out: {_left_out(left_out)}")
    if args.under is not None:
        print(f"best with at most {args.under:,} parameters: " + (
            f"{best.name} ({', '.join(best.sources)}), {best.params:,} parameters, {best.epochs} epoch(s), validation "
            f"{best.validation.text()}, test {best.test.text() if best.test else '-'}" if best else "none"))
    figure = draw(points, on_front, args.under)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.figure, dpi=120)
    summary = {"experiment": experiment, "validation": {"size": held_out[0], "seed": held_out[1]},
               "max_epochs": args.max_epochs, "under": args.under, "points": len(points), "runs": len(kept),
               "dominated": len(points) - len(on_front), "left_out": dict(left_out),
               "front": [point.as_dict() for point in on_front], "best_under": best.as_dict() if best else None}
    run_id = log(experiment, summary, figure)
    print(f"figure: {args.figure}; logged: run {run_id} of experiment {experiment}-frontier")
    return 0


if __name__ == "__main__":
    cli.run(main, user_errors=(FrontierError,))
