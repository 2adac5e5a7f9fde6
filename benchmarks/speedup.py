"""make bench-speedup: one epoch of each recipe, this checkout's engine against an earlier commit's.

`python -m benchmarks.speedup --before REV`: REV's tree is exported to a scratch folder and each
epoch runs in a fresh process (benchmarks.loops, the engine as the train stage runs it, portable
kernels, each commit's own process settings: stages/__init__), from that folder for *before*
and from here for *after*, alternating, each order half the time; medians of --repeats.
Reports the GFLOP/s each reached (the training step's FLOPs, counted by torch's
FlopCounterMode, times images a second) and their share of the machine's peak at AVX2:
cores x 2 FMA units x 8 fp32 lanes x 2 FLOPs x the clock /proc/cpuinfo names.
Writes benchmarks/speedup.json and prints a Markdown table naming the machine. Needs the
pipeline's data: run `make repro` first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

from benchmarks.bench import run_child, spec_for
from benchmarks.loops import train_flops_per_image
from benchmarks.side_by_side import without_openmp_waits
from mnistcnn.model import arch
from mnistcnn.params import config, recipes
from mnistcnn.training import engine

RECIPES = [("quick25k", "quick25k"), ("tiny10k", "tiny10k"), ("cnn24k", "cnn24k-reference")]  # (model, recipe)
SIDES = ("before", "after")


def export(rev: str, folder: Path) -> None:
    """The tree of commit `rev` written into `folder`."""
    archive = subprocess.run(["git", "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")


def avx2_peak(cores: int) -> float:
    """FLOP/s at AVX2 with FMA: two FMA units a core, 8 fp32 lanes each, 2 FLOPs an FMA, at the clock."""
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("cpu MHz")]
    return cores * 2 * 8 * 2 * statistics.median(mhz) * 1e6


def measure(args, before: Path) -> tuple[dict, int]:
    """Each (recipe, side)'s epoch seconds, and the images an epoch trains."""
    env = without_openmp_waits()  # so that each commit's own entry points decide how threads wait
    specs = {recipe: {**spec_for(model, "engine", recipe, args), "kernels": "portable"} for model, recipe in RECIPES}
    seconds = {(recipe, side): [] for recipe in specs for side in SIDES}
    for rep in range(args.repeats):
        for recipe, spec in specs.items():
            for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                result = run_child(spec, cwd=before if side == "before" else Path.cwd(), env=env)
                seconds[(recipe, side)].append(result["seconds"])
                images = round(result["images_per_s"] * result["seconds"])
                print(f"speedup: {rep + 1}/{args.repeats} {recipe} {side}: {result['seconds']:.2f} s", file=sys.stderr)
    return seconds, images


def rows(seconds: dict, images: int, peak: float) -> list[dict]:
    out = []
    for model, recipe in RECIPES:
        batch = recipes.train_section(recipe)["batch_size"]
        flops = train_flops_per_image(model, batch)
        before, after = (statistics.median(seconds[(recipe, side)]) for side in SIDES)
        out.append({"model": model, "recipe": recipe, "batch_size": batch, "macs": arch.count_macs(arch.NAMED[model]),
                    "before_seconds": before, "after_seconds": after, "speedup": before / after,
                    "before_gflops": flops * images / before / 1e9, "after_gflops": flops * images / after / 1e9,
                    "after_of_peak": flops * images / after / peak,
                    "before_runs": seconds[(recipe, "before")], "after_runs": seconds[(recipe, "after")]})
    return out


def main() -> None:
    params = config.load()
    paths = params.paths
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare with (a hash, tag or branch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=params.train.threads)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/speedup.json"))
    args = parser.parse_args()
    args.train_data, args.test_data, args.provenance = (Path.cwd() / p for p in
                                                        (paths.train_data, paths.test_data, paths.provenance))
    args.raw, args.limit = Path.cwd() / paths.raw, None
    with tempfile.TemporaryDirectory() as tmp:
        export(args.before, Path(tmp))
        seconds, images = measure(args, Path(tmp))
    peak = avx2_peak(min(args.threads, os.cpu_count() or 1))
    table = rows(seconds, images, peak)
    machine = {"cpu": engine.cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
               "torch": torch.__version__, "avx2_peak_gflops": peak / 1e9}
    args.out.write_text(json.dumps({"machine": machine, "before": args.before, "repeats": args.repeats,
                                    "images_per_epoch": images, "rows": table}, indent=2) + "\n")
    print(f"{machine['cpu']}, {args.threads} threads, torch {torch.__version__}; one epoch of {images:,} images, "
          f"portable kernels, medians of {args.repeats}; AVX2 peak {peak / 1e9:.0f} GFLOP/s\n")
    print("| recipe | batch | before s | after s | speed-up | GFLOP/s before | after | of AVX2 peak |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in table:
        print(f"| {r['recipe']} | {r['batch_size']} | {r['before_seconds']:.2f} | {r['after_seconds']:.2f} "
              f"| {r['speedup']:.2f}x | {r['before_gflops']:.1f} | {r['after_gflops']:.1f} | {r['after_of_peak']:.0%} |")


if __name__ == "__main__":
    main()
