"""Figures logged to MLflow, rendered without a display."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def confusion_figure(confusion: torch.Tensor, title: str):
    """A labelled heat map of the confusion matrix, counts in every cell; close it with `close`."""
    n = len(confusion)
    figure, axes = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    image = axes.imshow(confusion.log1p(), cmap="Blues")
    for true in range(n):
        for pred in range(n):
            count = int(confusion[true, pred])
            colour = "white" if confusion[true, pred] > confusion.max() / 2 else "black"
            axes.text(pred, true, str(count), ha="center", va="center", fontsize=7, color=colour)
    axes.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    figure.colorbar(image, ax=axes, label="log(1 + count)")
    figure.tight_layout()
    return figure


def close(figure) -> None:
    plt.close(figure)
