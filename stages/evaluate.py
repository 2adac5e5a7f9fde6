"""evaluate stage: score the trained model on the test set, once, at its final epoch.

Writes the DVC metrics file (accuracy as a fraction, loss, parameter count,
per-class accuracy, confusion matrix) and per-example predictions for
`dvc plots`, and logs the same into the MLflow run that trained the model.
"""

from __future__ import annotations

import csv
import sys

import torch

from mnistcnn import cli, config, engine, figures, mnist, models, reproducible, tracking, weights
from mnistcnn.outputs import atomic_outputs, read_json, write_json


def write_predictions(path, labels: torch.Tensor, predictions: torch.Tensor) -> None:
    """One row per test image, for `dvc plots` (main() writes it through atomic_outputs)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(labels.tolist(), predictions.tolist()))


def main() -> None:
    params = config.load()
    paths = params.paths
    card = read_json(paths.model_card, produced_by="train")
    model = weights.load_model(card, paths.model, paths.model_card)
    provenance = read_json(paths.provenance, produced_by="download")
    dataset = mnist.load_dataset(paths.dataset, provenance, paths.provenance)
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
        figure = figures.confusion_figure(result.confusion, f"{card['model']}: test accuracy {result.accuracy:.2%}")
        tracking.log_figure(figure, "evaluation/confusion_matrix.png")
        figures.close(figure)
        with atomic_outputs() as stage:  # both, or neither
            write_predictions(stage(paths.predictions), labels.cpu(), result.predictions)
            write_json(stage(paths.test_metrics), {**metrics, "per_class_accuracy": per_class,
                                                   "confusion": result.confusion.tolist()})


if __name__ == "__main__":
    cli.run(main)
