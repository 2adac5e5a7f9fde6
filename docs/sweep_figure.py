"""Draw the README's sweep figure from DVC experiments: training curves and test accuracy side by side.

    python docs/sweep_figure.py sweep-cnn24k sweep-cnn9k -o docs/sweep.png

Reads each experiment's per-epoch history and test metrics through DVC (from its
cache), so it draws exactly what `dvc plots diff` and `dvc exp show` compare.
"""

from __future__ import annotations

import argparse
import json

import dvc.api
import matplotlib

matplotlib.use("Agg")  # no display: render to a file
import matplotlib.pyplot as plt  # noqa: E402


def load(experiment: str) -> dict:
    """One experiment's model name, per-epoch history and test metrics."""
    params = dvc.api.params_show(rev=experiment)["train"]
    return {
        "label": f"{params['model']} ({experiment})",
        "history": json.loads(dvc.api.read("metrics/train_history.json", rev=experiment)),
        "test": json.loads(dvc.api.read("metrics/test.json", rev=experiment)),
    }


def figure(runs: list[dict]):
    """Training loss and accuracy per epoch, and each run's test accuracy with its parameter count."""
    fig, (loss, accuracy, test) = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    for run in runs:
        epochs = [row["epoch"] for row in run["history"]]
        loss.plot(epochs, [row["loss"] for row in run["history"]], marker="o", label=run["label"])
        accuracy.plot(epochs, [row["accuracy"] for row in run["history"]], marker="o", label=run["label"])
    loss.set(title="training loss (train/loss)", xlabel="epoch")
    accuracy.set(title="training accuracy (train/accuracy)", xlabel="epoch")
    for axes in (loss, accuracy):
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
    accuracy.legend(loc="lower right", fontsize=8)
    names = [f"{run['label'].split()[0]}\n{run['test']['params']:,} params" for run in runs]
    scores = [run["test"]["accuracy"] for run in runs]
    bars = test.bar(names, scores, color=[f"C{i}" for i in range(len(runs))])
    test.bar_label(bars, labels=[f"{s:.2%}" for s in scores])
    test.set(title="test accuracy, final epoch (test/accuracy)", ylim=(min(scores) - 0.01, 1))
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", help="DVC experiment names (or git revisions)")
    parser.add_argument("-o", "--output", default="docs/sweep.png")
    args = parser.parse_args()
    figure([load(name) for name in args.experiments]).savefig(args.output)


if __name__ == "__main__":
    main()
