"""The two training loops the benchmark compares, one measurement per process.

`reference` re-creates the reference scripts' way of training: torchvision's
per-image `datasets.MNIST` with `ToTensor()` and `Normalize`, a shuffling
`DataLoader`, and a `.item()` per step for the running loss and accuracy.
`engine` is the project's own train stage code (mnistcnn.training.engine.fit), unchanged.
Run as `python -m benchmarks.loops SPEC_JSON`; prints one JSON result line.
"""

from __future__ import annotations

import gzip
import json
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.params import config
from mnistcnn.training import engine, optim, reproducible


@contextmanager
def torchvision_mnist(raw: Path) -> Iterator[tuple[str, transforms.Compose]]:
    """A temporary root holding the `raw` .gz files decompressed where torchvision's MNIST looks,
    and the reference scripts' per-image transform."""
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root, "MNIST", "raw")
        folder.mkdir(parents=True)
        for gz in raw.glob("*.gz"):
            (folder / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
        yield root, transforms.Compose([transforms.ToTensor(), transforms.Normalize((mnist.MEAN,), (mnist.STD,))])


def reference_epoch(model, optimizer, raw: Path, batch_size: int, limit: int | None) -> float:
    """One epoch the reference way over torchvision's MNIST (decoded from `raw`); returns seconds."""
    with torchvision_mnist(raw) as (root, transform):
        dataset = datasets.MNIST(root, train=True, download=False, transform=transform)
        if limit:
            dataset = Subset(dataset, range(limit))
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
        start = time.perf_counter()
        model.train()
        running_loss, correct = 0.0, 0
        for data, target in loader:
            optimizer.zero_grad()
            output = model(data)
            loss = F.cross_entropy(output, target)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            correct += output.argmax(1).eq(target).sum().item()
        return time.perf_counter() - start


def train_flops_per_image(model: torch.nn.Module, batch_size: int) -> float:
    """Floating-point operations of one training step (forward and backward), per image."""
    model = models.build_named(model) if isinstance(model, str) else model
    x, y = torch.randn(batch_size, 1, 28, 28), torch.randint(0, models.NUM_CLASSES, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch_size


def measure(spec: dict) -> dict:
    """Train spec["train"] (a params.yaml train section) for one epoch by spec["loop"]; the engine
    with spec["kernels"] (portable, the default, or native), the reference as a plain script runs."""
    if spec["loop"] == "engine":  # set up as the train stage sets itself up, before any tensor work:
        reproducible.configure(spec["threads"], spec.get("kernels", "portable"))  # kernels, threads, no denormals
    else:
        torch.set_num_threads(spec["threads"])
    train = config.parse_train(spec["train"])
    torch.manual_seed(train.seed)
    provenance = json.loads(Path(spec["provenance"]).read_text())
    dataset = {**mnist.load_split(spec["train_data"], "train", provenance, spec["provenance"]),
               **mnist.load_split(spec["test_data"], "test", provenance, spec["provenance"])}
    device = engine.pick_device(train.device)
    model = models.build(train.architecture, train.dropout).to(device)
    limit = spec.get("limit")
    if spec["loop"] == "reference":
        optimizer = optim.make_optimizer(train.optimizer, model.parameters(), train.lr)
        seconds = reference_epoch(model, optimizer, Path(spec["raw"]), train.batch_size, limit)
        images = limit or len(dataset["train_labels"])
    else:
        images = mnist.normalize(dataset["train_images"][:limit]).to(device)
        labels = dataset["train_labels"][:limit].to(device)
        timings = []
        engine.fit(model, train, images, labels, on_epoch=lambda row, s: timings.append(s))
        seconds, images = timings[-1], len(labels)
    test_images = mnist.normalize(dataset["test_images"]).to(device)
    accuracy = engine.evaluate(model, test_images, dataset["test_labels"].to(device), 1000).accuracy
    return {
        "seconds": seconds,
        "images_per_s": images / seconds,
        "accuracy": accuracy,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def matmul_flops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """The machine's fp32 matrix-multiply rate (FLOP/s): median of `repeats` n x n products."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
