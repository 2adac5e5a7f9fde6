"""`make compare`: the experiments' table fits the width it is given and shows what tells rows apart."""

import statistics

import pytest

from stages import compare

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def shown(name, validation, test, params, train, error=None, seeds=None, group="g1"):
    """One row as `dvc exp show --json` gives it; `seeds` (seed: (validation, test)) its replicates."""
    metrics = {} if validation is None else {
        "metrics/train.json": {"data": {"val_accuracy": validation, "val_loss": 0.1}},
        "metrics/test.json": {"data": {"accuracy": test, "params": params}}}
    if seeds:
        metrics["metrics/replicates.json"] = {"data": {"group": group, "n": len(seeds), "seeds": {
            str(seed): {"val_accuracy": v, "test_accuracy": t} for seed, (v, t) in seeds.items()}}}
    return {"rev": f"{name}0123456789", "name": name, "error": error,
            "data": {"metrics": metrics, "params": {"params.yaml": {"data": {"train": train}}}}}


BLOCKS = [{"channels": 12, "pool": "max"}, {"channels": 24, "pool": "max"}, {"channels": 40},
          {"channels": 24, "pool": "max", "dropout": "element"}]


def experiment_show():
    base = {"model": "quick25k", "lr": 0.02, "seed": 0, "augment": {"rotate": 0, "translate": 0.1},
            "arch": {"blocks": BLOCKS, "dropout": 0}}
    commit = shown("main", 0.9854, 0.9919, 22350, base)
    commit["experiments"] = [{"revs": [shown("seed-1", 0.9871, 0.9902, 22350, {**base, "seed": 1})]},
                             {"revs": [shown("tiny", 0.9790, 0.9911, 8890, {**base, "model": "tiny10k"})]},
                             {"revs": [shown("broken", None, None, None, {**base, "lr": 5.0}, error={"msg": "x"})]}]
    return [{**shown("workspace", 0.9854, 0.9919, 22350, base), "rev": "workspace", "name": None}, commit]


def test_rows_are_best_validation_first_with_only_the_params_that_differ():
    lines = compare.table(compare.rows(experiment_show()), width=200).splitlines()
    assert lines[0].split() == ["experiment", "validation", "%", "vs", "best", "test", "%", "params", "lr", "seed",
                                "model"]  # not augment.*
    assert [line.split()[0] for line in lines[1:6]] == ["seed-1", "workspace", "main", "tiny", "broken"]
    assert lines[1].split()[1:] == ["98.71", "(n", "1)", "best", "99.02", "(n", "1)", "22350", "0.02", "1", "quick25k"]
    assert lines[2].split()[4] == "?"  # one seed each: no spread to test, and none made up
    assert lines[5].split()[1:] == ["failed", "-", "-", "-", "5.0", "0", "quick25k"]  # the param that failed it shows
    assert lines[6:] == ["?: one seed on a side, no spread to test (train.replicates: 2 or more)",
                         "failed: the experiment failed, no metrics (dvc exp show lists its error)"]


def test_a_commit_whose_validation_metrics_are_not_in_the_cache_says_to_pull():
    """metrics/test.json is in git, metrics/train.json in the DVC cache: a fresh clone has only the first."""
    commit = shown("main", 0.9854, 0.9919, 22350, {"model": "quick25k"})
    del commit["data"]["metrics"]["metrics/train.json"]
    lines = compare.table(compare.rows([commit]), width=200).splitlines()
    assert lines[0].endswith("(no train param differs)")
    assert lines[1].split()[1:6] == ["-", "-", "99.19", "(n", "1)"] and "not in this DVC cache (make pull)" in lines[2]


def with_architectures():
    """experiment_show, and two declared architectures: quick25k's, and the same channels with two
    convolutions a block."""
    found = experiment_show()
    declared = {**found[1]["data"]["params"]["params.yaml"]["data"]["train"], "model": "declared"}
    doubled = {**declared, "arch": {"blocks": [{**block, "convs": 2} for block in BLOCKS], "dropout": 0}}
    found[1]["experiments"] += [{"revs": [shown("wide", 0.9881, 0.9921, 56554, declared)]},
                                {"revs": [shown("deep", 0.9885, 0.9925, 61674, doubled)]}]
    return found


def test_at_80_columns_the_count_and_the_short_params_show_and_an_architecture_is_its_channels():
    lines = compare.table(compare.rows(with_architectures()), width=80, budget=25000).splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].split()[-4:] == ["params", "lr", "seed", "model"]  # arch.blocks does not fit
    lines = compare.table(compare.rows(with_architectures()), width=96, budget=25000).splitlines()
    assert all(len(line) <= 96 for line in lines) and lines[0].split()[-1] == "arch.blocks"
    deep, wide = lines[1].split(), lines[2].split()
    assert deep[0] == "deep" and deep[8] == "61674!" and wide[8] == "56554!"  # over the budget, marked
    # the same channels, different blocks: each also shows its digest, so they are not taken for one
    assert deep[-1].startswith("12-24-40-24#") and wide[-1].startswith("12-24-40-24#") and deep[-1] != wide[-1]
    assert lines[-1] == "!: over gate.max_params = 25,000: `make gate` refuses it"


def test_what_does_not_fit_is_named_with_the_width_that_shows_it():
    for width in (40, 50, 60):
        lines = compare.table(compare.rows(with_architectures()), width=width).splitlines()
        assert all(len(line) <= width for line in lines)
    lines = compare.table(compare.rows(with_architectures()), width=90).splitlines()
    said = [line for line in lines if line.startswith("not shown: arch.blocks (COMPARE_ARGS=--width=")]
    assert "arch.blocks" not in lines[0] and len(said) == 1
    wider = int(said[0].split("--width=")[1].split()[0])
    assert "arch.blocks" in compare.table(compare.rows(with_architectures()), width=wider).splitlines()[0]


def replicated():
    """The default at seeds 0-2 (main) and 3-5 (an experiment): one group; a weaker recipe at 0-2;
    one a hair below the default, within its noise; a single-seed experiment."""
    base = {"model": "quick25k", "lr": 0.02, "seed": 0, "replicates": 3}
    main = shown("main", 0.9854, 0.9921, 22350, base, seeds={0: (0.9854, 0.9921), 1: (0.9884, 0.9913),
                                                             2: (0.9884, 0.9903)})
    main["experiments"] = [
        {"revs": [shown("more-seeds", 0.9870, 0.9915, 22350, {**base, "seed": 3},
                        seeds={3: (0.9870, 0.9915), 4: (0.9866, 0.9910), 5: (0.9880, 0.9920)})]},
        {"revs": [shown("slow", 0.9822, 0.9878, 22350, {**base, "lr": 0.003}, group="g2",
                        seeds={0: (0.9822, 0.9878), 1: (0.9828, 0.9877), 2: (0.9828, 0.9879)})]},
        {"revs": [shown("close", 0.9860, 0.9912, 22350, {**base, "lr": 0.021}, group="g3",
                        seeds={0: (0.9860, 0.9912), 1: (0.9880, 0.9911), 2: (0.9850, 0.9908)})]},
        {"revs": [shown("one", 0.9869, 0.9915, 22350, {**base, "lr": 0.019, "replicates": 1}, group="g4",
                        seeds={0: (0.9869, 0.9915)})]}]
    return [main]


def test_a_group_is_one_row_of_mean_sd_and_n_and_its_difference_from_the_best_is_tested():
    lines = compare.table(compare.rows(replicated()), width=200).splitlines()
    rows = {line.split()[0]: line for line in lines[1:6]}
    assert list(rows) == ["more-seeds+1", "one", "close", "slow", "vs"]  # named by an experiment first
    # main and more-seeds pooled: 6 seeds, mean and sd as statistics computes them
    validation = [0.9854, 0.9884, 0.9884, 0.9870, 0.9866, 0.9880]
    mean, sd = statistics.fmean(validation) * 100, statistics.stdev(validation) * 100
    assert rows["more-seeds+1"].split()[1:7] == [f"{mean:.2f}", "±", f"{sd:.2f}", "(n", "6)", "best"]
    assert rows["close"].split()[6] == "≈" and rows["slow"].split()[6] == "worse"
    assert rows["one"].split()[1:5] == ["98.69", "(n", "1)", "?"]
    assert lines[5] == "vs best: ≈ within the seeds' noise of the best, worse beyond (Welch's t-test, validation, p < 0.05)"
    assert any(line.startswith("+k: pooled with k more rows") for line in lines)
