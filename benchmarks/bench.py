"""make bench: the reference scripts' training loop against the project's engine, side by side.

Every figure comes from one run on one machine: each configuration trains for
one epoch in a fresh process (so peak memory is its own), repeated and
interleaved, and the medians are reported next to the machine's measured fp32
matrix-multiply rate. Writes benchmarks/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks import e2e, loops, pipeline
from mnistcnn.params import config, recipes
from mnistcnn.training import engine

# (model, loop, hyperparameters): the recipe file whose train section is used, with the model swapped in.
CONFIGS = [
    ("cnn24k", "reference", "cnn24k-reference"),
    ("cnn24k", "engine", "cnn24k-reference"),
    ("cnn24k", "engine", "quick25k"),
    ("cnn9k", "reference", "cnn9k-reference"),
    ("cnn9k", "engine", "cnn9k-reference"),
    ("cnn9k", "engine", "quick25k"),
    ("quick25k", "engine", "quick25k"),
    ("tiny10k", "engine", "tiny10k"),
]


def spec_for(model: str, loop: str, hyper: str, args) -> dict:
    """The child's measurement: one epoch of `model` trained by `loop` with `hyper`'s recipe."""
    train = {**recipes.train_section(hyper), "model": model, "epochs": 1, "seed": 0}
    return {"loop": loop, "train": train, "threads": args.threads, "train_data": str(args.train_data),
            "test_data": str(args.test_data),             "provenance": str(args.provenance),
            "raw": str(args.raw), "limit": args.limit}


def run_child(spec: dict, cwd: Path | None = None, env: dict | None = None) -> dict:
    """One measurement by benchmarks.loops in a fresh process, run from `cwd` (another commit's tree)."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.loops", json.dumps(spec)],
                            capture_output=True, text=True, cwd=cwd, env=env)
    if result.returncode != 0:
        sys.exit(f"bench: {spec['loop']} {spec['train']['model']} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def summarise(model, loop, hyper, spec, results, matmul, baseline) -> dict:
    """Medians over the repetitions, and the figures derived from them."""
    median = {k: statistics.median(r[k] for r in results) for k in ("seconds", "images_per_s", "accuracy")}
    flops = loops.train_flops_per_image(model, spec["train"]["batch_size"])
    return {
        "model": model, "loop": loop, "hyperparameters": hyper, "batch_size": spec["train"]["batch_size"],
        "epoch_seconds": median["seconds"], "images_per_s": median["images_per_s"],
        "test_accuracy": median["accuracy"], "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "train_gflops": flops * median["images_per_s"] / 1e9,
        "fraction_of_matmul": flops * median["images_per_s"] / matmul,
        "speedup_vs_reference": median["images_per_s"] / baseline if baseline else None,
        "repetitions": [r["seconds"] for r in results],
    }


def table(rows: list[dict]) -> str:
    lines = ["| model | loop | hyperparameters | batch | epoch s | images/s | test acc | peak RSS MB "
             "| GFLOP/s | of matmul | vs reference |", "|" + " --- |" * 11]
    for r in rows:
        speedup = f"{r['speedup_vs_reference']:.2f}x" if r["speedup_vs_reference"] else "-"
        lines.append(f"| {r['model']} | {r['loop']} | {r['hyperparameters']} | {r['batch_size']} "
                     f"| {r['epoch_seconds']:.1f} | {r['images_per_s']:,.0f} | {r['test_accuracy']:.2%} "
                     f"| {r['peak_rss_mb']:,.0f} | {r['train_gflops']:.1f} | {r['fraction_of_matmul']:.0%} "
                     f"| {speedup} |")
    return "\n".join(lines)


def main() -> None:
    paths = config.load().paths
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models", nargs="+", default=sorted({c[0] for c in CONFIGS}))
    parser.add_argument("--train-data", type=Path, default=paths.train_data)
    parser.add_argument("--test-data", type=Path, default=paths.test_data)
    parser.add_argument("--provenance", type=Path, default=paths.provenance, help="the data files' SHA-256")
    parser.add_argument("--raw", type=Path, default=paths.raw)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--smoke", action="store_true", help="a few batches, one repetition: checks, not figures")
    args = parser.parse_args()
    args.limit = 256 if args.smoke else None
    repeats = 1 if args.smoke else args.repeats
    configs = [c for c in CONFIGS if c[0] in args.models]
    specs = [spec_for(*c, args) for c in configs]
    matmul = loops.matmul_flops(args.threads, n=256 if args.smoke else 2048)
    results = [[] for _ in configs]
    for rep in range(repeats):  # interleaved, so slow spells of a shared machine hit every configuration
        for i, (cell, spec) in enumerate(zip(configs, specs)):
            results[i].append(run_child(spec))
            print(f"bench: {rep + 1}/{repeats} {' '.join(cell)}: {results[i][-1]['seconds']:.1f} s",
                  file=sys.stderr)
    rows = []
    for cell, spec, result in zip(configs, specs, results):
        reference = next((r for r in rows if r["model"] == cell[0] and r["loop"] == "reference"), None)
        rows.append(summarise(*cell, spec, result, matmul, reference and reference["images_per_s"]))
    timings = end_to_end = None
    if not args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            print("bench: timing dvc repro and MLflow in a scratch copy", file=sys.stderr)
            repo = pipeline.scratch_copy(Path.cwd(), Path(tmp), [paths.raw, paths.train_data, paths.test_data, paths.provenance])
            timings = pipeline.measure(repo, paths.raw, repeats)
            print("bench: experiments end to end against the plain script (benchmarks/e2e.py)", file=sys.stderr)
            end_to_end = e2e.measure(repo, paths.raw, repeats)
    report = {
        "machine": {"cpu": engine.cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(), "device": results[0][0]["device"]},
        "matmul_gflops": matmul / 1e9, "repeats": repeats, "smoke": args.smoke, "rows": rows,
        "pipeline": timings, "end_to_end": end_to_end,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['machine']['cpu']}, {args.threads} threads, torch {torch.__version__}: "
          f"fp32 matmul {matmul / 1e9:.1f} GFLOP/s; medians of {repeats}\n\n{table(rows)}")
    if timings:
        print(f"\ndvc repro, nothing changed: {timings['noop_repro_seconds']:.1f} s; train + evaluate forced: "
              f"{timings['train_evaluate_repro_seconds']:.1f} s; MLflow {timings['mlflow_share']:.1%} "
              f"of the train stage ({timings['mlflow_seconds']:.1f} of {timings['train_stage_seconds']:.1f} s)")
        print(f"\n{e2e.table(end_to_end)}")


if __name__ == "__main__":
    main()
