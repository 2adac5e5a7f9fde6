"""train stage: train the model params.yaml names, log it to MLflow, write its weights.

Outputs (paths in params.yaml): the weights as a state dict (load it with
`weights_only=True`), a model card naming the architecture and the weights'
SHA-256, the final epoch's train metrics, and the per-epoch history. None of
them names the MLflow run, which differs from one reproduction to the next: the
run is tagged with the weights' SHA-256 and found by it (tracking.training_run).
"""

from __future__ import annotations

import sys

from mnistcnn import cli, config, engine, mnist, models, phases, reproducible, tracking
from mnistcnn.outputs import atomic_outputs, read_json, save_torch, sha256_file, write_json
from mnistcnn.schema import PathsParams


def write_outputs(paths: PathsParams, model, card: dict, history: list[dict]) -> None:
    """The stage's four outputs, written together: all new, or (failed, interrupted) none."""
    final = history[-1]
    with atomic_outputs() as stage:
        weights = stage(paths.model)
        save_torch(model.cpu().state_dict(), weights)
        card = {**card, "weights_sha256": sha256_file(weights)}  # evaluate checks the weights by it
        tracking.set_tags({tracking.WEIGHTS_TAG: card["weights_sha256"]})  # the run is found by it
        write_json(stage(paths.model_card), card)
        write_json(stage(paths.train_history), history)
        write_json(stage(paths.train_metrics), {"loss": final["loss"], "accuracy": final["accuracy"],
                                                "params": card["params"]})


def main() -> None:
    params = config.load()
    train, paths = params.train, params.paths
    tracking.connect()  # before any work: a tracking server that is down fails the stage in seconds
    reproducible.configure(train.threads, train.kernels)  # before any tensor work, which fixes the kernels
    provenance = read_json(paths.provenance, produced_by="download")
    dataset = mnist.load_dataset(paths.dataset, provenance, paths.provenance)
    reproducible.seed_everything(train.seed)
    device = engine.pick_device(train.device)
    images = mnist.normalize(dataset["train_images"]).to(device)
    labels = dataset["train_labels"].to(device)
    phases.mark("data")
    # torch.optim's first optimizer, and the model export, import torch's compiler stack (0.8 s on
    # 2 cores); imported here, its time is a phase of its own rather than part of the training loop's.
    import torch._dynamo  # noqa: F401, PLC0415

    phases.mark("torch's compiler stack (optimizer, export)")
    model = models.build(train.model, train.dropout).to(device)
    n_params = models.count_parameters(model)
    dropout = models.resolve_dropout(train.model, train.dropout)

    def on_epoch(row: dict, seconds: float) -> None:
        print(f"train: epoch {row['epoch']}/{train.epochs} loss {row['loss']:.4f} "
              f"accuracy {row['accuracy']:.4f} ({seconds:.1f} s)", file=sys.stderr)
        tracking.log_metrics({"train/loss": row["loss"], "train/accuracy": row["accuracy"],
                              "train/epoch_seconds": seconds}, step=row["epoch"])

    with tracking.run(params.tracking.experiment, stage="train", run_name=tracking.run_name(train)):
        tracking.log_params({**config.as_dict(train), "dropout": dropout, "param_count": n_params})
        tracking.set_tags({**reproducible.environment(device, images, train.threads), "model": train.model,
                           "params.digest": config.digest(train), "dataset.digest": provenance["digest"]})
        tracking.log_dataset_input(provenance, paths.dataset, context="training")
        print(f"train: {train.model} ({n_params:,} parameters) on {device}, "
              f"{len(labels):,} images, {train.epochs} epoch(s)", file=sys.stderr)
        phases.mark("mlflow: run start, params, dataset")
        with reproducible.nondeterministic_kernels() as kernels:
            history = engine.fit(model, train, images, labels, on_epoch)
        if kernels:
            print(f"train: ran without a deterministic kernel: {', '.join(sorted(kernels))}; "
                  "the weights may differ between runs", file=sys.stderr)
            tracking.set_tags(reproducible.determinism(kernels))
        phases.mark("training loop")
        tracking.log_model(model, mnist.normalize(dataset["test_images"][:tracking.EXAMPLE_IMAGES]))
        phases.mark("mlflow: model export and logging")

        card = {"model": train.model, "dropout": dropout, "params": n_params, "dataset_digest": provenance["digest"]}
        write_outputs(paths, model, card, history)
        phases.mark("outputs")
    phases.mark("mlflow: run end")


if __name__ == "__main__":
    cli.run(main)
