"""The benchmark runs end to end on a few synthetic batches (the figures themselves come from `make bench`)."""

import json
import math
import subprocess
import sys
import time

import torch

from benchmarks import loops, pipeline
from mnistcnn import mnist, models
from tests.conftest import FILE_NAMES, ROOT, write_mnist


def synthetic_dataset(folder):
    write_mnist(folder / "raw", n_train=256, n_test=100)
    decoded = {}
    for key, name in FILE_NAMES.items():
        content = mnist.decompress((folder / "raw" / name).read_bytes(), name)
        decoded[key] = mnist.decode_idx(content, key.split("_")[1], name)
    torch.save(decoded, folder / "mnist.pt")


def test_smoke_run_writes_every_figure(tmp_path):
    synthetic_dataset(tmp_path)
    out = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks.bench", "--smoke", "--models", "cnn9k", "tiny10k",
               "--dataset", str(tmp_path / "mnist.pt"), "--raw", str(tmp_path / "raw"), "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = {(r["model"], r["loop"], r["hyperparameters"]): r for r in report["rows"]}
    assert set(rows) == {("cnn9k", "reference", "cnn9k-reference"), ("cnn9k", "engine", "cnn9k-reference"),
                         ("cnn9k", "engine", "quick25k"), ("tiny10k", "engine", "tiny10k")}
    for row in rows.values():
        assert row["images_per_s"] > 0 and 0 <= row["test_accuracy"] <= 1 and row["peak_rss_mb"] > 0
        assert 0 < row["fraction_of_matmul"] and math.isfinite(row["train_gflops"])
    engine_row = rows[("cnn9k", "engine", "cnn9k-reference")]
    assert engine_row["speedup_vs_reference"] == engine_row["images_per_s"] / rows[
        ("cnn9k", "reference", "cnn9k-reference")]["images_per_s"]
    assert report["matmul_gflops"] > 0 and "| cnn9k | reference |" in result.stdout


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
