"""Validation and test accuracy of a recipe, seed by seed, trained as the train stage trains it.

    python -m benchmarks.holdout quick25k --seeds 0 1 2 --sizes 5000 0

For each train.validation.size (5000: held out, the default; 0: all 60,000 training images)
and seed: the recipe over params.yaml, the same split, model, engine and kernel settings as
`dvc repro`, so seed 0 of the default gives the weights dvc.lock records. One JSON line each:
the final validation accuracy (none when nothing is held out), the test accuracy at the final
epoch, and the weights' SHA-256. The README's tables of held-out against refitted come from it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.model import weights as weights_file
from mnistcnn.outputs import save_torch, sha256_file
from mnistcnn.params import config, recipes
from mnistcnn.training import engine, reproducible


def load_data() -> tuple[dict, tuple]:
    """params.yaml's kernels pinned (before any tensor work, as train), then the training tensors
    and the normalised test set."""
    params = config.load()
    reproducible.configure(params.train.threads, params.train.kernels)
    paths, provenance = params.paths, json.loads(params.paths.provenance.read_text())
    data = mnist.load_split(paths.train_data, "train", provenance, paths.provenance)
    test = mnist.load_split(paths.test_data, "test", provenance, paths.provenance)
    return data, (mnist.normalize(test["test_images"]), test["test_labels"])


def score(raw: dict, data: dict, test: tuple) -> dict:
    """Train one train section (raw, as params.yaml holds it) as the stage does; its final validation
    and test accuracy and loss, and the weights' SHA-256."""
    train = config.parse_train(raw)
    reproducible.seed_everything(train.seed)
    (images, labels), validation = mnist.train_and_validation(data, train.validation, "cpu")  # the stage's own
    model, scores, start = models.build(train.architecture, train.dropout), [], time.perf_counter()
    engine.fit(model, train, images, labels, lambda row, seconds: None, validation, scores.append)
    result = engine.evaluate(model, *test, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        save_torch(weights_file.state(model), Path(tmp) / "model.pt")  # as the train stage writes it
        weights = sha256_file(Path(tmp) / "model.pt")
    return {"seed": train.seed, "val": scores[-1]["accuracy"] if scores else None,
            "val_loss": scores[-1]["loss"] if scores else None, "test": result.accuracy, "test_loss": result.loss,
            "weights_sha256": weights, "seconds": round(time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 0], help="train.validation.size values")
    args = parser.parse_args()
    data, test = load_data()
    for size in args.sizes:
        for seed in args.seeds:
            raw = recipes.train_section(args.recipe)
            row = score({**raw, "seed": seed, "validation": {**raw["validation"], "size": size}}, data, test)
            print(json.dumps({"recipe": args.recipe, "size": size, **row}), flush=True)


if __name__ == "__main__":
    main()
