"""make bench-kernels: what the portable CPU code paths cost, against this machine's native ones.

The training loop (one epoch on the real MNIST, as the train stage runs it) of the default recipe
and of cnn24k's reference recipe, with `train.kernels: portable` and `native`, each in a fresh
process, alternating, medians of --repeats. Writes benchmarks/kernels.json and prints a table
naming the machine. Needs the pipeline's data: run `make repro` first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

from benchmarks.bench import run_child, spec_for
from mnistcnn.params import config
from mnistcnn.training import engine

CELLS = [("quick25k", "quick25k"), ("cnn24k", "cnn24k-reference")]  # (model, recipe): the default, the 24k reference
MODES = ("portable", "native")


def measure(args) -> tuple[list[dict], dict[str, str]]:
    times = {(cell, mode): [] for cell in CELLS for mode in MODES}
    capability = {}
    for rep in range(args.repeats):
        for cell in CELLS:
            for mode in MODES if rep % 2 == 0 else MODES[::-1]:  # neither mode always runs first
                spec = {**spec_for(cell[0], "engine", cell[1], args), "kernels": mode}
                result = run_child(spec)
                times[(cell, mode)].append(result["seconds"])
                capability[mode] = result["cpu_capability"]
                print(f"bench-kernels: {rep + 1}/{args.repeats} {cell[1]} {mode}: {result['seconds']:.2f} s",
                      file=sys.stderr)
    rows = []
    for cell in CELLS:
        portable, native = (statistics.median(times[(cell, mode)]) for mode in MODES)
        rows.append({"model": cell[0], "recipe": cell[1], "portable_seconds": portable, "native_seconds": native,
                     "cost": portable / native - 1, "portable_runs": times[(cell, "portable")],
                     "native_runs": times[(cell, "native")]})
    return rows, capability


def main() -> None:
    params = config.load()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=params.train.threads)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/kernels.json"))
    args = parser.parse_args()
    paths = params.paths
    args.train_data, args.test_data, args.provenance = paths.train_data, paths.test_data, paths.provenance
    args.raw, args.limit = paths.raw, None
    rows, capability = measure(args)
    machine = {"cpu": engine.cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
               "native_capability": capability["native"], "portable_capability": capability["portable"]}
    args.out.write_text(json.dumps({"machine": machine, "repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    print(f"{machine['cpu']}, {args.threads} threads, torch {torch.__version__}; native: torch's "
          f"{capability['native']} kernels; medians of {args.repeats}, one epoch's training loop\n")
    print("| recipe | portable s | native s | portable costs |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['recipe']} | {r['portable_seconds']:.2f} | {r['native_seconds']:.2f} | {r['cost']:+.1%} |")


if __name__ == "__main__":
    main()
