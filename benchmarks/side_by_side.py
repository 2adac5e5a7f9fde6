"""Two trainings side by side against one alone, under each way OpenMP threads wait.

    python -m benchmarks.side_by_side [--images 15000] [--repeats 3]

Each cell trains the default recipe (params.yaml's train section) on the first
N training images in a fresh process with 2 threads; repetitions are
interleaved and medians reported, with the load average, since a shared
machine's spells of load hit every cell. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import sys, time, json
from mnistcnn.training import engine, reproducible
reproducible.configure(0)  # before any tensor work, as a stage
from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.params import config
params = config.load()
provenance = json.load(open(params.paths.provenance))
data = mnist.load_split(params.paths.train_data, "train", provenance, params.paths.provenance)
n = int(sys.argv[1])
images, labels = mnist.normalize(data["train_images"][:n]), data["train_labels"][:n]
reproducible.seed_everything(0)
engine.fit(models.build(params.train.architecture), params.train, images, labels, lambda row, seconds: None)
"""


# How idle OpenMP threads wait: libgomp's spin count (about 100,000 a millisecond), or sleep at once.
# stages/__init__ sets one before torch loads, unless the environment already holds either.
OPENMP_WAITS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
POLICIES = {"spin 3 ms (libgomp's default)": {"GOMP_SPINCOUNT": "300000"},
            "spin 0.1 ms (the stages')": {"GOMP_SPINCOUNT": "10000"},
            "sleep at once (PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"}}


def without_openmp_waits() -> dict[str, str]:
    """This process's environment less OPENMP_WAITS (which importing `stages` may have set)."""
    return {key: value for key, value in os.environ.items() if key not in OPENMP_WAITS}


def timed(policy: str, images: int, together: int) -> float:
    """Wall seconds for `together` trainings started at once under `policy`."""
    env = {**without_openmp_waits(), **POLICIES[policy]}
    start = time.perf_counter()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(images)], env=env) for _ in range(together)]
    if any(child.wait() != 0 for child in children):
        sys.exit("side_by_side: a training failed")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=15_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cells = {(policy, n): [] for policy in POLICIES for n in (1, 2)}
    for _ in range(args.repeats):
        for policy, n in cells:
            cells[policy, n].append(timed(policy, args.images, n))
    print(f"load average {os.getloadavg()[0]:.1f}; medians of {args.repeats}\n")
    print("| OpenMP waits | one alone | two side by side | side by side ÷ one after the other |")
    print("| --- | ---: | ---: | ---: |")
    for policy in POLICIES:
        alone, pair = statistics.median(cells[policy, 1]), statistics.median(cells[policy, 2])
        print(f"| {policy} | {alone:.1f} s | {pair:.1f} s | {pair / (2 * alone):.2f}x |")


if __name__ == "__main__":
    main()
