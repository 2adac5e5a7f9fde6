"""evaluate stage: score the trained model on the test set, once, at its final epoch.

Writes the DVC metrics file (accuracy as a fraction, loss, parameter count,
per-class accuracy, confusion matrix) and per-example predictions for
`dvc plots`, and logs the same into the MLflow run that trained the model.
"""

from __future__ import annotations

import csv
import sys

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from stages import cli, engine, mnist, models, params as params_module, reproducible, tracking  # noqa: E402
from stages.files import DataError, atomic_outputs, missing_output, read_json, write_json  # noqa: E402


def load_model(card: dict, weights_path) -> torch.nn.Module:
    """Rebuild the architecture the card names and load its weights (no code is unpickled)."""
    model = models.build(card["model"], card["dropout"])
    try:
        state = torch.load(weights_path, weights_only=True, map_location="cpu")
        model.load_state_dict(state)
    except FileNotFoundError:
        raise missing_output(weights_path, produced_by="train") from None
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise DataError(f"{weights_path}: does not hold {card['model']} weights ({err})") from None
    return model


def confusion_figure(confusion: torch.Tensor, title: str):
    """A labelled heat map of the confusion matrix, counts in every cell."""
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


def write_predictions(path, labels: torch.Tensor, predictions: torch.Tensor) -> None:
    """One row per test image, for `dvc plots` (main() writes it through atomic_outputs)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(labels.tolist(), predictions.tolist()))


def main() -> None:
    params = params_module.load()
    paths = params.paths
    card = read_json(paths.model_card, produced_by="train")
    model = load_model(card, paths.model)
    dataset = mnist.load_dataset(paths.dataset)
    reproducible.configure(params.train.threads)  # sums split by thread: the same count as training
    device = engine.pick_device(params.train.device)
    images = mnist.normalize(dataset["test_images"]).to(device)
    labels = dataset["test_labels"].to(device)
    result = engine.evaluate(model.to(device), images, labels, params.evaluate.batch_size)
    per_class = engine.per_class_accuracy(result.confusion)
    metrics = {"accuracy": result.accuracy, "loss": result.loss, "params": models.count_parameters(model)}
    print(f"evaluate: {card['model']} test accuracy {result.accuracy:.4f}, loss {result.loss:.4f} "
          f"on {len(labels):,} images", file=sys.stderr)

    with tracking.run(params.tracking.experiment, stage="evaluate", run_id=card["mlflow_run_id"]):
        tracking.log_metrics({"test/accuracy": result.accuracy, "test/loss": result.loss})
        tracking.log_metrics({f"test/accuracy_class_{c}": a for c, a in enumerate(per_class) if a is not None})
        figure = confusion_figure(result.confusion, f"{card['model']}: test accuracy {result.accuracy:.2%}")
        tracking.log_figure(figure, "evaluation/confusion_matrix.png")
        plt.close(figure)
        with atomic_outputs() as stage:  # both, or neither
            write_predictions(stage(paths.predictions), labels.cpu(), result.predictions)
            write_json(stage(paths.test_metrics), {**metrics, "per_class_accuracy": per_class,
                                                   "confusion": result.confusion.tolist()})


if __name__ == "__main__":
    cli.run(main)
