"""The validation split: held out of the training images, the same in every run, scored as train
trains; and the test images, which only evaluate reads."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from torch.nn import functional as F

from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.params import config
from mnistcnn.training import engine
from tests.conftest import ROOT, make_repo, sh, synthetic_split


def uneven_labels(n: int = 1000) -> torch.Tensor:
    """Labels whose digits are not equally common (digit d about d + 1 times as often as 0)."""
    weights = torch.arange(1, 11, dtype=torch.float)
    return torch.multinomial(weights, n, replacement=True, generator=torch.Generator().manual_seed(3))


def test_the_split_is_disjoint_complete_stable_and_stratified():
    labels = uneven_labels()
    kept, held = mnist.validation_split(labels, 100, seed=0)
    assert len(held) == 100 and len(kept) == 900
    assert set(kept.tolist()).isdisjoint(held.tolist()) and sorted(kept.tolist() + held.tolist()) == list(range(1000))
    again_kept, again_held = mnist.validation_split(labels, 100, seed=0)
    assert torch.equal(again_held, held) and torch.equal(again_kept, kept)
    assert not torch.equal(mnist.validation_split(labels, 100, seed=1)[1], held)  # the seed chooses the images
    counts, held_counts = torch.bincount(labels, minlength=10), torch.bincount(labels[held], minlength=10)
    assert ((held_counts - counts * 100 / 1000).abs() < 1).all()  # each digit its share, to the image


def test_no_images_held_out_keeps_every_one_in_order_and_too_many_is_a_keyed_error():
    labels = uneven_labels(50)
    kept, held = mnist.validation_split(labels, 0, seed=0)
    assert torch.equal(kept, torch.arange(50)) and len(held) == 0
    with pytest.raises(config.ParamsError, match="train.validation.size = 50: must be below the 50 training images"):
        mnist.validation_split(labels, 50, seed=0)


def train_params(**changes) -> config.TrainParams:
    raw = config.read_yaml("params.yaml")["train"]
    return config.parse_train({**raw, "model": "cnn9k", "batch_size": 32, "device": "cpu", **changes})


def fitted(train, images, labels, validation=None) -> tuple[dict, list[dict]]:
    torch.manual_seed(train.seed)
    model, scores = models.build(train.architecture, train.dropout), []
    engine.fit(model, train, images, labels, lambda row, seconds: None, validation, scores.append)
    return model.state_dict(), scores


def test_scoring_as_it_trains_changes_no_weight_and_comes_evenly_spaced_by_step():
    images, labels = synthetic_split(200, seed=1)
    images, labels = mnist.normalize(images), labels.long()
    train = train_params(epochs=2, validation={"size": 40, "seed": 0, "per_epoch": 3})
    plain, _ = fitted(train, images[:160], labels[:160])
    scored, scores = fitted(train, images[:160], labels[:160], (images[160:], labels[160:]))
    assert all(torch.equal(plain[k], scored[k]) for k in plain)
    assert [row["step"] for row in scores] == [2, 4, 5, 7, 9, 10]  # 5 steps an epoch, scored at 2/5, 4/5, 5/5
    assert [row["epoch"] for row in scores] == [0.4, 0.8, 1.0, 1.4, 1.8, 2.0]
    assert engine.scoring_steps(3, 10) == [1, 2, 3]  # never more scorings than steps


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """A repository after its download stage, on the synthetic mirror."""
    repo, env = make_repo(tmp_path_factory.mktemp("validation"))
    sh("dvc", "repro", "download", cwd=repo, env=env)
    return repo, env


def test_train_reads_no_test_image_and_its_validation_metrics_are_the_held_out_images(downloaded):
    repo, env = downloaded
    lock = yaml.safe_load((repo / "dvc.yaml").read_text())
    assert "${paths.test_data}" not in lock["stages"]["train"]["deps"]  # DVC reruns train for no test change
    test_file = repo / "data/test.pt"
    kept_aside = test_file.read_bytes()
    test_file.unlink()  # what train cannot open, it cannot read
    try:
        result = subprocess.run([sys.executable, "-m", "stages.train"], cwd=repo, env=env, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
    finally:
        test_file.write_bytes(kept_aside)
    assert "500 images, 100 held out for validation" in result.stderr

    # An independent computation: the held-out images scored one by one by the saved weights.
    params = config.load(repo / "params.yaml")
    provenance = json.loads((repo / "data/provenance.json").read_text())
    data = mnist.load_split(repo / "data/train.pt", "train", provenance, "provenance.json")
    _, held = mnist.validation_split(data["train_labels"], params.train.validation.size, params.train.validation.seed)
    model = models.build(params.train.architecture, params.train.dropout)
    model.load_state_dict(torch.load(repo / "models/model.pt", weights_only=True))
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(mnist.normalize(data["train_images"][i:i + 1])) for i in held.tolist()])
    targets = data["train_labels"][held]
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert metrics["val_accuracy"] == (logits.argmax(1) == targets).sum().item() / len(held)
    assert metrics["val_loss"] == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-5)
    scores = json.loads((repo / "metrics/val_history.json").read_text())
    assert scores[-1]["accuracy"] == metrics["val_accuracy"] and scores[-1]["step"] == 16


def test_a_validation_split_larger_than_the_training_set_is_a_keyed_error(downloaded):
    repo, env = downloaded
    params = yaml.safe_load((repo / "params.yaml").read_text())
    original = (repo / "params.yaml").read_text()
    params["train"]["validation"]["size"] = 600
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = subprocess.run([sys.executable, "-m", "stages.train"], cwd=repo, env=env, capture_output=True,
                                text=True)
    finally:
        (repo / "params.yaml").write_text(original)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train.validation.size = 600: must be below the 600 training images" in result.stderr


def test_the_holdout_benchmark_trains_the_stages_weights_and_scores_both_ways(downloaded, tmp_path):
    """benchmarks/holdout.py, behind the README's held-out against refitted table, trains what the
    train stage trains: its held-out run of params.yaml's recipe has the stage's weights."""
    repo, env = downloaded
    sh(sys.executable, "-m", "stages.train", cwd=repo, env=env)
    card = json.loads((repo / "models/model.json").read_text())
    (tmp_path / "as-is.yaml").write_text("train: {}\n")  # params.yaml's train section, unchanged
    out = sh(sys.executable, "-m", "benchmarks.holdout", str(tmp_path / "as-is.yaml"), "--seeds", "0",
             "--sizes", "100", "0", cwd=repo, env={**env, "PYTHONPATH": str(ROOT)})
    held_out, refitted = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert held_out["weights_sha256"] == card["weights_sha256"]
    assert held_out["val"] == json.loads((repo / "metrics/train.json").read_text())["val_accuracy"]
    assert refitted["val"] is None and refitted["weights_sha256"] != card["weights_sha256"]
    assert 0 <= held_out["test"] <= 1 and 0 <= refitted["test"] <= 1
