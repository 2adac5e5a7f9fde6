"""The benchmark runs end to end on a few synthetic batches (the figures themselves come from `make bench`)."""

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import bench, loops, pipeline
from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.outputs import save_torch, sha256_file
from tests.conftest import FILE_NAMES, ROOT, write_mnist


def synthetic_dataset(folder):
    write_mnist(folder / "raw", n_train=256, n_test=100)
    decoded = {}
    for key, name in FILE_NAMES.items():
        content = mnist.decompress((folder / "raw" / name).read_bytes(), name)
        decoded[key] = mnist.decode_idx(content, key.split("_")[1], name)
    digests = {}
    for split, tensors in mnist.split_files(decoded).items():
        save_torch(tensors, folder / f"{split}.pt")
        digests[f"{split}_sha256"] = sha256_file(folder / f"{split}.pt")
    (folder / "provenance.json").write_text(json.dumps(digests))


def test_smoke_run_writes_every_figure(tmp_path):
    synthetic_dataset(tmp_path)
    out = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks.bench", "--smoke", "--models", "cnn9k", "tiny10k",
               "--train-data", str(tmp_path / "train.pt"),
               "--test-data", str(tmp_path / "test.pt"), "--provenance", str(tmp_path / "provenance.json"), "--raw", str(tmp_path / "raw"), "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = {(r["model"], r["loop"], r["hyperparameters"]): r for r in report["rows"]}
    assert set(rows) == {("cnn9k", "reference", "cnn9k-reference"), ("cnn9k", "engine", "cnn9k-reference"),
                         ("cnn9k", "engine", "quick25k"), ("tiny10k", "engine", "tiny10k")}
    for row in rows.values():
        assert row["images_per_s"] > 0 and 0 <= row["test_accuracy"] <= 1 and row["peak_rss_mb"] > 0
        assert 0 < row["fraction_of_matmul"] and math.isfinite(row["train_gflops"])
    assert rows[("cnn9k", "engine", "cnn9k-reference")]["speedup_vs_reference"] > 0
    assert rows[("cnn9k", "reference", "cnn9k-reference")]["speedup_vs_reference"] is None
    assert report["matmul_gflops"] > 0 and "| cnn9k | reference |" in result.stdout


def test_summary_takes_medians_and_the_speedup_over_the_same_images(monkeypatch):
    """1,000 images: the reference takes 10 s a repetition, the engine 5 s, once 50 s (a slow spell)."""
    monkeypatch.setattr(loops, "train_flops_per_image", lambda model, batch_size: 1e6)
    spec = {"train": {"batch_size": 64}}

    def results(seconds, rss):
        return [{"seconds": s, "images_per_s": 1000 / s, "accuracy": 0.9, "peak_rss_mb": r}
                for s, r in zip(seconds, rss)]

    reference = bench.summarise("cnn9k", "reference", "h", spec, results([10, 10, 10], [100, 300, 200]),
                                matmul=1e9, baseline=None)
    fast = bench.summarise("cnn9k", "engine", "h", spec, results([5, 50, 5], [100, 100, 100]),
                           matmul=1e9, baseline=reference["images_per_s"])
    assert reference["epoch_seconds"] == 10 and reference["peak_rss_mb"] == 300
    assert reference["speedup_vs_reference"] is None
    assert fast["epoch_seconds"] == 5 and fast["speedup_vs_reference"] == pytest.approx(2.0)
    assert fast["train_gflops"] == pytest.approx(0.2) and fast["fraction_of_matmul"] == pytest.approx(0.2)
    assert fast["repetitions"] == [5, 50, 5]


def test_flop_count_matches_the_arithmetic_of_a_single_linear_layer():
    layer = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, models.NUM_CLASSES))
    # forward x @ W: 2*784*10 per image; backward: the weight gradient only (the input needs none)
    assert loops.train_flops_per_image(layer, batch_size=8) == 2 * 2 * 784 * 10


def test_timed_module_adds_every_call_to_its_clock():
    clock = [0.0]
    timed = pipeline.Timed(time, clock)
    timed.sleep(0.02)
    assert timed.perf_counter() > 0 and 0.02 <= clock[0] < 1
    assert timed.CLOCK_MONOTONIC == time.CLOCK_MONOTONIC  # plain attributes pass through untimed
