"""train stage: train the model params.yaml names, log it to MLflow, write its weights.

It reads the training images only (the test images are another file, evaluate's),
holds out train.validation.size of them, and scores the model on those as it trains.
Outputs (paths in params.yaml): the weights as a state dict (load it with
`weights_only=True`), a model card declaring the architecture and the weights'
SHA-256, the final train and validation metrics, the per-epoch history and the
validation curve. None of them names the MLflow run, which differs from one
reproduction to the next: the run is tagged with the weights' SHA-256 and found by it
(runs.training_run).
"""

from __future__ import annotations

import sys

from mnistcnn import cli, phases
from mnistcnn.data import mnist
from mnistcnn.model import weights as weights_file
from mnistcnn.outputs import atomic_outputs, read_json, save_torch, sha256_file, write_json
from mnistcnn.params import config
from mnistcnn.params.schema import PathsParams
from mnistcnn.tracking import runs
from mnistcnn.training import engine, record, reproducible, trainer


class Progress:
    """Each epoch and each validation scoring, said on stderr and logged to the run; the scorings kept."""

    def __init__(self, epochs: int):
        self.epochs, self.scores = epochs, []

    def epoch(self, row: dict, seconds: float) -> None:
        print(f"train: epoch {row['epoch']}/{self.epochs} loss {row['loss']:.4f} "
              f"accuracy {row['accuracy']:.4f} ({seconds:.1f} s)", file=sys.stderr)
        runs.log_metrics({"train/loss": row["loss"], "train/accuracy": row["accuracy"],
                          "train/epoch_seconds": seconds}, step=row["step"])

    def score(self, row: dict) -> None:
        self.scores.append(row)
        print(f"train: step {row['step']} (epoch {row['epoch']:.2f}) validation loss {row['loss']:.4f} "
              f"accuracy {row['accuracy']:.4f}", file=sys.stderr)
        runs.log_metrics({"val/loss": row["loss"], "val/accuracy": row["accuracy"]}, step=row["step"])


def write_outputs(paths: PathsParams, model, card: dict, history: list[dict], scores: list[dict]) -> None:
    """The stage's five outputs, written together: all new, or (failed, interrupted) none."""
    final = history[-1]
    with atomic_outputs() as stage:
        weights = stage(paths.model)
        save_torch(weights_file.state(model), weights)
        card = {**card, "weights_sha256": sha256_file(weights)}  # evaluate checks the weights by it
        runs.set_tags({runs.WEIGHTS_TAG: card["weights_sha256"]})  # the run is found by it
        write_json(stage(paths.model_card), card)
        write_json(stage(paths.train_history), history)
        write_json(stage(paths.val_history), scores)
        validation = {"val_accuracy": scores[-1]["accuracy"], "val_loss": scores[-1]["loss"]} if scores else {}
        write_json(stage(paths.train_metrics), {**validation, "loss": final["loss"], "accuracy": final["accuracy"],
                                                "params": card["params"], "macs": card["macs"]})


def main() -> None:
    params = config.load()
    train, paths = params.train, params.paths
    runs.connect()  # before any work: a tracking server that is down fails the stage in seconds
    reproducible.configure(train.threads, train.kernels)  # before any tensor work, which fixes the kernels
    with phases.phase("data"):
        provenance = read_json(paths.provenance, produced_by="download")
        data = mnist.load_split(paths.train_data, "train", provenance, paths.provenance)  # never the test file
        device = engine.pick_device(train.device)
        (images, labels), validation = mnist.train_and_validation(data, train.validation, device)
    made, progress = record.record(train, provenance["digest"]), Progress(train.epochs)
    with runs.run(params.tracking.experiment, stage="train", run_name=runs.run_name(train)):
        with phases.phase("mlflow: run start, params, dataset"):
            runs.log_params(made.run_params(train))
            runs.set_tags({**reproducible.environment(device, train.threads), **made.tags()})
            runs.log_dataset_input(provenance, paths.train_data, context="training")
        held = f", {len(validation[1]):,} held out for validation" if validation else ", none held out"
        print(f"train: {train.model} ({made.params:,} parameters, {made.macs / 1e6:.2f}M multiply-adds per image) "
              f"on {device}, {len(labels):,} images{held}, {train.epochs} epoch(s)", file=sys.stderr)
        if made.params > params.gate.max_params:  # said, not refused: an experiment may explore past the budget
            print(f"train: warning: {made.params:,} parameters is over gate.max_params = {params.gate.max_params:,}:"
                  " the gate will refuse this model (`make budget` counts an architecture in a second)",
                  file=sys.stderr)
        with phases.phase("training loop"), reproducible.nondeterministic_kernels() as kernels:
            model, history = trainer.train_model(train, images, labels, device, progress.epoch, validation,
                                                 progress.score)
        if kernels:
            print(f"train: ran without a deterministic kernel: {', '.join(sorted(kernels))}; "
                  "the weights may differ between runs", file=sys.stderr)
            runs.set_tags(reproducible.determinism(kernels))
        with phases.phase("mlflow: model export and logging"):
            runs.log_model(model, images[:runs.EXAMPLE_IMAGES])
        with phases.phase("outputs"):
            write_outputs(paths, model, made.card(), history, progress.scores)
    phases.mark("mlflow: run end")


if __name__ == "__main__":
    cli.run(main)
