"""Where a training step's time goes: `python -m benchmarks.profile cnn24k [batch_size]`.

Profiles the engine's own train_epoch over a few synthetic batches with
torch.profiler and prints the operators that took the most time, so a missed
speed target can be explained by measurement rather than by guess.
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from mnistcnn.model import models
from mnistcnn.training import engine, optim

STEPS = 20


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "cnn24k"
    batch_size = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    torch.manual_seed(0)
    model = models.build_named(name)
    optimizer = optim.make_optimizer("adam", model.parameters(), 1e-3)
    images = torch.randn(batch_size * STEPS, 1, 28, 28)
    labels = torch.randint(0, models.NUM_CLASSES, (batch_size * STEPS,))
    generator = torch.Generator().manual_seed(0)
    engine.train_epoch(model, optimizer, images[: 2 * batch_size], labels[: 2 * batch_size], batch_size, generator)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.train_epoch(model, optimizer, images, labels, batch_size, generator)
    print(f"{name}, batch {batch_size}, {torch.get_num_threads()} threads, {STEPS} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
