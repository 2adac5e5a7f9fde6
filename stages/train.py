"""train stage: train the model params.yaml names at each of its seeds, log each to MLflow, write the weights.

It reads the training images only (the test images are another file, evaluate's),
holds out train.validation.size of them, and scores the model on those as it trains.
It trains train.replicates times, at seeds train.seed, train.seed + 1, ...: each a run of
its own, tagged with the group key they share (mnistcnn.training.replicates).
Outputs (paths in params.yaml): every seed's weights and card (paths.replicate_models),
and for the first seed, the model the pipeline serves: its weights as a state dict (load
it with `weights_only=True`), a model card declaring the architecture and the weights'
SHA-256, the final train and validation metrics, the per-epoch history and the
validation curve. The first seed's, whatever their number: the served model does not move
when train.replicates does, and choosing the best seed would choose on noise. None of the
outputs names an MLflow run, which differs from one reproduction to the next: a run is
tagged with its weights' SHA-256 and found by it (runs.training_run).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mnistcnn import cli, phases
from mnistcnn.data import mnist
from mnistcnn.model import weights as weights_file
from mnistcnn.outputs import atomic_outputs, read_json, save_torch, sha256_file, write_json
from mnistcnn.params import config
from mnistcnn.params.schema import Params, PathsParams, TrainParams
from mnistcnn.tracking import runs
from mnistcnn.training import engine, record, replicates, reproducible, trainer


class Progress:
    """Each epoch and each validation scoring, said on stderr and logged to the run; the scorings kept."""

    def __init__(self, epochs: int, label: str = ""):
        self.epochs, self.label, self.scores = epochs, label, []

    def epoch(self, row: dict, seconds: float) -> None:
        print(f"train: {self.label}epoch {row['epoch']}/{self.epochs} loss {row['loss']:.4f} "
              f"accuracy {row['accuracy']:.4f} ({seconds:.1f} s)", file=sys.stderr)
        runs.log_metrics({"train/loss": row["loss"], "train/accuracy": row["accuracy"],
                          "train/epoch_seconds": seconds}, step=row["step"])

    def score(self, row: dict) -> None:
        self.scores.append(row)
        print(f"train: {self.label}step {row['step']} (epoch {row['epoch']:.2f}) validation loss {row['loss']:.4f} "
              f"accuracy {row['accuracy']:.4f}", file=sys.stderr)
        runs.log_metrics({"val/loss": row["loss"], "val/accuracy": row["accuracy"]}, step=row["step"])


def final_validation(scores: list[dict]) -> dict:
    """The last scoring's validation accuracy and loss; empty where nothing is held out."""
    return {"val_accuracy": scores[-1]["accuracy"], "val_loss": scores[-1]["loss"]} if scores else {}


def write_served(stage, paths: PathsParams, weights: Path, card: dict, history: list[dict],
                 scores: list[dict]) -> None:
    """The served seed's outputs: its weights and card, its curves, its final metrics."""
    shutil.copyfile(weights, stage(paths.model))
    write_json(stage(paths.model_card), card)
    write_json(stage(paths.train_history), history)
    write_json(stage(paths.val_history), scores)
    final = history[-1]
    write_json(stage(paths.train_metrics), {**final_validation(scores), "loss": final["loss"],
                                            "accuracy": final["accuracy"], "params": card["params"],
                                            "macs": card["macs"]})


def train_seed(params: Params, train: TrainParams, data: tuple, provenance: dict, folder: Path, label: str) -> tuple:
    """One replicate as a run of its own: trained, its model logged, its weights and card written into
    `folder` (staged); returns (weights path, card, history, validation scorings)."""
    (images, labels), validation, device = data
    made, progress = record.record(train, provenance["digest"]), Progress(train.epochs, label)
    with runs.run(params.tracking.experiment, stage="train", run_name=runs.run_name(train)):
        with phases.phase("mlflow: run start, params, dataset"):
            runs.log_params(made.run_params(train))
            runs.set_tags({**reproducible.environment(device, train.threads), **made.tags(),
                           replicates.ROLE_TAG: "seed"})
            runs.log_dataset_input(provenance, params.paths.train_data, context="training")
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
            weights = folder / f"seed-{train.seed}.pt"
            save_torch(weights_file.state(model), weights)
            card = {**made.card(), "weights_sha256": sha256_file(weights)}  # evaluate checks the weights by it
            runs.set_tags({runs.WEIGHTS_TAG: card["weights_sha256"]})  # the run is found by it
            write_json(folder / f"seed-{train.seed}.json", {**card, "seed": train.seed,
                                                            **final_validation(progress.scores)})
    return weights, card, history, progress.scores


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
    made = record.record(train, provenance["digest"])
    held = f", {len(validation[1]):,} held out for validation" if validation else ", none held out"
    seeds = f"seed {train.seed}" if train.replicates == 1 else \
        f"seeds {train.seeds[0]} to {train.seeds[-1]} (replicates, group {replicates.group_key(train)})"
    print(f"train: {train.model} ({made.params:,} parameters, {made.macs / 1e6:.2f}M multiply-adds per image) "
          f"on {device}, {len(labels):,} images{held}, {train.epochs} epoch(s), {seeds}", file=sys.stderr)
    if made.params > params.gate.max_params:  # said, not refused: an experiment may explore past the budget
        print(f"train: warning: {made.params:,} parameters is over gate.max_params = {params.gate.max_params:,}:"
              " the gate will refuse this model (`make budget` counts an architecture in a second)",
              file=sys.stderr)
    with atomic_outputs() as stage:  # every seed's outputs, or (failed, interrupted) none
        folder = stage(paths.replicate_models, folder=True)
        for number, seed in enumerate(train.seeds, 1):
            label = f"seed {seed} ({number}/{train.replicates}): " if train.replicates > 1 else ""
            one = train.model_copy(update={"seed": seed})
            weights, card, history, scores = train_seed(params, one, ((images, labels), validation, device),
                                                        provenance, folder, label)
            if seed == train.seed:  # the model the pipeline serves: the first seed's, whatever their number
                write_served(stage, paths, weights, card, history, scores)
    phases.mark("mlflow: run end")


if __name__ == "__main__":
    cli.run(main)
