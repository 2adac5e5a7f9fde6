"""train stage: train the model params.yaml names, log it to MLflow, write its weights.

It reads the training images only (the test images are another file, evaluate's),
holds out train.validation.size of them, and scores the model on those as it trains.
Outputs (paths in params.yaml): the weights as a state dict (load it with
`weights_only=True`), a model card declaring the architecture and the weights'
SHA-256, the final train and validation metrics, the per-epoch history and the
validation curve. None of
them names the MLflow run, which differs from one reproduction to the next: the
run is tagged with the weights' SHA-256 and found by it (runs.training_run).
"""

from __future__ import annotations

import sys

from mnistcnn import cli, phases
from mnistcnn.data import mnist
from mnistcnn.model import arch, models
from mnistcnn.outputs import atomic_outputs, read_json, save_torch, sha256_file, write_json
from mnistcnn.params import config
from mnistcnn.params.schema import PathsParams
from mnistcnn.tracking import runs
from mnistcnn.training import engine, reproducible


def write_outputs(paths: PathsParams, model, card: dict, history: list[dict], scores: list[dict]) -> None:
    """The stage's five outputs, written together: all new, or (failed, interrupted) none."""
    final = history[-1]
    with atomic_outputs() as stage:
        weights = stage(paths.model)
        save_torch(model.cpu().state_dict(), weights)
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
    provenance = read_json(paths.provenance, produced_by="download")
    data = mnist.load_split(paths.train_data, "train", provenance, paths.provenance)  # never the test file
    reproducible.seed_everything(train.seed)
    device = engine.pick_device(train.device)
    (images, labels), validation = mnist.train_and_validation(data, train.validation, device)
    phases.mark("data")
    # torch.optim's first optimizer, and the model export, import torch's compiler stack (0.8 s on
    # 2 cores); imported here, its time is a phase of its own rather than part of the training loop's.
    import torch._dynamo  # noqa: F401, PLC0415

    phases.mark("torch's compiler stack (optimizer, export)")
    declared = train.architecture
    model = models.build(declared, train.dropout).to(device)
    n_params, macs = models.count_parameters(model), arch.count_macs(declared)
    dropout = models.rate(declared, train.dropout)
    scores = []

    def on_epoch(row: dict, seconds: float) -> None:
        print(f"train: epoch {row['epoch']}/{train.epochs} loss {row['loss']:.4f} "
              f"accuracy {row['accuracy']:.4f} ({seconds:.1f} s)", file=sys.stderr)
        runs.log_metrics({"train/loss": row["loss"], "train/accuracy": row["accuracy"],
                              "train/epoch_seconds": seconds}, step=row["step"])

    def on_score(row: dict) -> None:
        scores.append(row)
        print(f"train: step {row['step']} (epoch {row['epoch']:.2f}) validation loss {row['loss']:.4f} "
              f"accuracy {row['accuracy']:.4f}", file=sys.stderr)
        runs.log_metrics({"val/loss": row["loss"], "val/accuracy": row["accuracy"]}, step=row["step"])

    with runs.run(params.tracking.experiment, stage="train", run_name=runs.run_name(train)):
        runs.log_params({**config.as_dict(train), "arch": declared.model_dump(), "dropout": dropout,
                             "param_count": n_params, "macs": macs})
        runs.set_tags({**reproducible.environment(device, images, train.threads), "model": train.model,
                           "arch.digest": config.digest(declared), "params.digest": config.digest(train),
                           "dataset.digest": provenance["digest"]})
        runs.log_dataset_input(provenance, paths.train_data, context="training")
        held = f", {len(validation[1]):,} held out for validation" if validation else ", none held out"
        print(f"train: {train.model} ({n_params:,} parameters, {macs / 1e6:.2f}M multiply-adds per image) "
              f"on {device}, {len(labels):,} images{held}, {train.epochs} epoch(s)", file=sys.stderr)
        phases.mark("mlflow: run start, params, dataset")
        with reproducible.nondeterministic_kernels() as kernels:
            history = engine.fit(model, train, images, labels, on_epoch, validation, on_score)
        if kernels:
            print(f"train: ran without a deterministic kernel: {', '.join(sorted(kernels))}; "
                  "the weights may differ between runs", file=sys.stderr)
            runs.set_tags(reproducible.determinism(kernels))
        phases.mark("training loop")
        runs.log_model(model, images[:runs.EXAMPLE_IMAGES])
        phases.mark("mlflow: model export and logging")

        card = {"model": train.model, "arch": declared.model_dump(), "dropout": dropout, "params": n_params,
                "macs": macs, "dataset_digest": provenance["digest"]}
        write_outputs(paths, model, card, history, scores)
        phases.mark("outputs")
    phases.mark("mlflow: run end")


if __name__ == "__main__":
    cli.run(main)
