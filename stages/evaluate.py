"""evaluate stage: score the trained models on the test set, once, at their final epoch.

Writes the DVC metrics file of the served model (accuracy as a fraction, loss,
parameter count, per-class accuracy, confusion matrix) and per-example
predictions for `dvc plots`, and logs the same into the MLflow run that trained
the model, found by the weights' SHA-256. Then it scores every replicate (each
seed of train.replicates) the same way, adds its test metrics to its run, and
writes the group's summary (mean, sd, n, 95% interval of validation and test
accuracy and loss) to paths.replicate_metrics and to a summary run. Where the store holds no such run (the model came from a
teammate's DVC remote, or another tracking store), a new run records the model,
its training params and curves, then the test results: every store that saw an
evaluation holds a complete run.
"""

from __future__ import annotations

import csv
import sys

import torch

from mnistcnn import cli, phases
from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.model import weights as weights_file
from mnistcnn.outputs import atomic_outputs, read_json, write_json
from mnistcnn.params import config
from mnistcnn.tracking import groups, runs
from mnistcnn.training import engine, figures, record, replicates, reproducible


def write_predictions(path, labels: torch.Tensor, predictions: torch.Tensor) -> None:
    """One row per test image, for `dvc plots` (main() writes it through atomic_outputs)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(labels.tolist(), predictions.tolist()))


def adopt(params, card: dict, model, images: torch.Tensor) -> None:
    """Record, in the active new run, what the train stage records: its params, curves and model."""
    history = read_json(params.paths.train_history, produced_by="train")
    scores = read_json(params.paths.val_history, produced_by="train")
    made = record.record(params.train, card["dataset_digest"])
    runs.log_params(made.run_params(params.train))
    runs.set_tags({runs.WEIGHTS_TAG: card["weights_sha256"], **made.tags(),
                   "run.adopted": "evaluate found no run that trained these weights in this store"})
    for row in history:
        runs.log_metrics({"train/loss": row["loss"], "train/accuracy": row["accuracy"]}, step=row["step"])
    for row in scores:
        runs.log_metrics({"val/loss": row["loss"], "val/accuracy": row["accuracy"]}, step=row["step"])
    runs.log_model(model, images)


def score_replicates(params, served: dict, served_result, model_images: tuple, device) -> dict:
    """Every seed's test scores, each added to its run, and the group's summary run; returns
    metrics/replicates.json's document. The served seed's model was scored already: its result is reused."""
    train, paths, experiment = params.train, params.paths, params.tracking.experiment
    images, labels = model_images
    per_seed, weights = {}, []
    for seed in train.seeds:
        card_path = paths.replicate_models / f"seed-{seed}.json"
        card = read_json(card_path, produced_by="train")
        if card["weights_sha256"] == served["weights_sha256"]:
            result = served_result
        else:
            model = weights_file.load_model(card, paths.replicate_models / f"seed-{seed}.pt", card_path)
            result = engine.evaluate(model.to(device), images, labels, params.evaluate.batch_size)
            one = train.model_copy(update={"seed": seed})
            groups.score_seed(experiment, one, record.record(one, card["dataset_digest"]), card,
                              {"accuracy": result.accuracy, "loss": result.loss})
        print(f"evaluate: seed {seed} test accuracy {result.accuracy:.4f}, loss {result.loss:.4f}", file=sys.stderr)
        per_seed[seed] = {**{key: card[key] for key in ("val_accuracy", "val_loss") if key in card},
                          "test_accuracy": result.accuracy, "test_loss": result.loss}
        weights.append(card["weights_sha256"])
    summary = replicates.document(replicates.group_key(train), train.seed, per_seed)
    groups.write_summary(experiment, train, record.record(train, served["dataset_digest"]), summary, weights)
    for metric in ("val_accuracy", "test_accuracy"):
        if metric in summary:
            print(f"evaluate: {metric.replace('_', ' ')} over the seeds "
                  f"{replicates.Summary.from_dict(summary[metric]).interval_text()} (mean [95% interval])",
                  file=sys.stderr)
    return summary


def main() -> None:
    params = config.load()
    paths = params.paths
    uri = runs.connect()  # before any work: a tracking server that is down fails the stage in seconds
    # Sums split by thread and kernels chosen by the CPU: the same settings as training, before any tensor work.
    reproducible.configure(params.train.threads, params.train.kernels)
    with phases.phase("data and model"):
        card = read_json(paths.model_card, produced_by="train")
        model = weights_file.load_model(card, paths.model, paths.model_card)
        provenance = read_json(paths.provenance, produced_by="download")
        data = mnist.load_split(paths.test_data, "test", provenance, paths.provenance)
        device = engine.pick_device(params.train.device)
        images, labels = mnist.normalize(data["test_images"]).to(device), data["test_labels"].to(device)
    with phases.phase("evaluation"):
        result = engine.evaluate(model.to(device), images, labels, params.evaluate.batch_size)
        per_class = engine.per_class_accuracy(result.confusion)
    print(f"evaluate: {card['model']} test accuracy {result.accuracy:.4f}, loss {result.loss:.4f} "
          f"on {len(labels):,} images (the served model, seed {params.train.seed})", file=sys.stderr)
    run_id = runs.training_run(params.tracking.experiment, card["weights_sha256"])
    if run_id is None:
        print(f"evaluate: {uri} holds no run that trained these weights; recording them in a new run",
              file=sys.stderr)
    run_name = None if run_id else runs.run_name(params.train)
    with runs.run(params.tracking.experiment, stage="evaluate", run_id=run_id, run_name=run_name):
        with phases.phase("mlflow: find and resume the run, metrics, figure"):
            if run_id is None:
                adopt(params, card, model, images)
            runs.log_metrics({"test/accuracy": result.accuracy, "test/loss": result.loss})
            runs.log_metrics({f"test/accuracy_class_{c}": a for c, a in enumerate(per_class) if a is not None})
            title = f"{card['model']}: test accuracy {result.accuracy:.2%}"
            runs.log_figure(figures.confusion_figure(result.confusion, title), "evaluation/confusion_matrix.png")
    with phases.phase("replicates"):
        summary = score_replicates(params, card, result, (images, labels), device)
    with phases.phase("outputs"), atomic_outputs() as stage:  # all, or none
        write_predictions(stage(paths.predictions), labels.cpu(), result.predictions)
        write_json(stage(paths.test_metrics), {"accuracy": result.accuracy, "loss": result.loss,
                                               "params": models.count_parameters(model),
                                               "per_class_accuracy": per_class,
                                               "confusion": result.confusion.tolist()})
        write_json(stage(paths.replicate_metrics), summary)
    phases.mark("mlflow: run end")


if __name__ == "__main__":
    cli.run(main)
