"""Figures logged to MLflow, rendered without a display.

Built as bare matplotlib Figures (they render with Agg, to files only): pyplot's
figure manager and backend selection would add their import to the evaluate stage.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure


def confusion_figure(confusion: torch.Tensor, title: str):
    """A labelled heat map of the confusion matrix, counts in every cell."""
    n = len(confusion)
    figure = Figure(figsize=(6.4, 5.6), dpi=100)
    axes = figure.subplots()
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
