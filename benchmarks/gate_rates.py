"""How often the gate fails a change that does nothing, and how often it catches a real regression.

    python -m benchmarks.gate_rates quick25k --set lr=0.0035 --changes 20 --replicates 3

Trains the recipe, as the train stage does, at seeds 0 to replicates * (changes + 1) - 1, and
the regressed recipe (the recipe with --set KEY=VALUE) at seeds 0 to replicates * changes - 1,
each scored on validation and test (benchmarks.holdout.score); every seed's scores are kept in
benchmarks/gate_rates.jsonl, so a rerun trains only what is missing. Then it judges with the
gate's own rule (mnistcnn.gate.spread), with params.yaml's gate section:
- null changes: the baseline (seeds 0 to replicates - 1, as main's metrics/replicates.json holds
  them) against each of the next `changes` groups of seeds: the same recipe, other seeds;
  and every ordered pair of those groups, so one lucky baseline does not decide the rate;
- the regression: each group of the regressed recipe against the baseline recipe at the same
  seeds (as a change is judged: both sides at train.seed 0 to replicates - 1).
It writes the rates docs/gate.md reports into benchmarks/gate_rates.json, an entry for each
regression, and prints them.
"""

from __future__ import annotations

import argparse
import json
from itertools import permutations
from pathlib import Path

from mnistcnn.params import config, recipes

HERE = Path(__file__).parent
CACHE, RESULT = HERE / "gate_rates.jsonl", HERE / "gate_rates.json"


def _parse_set(items: list[str]) -> dict:
    changes = {}
    for item in items:
        key, _, value = item.partition("=")
        changes[key] = config.parse_yaml(value, f"--set {item}")
    return changes


def scores(recipe: str, changes: dict, seeds: range) -> dict[int, dict]:
    """Each seed's scores of the recipe with `changes`: from the cache, else trained (and cached)."""
    name = json.dumps({"recipe": recipe, "set": changes}, sort_keys=True)
    cached = {}
    if CACHE.exists():
        for line in CACHE.read_text().splitlines():
            row = json.loads(line)
            if row["name"] == name:
                cached[row["seed"]] = row
    missing = [seed for seed in seeds if seed not in cached]
    if missing:
        from benchmarks import holdout  # torch and the data only when something must be trained

        data, test = holdout.load_data()
        raw = {**recipes.train_section(recipe), **changes}
        for seed in missing:
            row = {"name": name, **holdout.score({**raw, "seed": seed}, data, test)}
            with CACHE.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"gate_rates: {recipe} {changes or ''} seed {seed}: test {row['test']:.4f}", flush=True)
            cached[seed] = row
    return {seed: cached[seed] for seed in seeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--set", nargs="+", default=["lr=0.0035"], help="the regression: KEY=VALUE train changes")
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--replicates", type=int, default=3)
    args = parser.parse_args()
    n, regression = args.replicates, _parse_set(args.set)
    same = scores(args.recipe, {}, range(n * (args.changes + 1)))
    worse = scores(args.recipe, regression, range(n * args.changes))
    from mnistcnn.gate import spread

    gate = config.load().gate
    groups = [[same[seed]["test"] for seed in range(k * n, (k + 1) * n)] for k in range(args.changes + 1)]
    regressed = [[worse[seed]["test"] for seed in range(k * n, (k + 1) * n)] for k in range(args.changes)]
    null = [spread.judge(groups[k], groups[0], gate).failed for k in range(1, args.changes + 1)]
    pairs = [spread.judge(groups[i], groups[j], gate).failed for i, j in permutations(range(len(groups)), 2)]
    caught = [spread.judge(regressed[k], groups[k], gate).failed for k in range(args.changes)]
    # The rule with one seed a side (train.replicates: 1, the gate before replicates): the allowance alone.
    one_null = [spread.judge([same[seed]["test"]], [same[0]["test"]], gate).failed for seed in same if seed]
    one_caught = [spread.judge([worse[seed]["test"]], [same[seed]["test"]], gate).failed for seed in worse]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    size = mean([mean(g) for g in groups[:args.changes]]) - mean([mean(g) for g in regressed])
    result = {"recipe": args.recipe, "replicates": n, "regression": regression, "gate": dict(gate),
              "null_changes": len(null), "null_failed": sum(null),
              "null_pairs": len(pairs), "null_pairs_failed": sum(pairs),
              "regressions": len(caught), "regressions_caught": sum(caught),
              "regression_size_pp": round(size * 100, 3),
              "one_seed_null_changes": len(one_null), "one_seed_null_failed": sum(one_null),
              "one_seed_regressions": len(one_caught), "one_seed_regressions_caught": sum(one_caught),
              "recipe_test": spread.summary_of([same[s]["test"] for s in same]).as_dict(),
              "regressed_test": spread.summary_of([worse[s]["test"] for s in worse]).as_dict()}
    found = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    found[" ".join(args.set)] = result  # one entry a regression
    RESULT.write_text(json.dumps(found, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
