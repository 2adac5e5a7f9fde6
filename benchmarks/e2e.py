"""What a user waits for: an experiment end to end, broken down, against the plain script.

In a scratch copy of the repository with the data downloaded, `dvc exp run -S
train.seed=N -S train.replicates=1` (one trained model, as the script trains; a new
seed each time: nothing restored from the run-cache, download skipped) for the default recipe and for cnn24k-reference, each stage process
recording where its time went (mnistcnn/phases.py); what the processes do not
account for is DVC's own work (and the interpreters' exit). The plain reference
script (benchmarks/reference_script.py) runs end to end in the same loop.
Repetitions are interleaved; medians are reported.

    python -m benchmarks.e2e [--repeats 3]       (make bench runs it too)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import pipeline
from mnistcnn import phases
from mnistcnn.params import config

RECIPES = ("default", "cnn24k-reference")


def experiment(repo: Path, env: dict, recipe: str, seed: int) -> dict:
    """One `dvc exp run` of `recipe` with a new seed: its wall time and each stage's phases."""
    # Back to the committed params and outputs (an experiment in the workspace leaves its own), untimed.
    subprocess.run(["git", "reset", "--hard", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "checkout", "--force"], cwd=repo, env=env, check=True,
                   capture_output=True)
    log = repo / ".git" / "phases.jsonl"  # inside .git: not a file of the workspace
    log.unlink(missing_ok=True)
    flags = [] if recipe == "default" else subprocess.run(
        [sys.executable, "-m", "stages.recipe", recipe], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    # One seed: one trained model, as the plain script trains (train.replicates seeds cost that many loops).
    wall = pipeline.timed([sys.executable, "-m", "dvc", "exp", "run", *flags, "-S", f"train.seed={seed}",
                           "-S", "train.replicates=1"], repo, {**env, phases.ENV: str(log)})
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    stages = {line["stage"]: phases.breakdown(line) for line in lines}
    return {"wall": wall, "dvc": wall - sum(line["ended"] - line["started"] for line in lines), "stages": stages}


def medians(runs: list[dict]) -> dict:
    """Median wall, DVC time, and each stage phase over repeated runs."""
    stages = {stage: {phase: statistics.median(run["stages"][stage][phase] for run in runs)
                      for phase in runs[0]["stages"][stage]} for stage in runs[0]["stages"]}
    return {"wall": statistics.median(r["wall"] for r in runs), "dvc": statistics.median(r["dvc"] for r in runs),
            "stages": stages}


def measure(repo: Path, raw: Path, repeats: int) -> dict:
    env = {**os.environ, "MNIST_MIRROR": str(raw.resolve())}
    pipeline.timed([sys.executable, "-m", "dvc", "repro"], repo, env)  # data downloaded, not timed
    runs = {recipe: [] for recipe in RECIPES}
    plain = []
    for rep in range(repeats):  # interleaved: a slow spell of a shared machine hits all alike
        plain.append(pipeline.timed([sys.executable, "-m", "benchmarks.reference_script", str(raw.resolve())], repo, env))
        print(f"e2e: {rep + 1}/{repeats} plain reference script {plain[-1]:.1f} s", file=sys.stderr)
        for recipe in RECIPES:
            runs[recipe].append(experiment(repo, env, recipe, seed=1000 + rep))
            print(f"e2e: {rep + 1}/{repeats} dvc exp run, {recipe}: {runs[recipe][-1]['wall']:.1f} s", file=sys.stderr)
    result = {"plain_reference_script": statistics.median(plain), "repeats": repeats,
              **{recipe: medians(found) for recipe, found in runs.items()}}
    result["reference_speedup"] = result["plain_reference_script"] / result["cnn24k-reference"]["wall"]
    default = result["default"]
    result["default_over_training_loop"] = default["wall"] - default["stages"]["train"]["training loop"]
    return result


def table(result: dict) -> str:
    """The breakdown as Markdown: one column per recipe, one row per phase."""
    rows = [("experiment, end to end", [result[r]["wall"] for r in RECIPES]),
            ("DVC's own work (and interpreter exits)", [result[r]["dvc"] for r in RECIPES])]
    for stage in ("train", "evaluate"):
        for phase in result["default"]["stages"][stage]:
            rows.append((f"{stage}: {phase}", [result[r]["stages"][stage][phase] for r in RECIPES]))
    lines = ["| seconds (median) | " + " | ".join(RECIPES) + " |", "| --- | " + " | ".join("---:" for _ in RECIPES) + " |"]
    lines += [f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for name, values in rows]
    lines.append(f"| plain reference script, end to end | | {result['plain_reference_script']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/e2e.json"))
    args = parser.parse_args()
    paths = config.load().paths
    with tempfile.TemporaryDirectory() as tmp:
        repo = pipeline.scratch_copy(Path.cwd(), Path(tmp), [paths.raw])
        result = measure(repo, Path.cwd() / paths.raw, args.repeats)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\ncnn24k-reference experiment vs the plain script: {result['reference_speedup']:.2f}x as fast; "
          f"default experiment: training loop + {result['default_over_training_loop']:.1f} s")


if __name__ == "__main__":
    main()
