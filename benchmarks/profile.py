"""Where a training step's time goes: `python -m benchmarks.profile [MODEL] [BATCH] [--shapes]`.

Profiles the engine's own train_epoch over STEPS synthetic batches with torch.profiler, set up as
the train stage sets itself up (portable kernels, params.yaml's threads, the engine's memory
format), and prints the operators that took the most time (by input shape with --shapes), so a
missed speed target is explained by measurement rather than by guess. docs/speed.md shows one.
"""

from __future__ import annotations

import argparse

from mnistcnn.params import config
from mnistcnn.training import reproducible

STEPS = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="quick25k")
    parser.add_argument("batch_size", nargs="?", type=int, default=128)
    parser.add_argument("--shapes", action="store_true", help="one row per operator and input shape")
    args = parser.parse_args()
    threads = reproducible.configure(config.load().train.threads, "portable")  # before any tensor work

    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    from mnistcnn.model import models  # noqa: PLC0415
    from mnistcnn.training import engine, optim  # noqa: PLC0415

    torch.manual_seed(0)
    model = models.build_named(args.model).to(memory_format=engine.MEMORY_FORMAT)
    optimizer = optim.make_optimizer("adam", model.parameters(), 1e-3)
    images = torch.randn(args.batch_size * STEPS, 1, 28, 28)
    labels = torch.randint(0, models.NUM_CLASSES, (args.batch_size * STEPS,))
    generator = torch.Generator().manual_seed(0)
    batch = slice(0, 2 * args.batch_size)
    engine.train_epoch(model, optimizer, images[batch], labels[batch], args.batch_size, generator)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        engine.train_epoch(model, optimizer, images, labels, args.batch_size, generator)
    print(f"{args.model}, batch {args.batch_size}, {threads} threads, {STEPS} steps, {engine.MEMORY_FORMAT}")
    print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
