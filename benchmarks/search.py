"""What pruning saves a search, and how its trials per minute grow with workers.

    python -m benchmarks.search [--trials 12] [--scale-trials 8]     (`make bench-search`)

Pruning: two studies of N trials over params.yaml's search space, one with its pruner and one
without; the compute of each in trial-epochs (the epochs each trial trained; over-budget trials
train none) and its wall time. Scale: a space of the optimiser's keys only, so that every trial
costs the same (params.yaml's architecture, 1 epoch, no pruning, 1 thread a worker): K trials by
one worker, then K by two workers at once on one study; trials per minute of each, and the time a
worker spends between trials (the storage and MLflow), which bounds what further workers add.

Every worker is a real `python -m stages.search` process, run in a scratch folder that holds a
copy of the training data (never the test images), its own SQLite storage and MLflow store.
Needs `make repro` (the data) first. Writes benchmarks/search.json, with the machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

from mnistcnn.params import config
from mnistcnn.search.search import trial_epochs
from mnistcnn.training.engine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
FIXED_COST = {"lr": {"low": 0.005, "high": 0.05, "log": True}, "warmup": {"low": 0.1, "high": 0.4},
              "label_smoothing": {"low": 0.0, "high": 0.15}}


def scratch(folder: Path, search: dict, train: dict | None = None) -> Path:
    """A folder to run workers in: params.yaml with `search` (and `train`) changed (a space given
    replaces the space), and the training data."""
    params = config.read_yaml(ROOT / "params.yaml")
    params["search"] = {**config.merge(params["search"], search), **({"space": search["space"]} if "space" in search else {})}
    params["train"] = config.merge(params["train"], train or {})
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "data").mkdir()
    for key in ("train_data", "provenance"):
        shutil.copy(ROOT / params["paths"][key], folder / params["paths"][key])
    return folder


def workers(folder: Path, study: str, trials: list[int]) -> float:
    """Run one worker per entry of `trials` (its trial count) at once on one study; the wall seconds."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "stages.search", "--study", study, "--storage", storage(folder)]
    start = time.monotonic()
    running = [subprocess.Popen([*command, "--trials", str(n)], cwd=folder, env=env, stderr=subprocess.PIPE,
                                text=True) for n in trials]
    for process in running:
        _, errors = process.communicate()
        if process.returncode:
            raise SystemExit(f"a worker failed:\n{errors}")
    return time.monotonic() - start


def storage(folder: Path) -> str:
    return f"sqlite:///{folder / 'studies.db'}"


def study_record(folder: Path, name: str, seconds: float) -> dict:
    trials = optuna.load_study(study_name=name, storage=storage(folder)).trials
    epochs = [trial_epochs(t) for t in trials]
    gaps = []
    for worker in {t.user_attrs.get("worker") for t in trials}:
        own = sorted((t for t in trials if t.user_attrs.get("worker") == worker), key=lambda t: t.datetime_start)
        gaps += [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in zip(own, own[1:])]
    complete = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"trials": len(trials), "wall_seconds": round(seconds, 1), "trial_epochs": round(sum(epochs), 2),
            "trials_per_minute": round(60 * len(trials) / seconds, 2),
            "outcomes": {o: sum((t.user_attrs.get("outcome") or t.state.name.lower()) == o for t in trials)
                         for o in ("complete", "pruned", "over budget", "fail")},
            "best_val_accuracy": max(complete, default=None),
            "median_trial_seconds": round(statistics.median((t.datetime_complete - t.datetime_start).total_seconds()
                                                            for t in trials), 2),
            "median_seconds_between_trials": round(statistics.median(gaps), 2) if gaps else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials of each pruning study")
    parser.add_argument("--scale-trials", type=int, default=8, help="trials of each scaling run (even)")
    parser.add_argument("--parts", nargs="+", choices=["pruning", "scale"], default=["pruning", "scale"],
                        help="what to measure; the other part's results in benchmarks/search.json are kept")
    args = parser.parse_args()
    output = ROOT / "benchmarks/search.json"
    results = json.loads(output.read_text()) if output.exists() and len(args.parts) < 2 else {}
    results["machine"] = {"cpu": cpu_name(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in ("halving", "none") if "pruning" in args.parts else ():
            folder = scratch(Path(tmp) / f"prune-{pruner}", {"pruner": {"kind": pruner}})
            seconds = workers(folder, "pruning", [args.trials])
            results[f"pruner_{pruner}"] = study_record(folder, "pruning", seconds)
            print(json.dumps({f"pruner_{pruner}": results[f"pruner_{pruner}"]}), flush=True)
        one_thread = {"threads": 1}
        fixed = {"space": FIXED_COST, "pruner": {"kind": "none"}}
        for count in (1, 2) if "scale" in args.parts else ():
            folder = scratch(Path(tmp) / f"scale-{count}", fixed, one_thread)
            seconds = workers(folder, "scale", [args.scale_trials // count] * count)
            results[f"workers_{count}"] = study_record(folder, "scale", seconds)
            print(json.dumps({f"workers_{count}": results[f"workers_{count}"]}), flush=True)
    pruned, unpruned = results["pruner_halving"], results["pruner_none"]
    results["pruning_saves"] = round(1 - pruned["trial_epochs"] / unpruned["trial_epochs"], 3)
    results["two_workers_speedup"] = round(results["workers_2"]["trials_per_minute"]
                                           / results["workers_1"]["trials_per_minute"], 2)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"pruning saves {results['pruning_saves']:.0%} of the trial-epochs; two workers "
          f"{results['two_workers_speedup']}x the trials per minute of one (benchmarks/search.json)")


if __name__ == "__main__":
    main()
