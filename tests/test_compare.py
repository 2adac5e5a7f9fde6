"""`make compare`: the experiments' table fits the width it is given and shows what tells rows apart."""

import pytest

from stages import compare

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def shown(name, validation, test, params, train, error=None):
    """One row as `dvc exp show --json` gives it."""
    metrics = {} if validation is None else {
        "metrics/train.json": {"data": {"val_accuracy": validation, "val_loss": 0.1}},
        "metrics/test.json": {"data": {"accuracy": test, "params": params}}}
    return {"rev": f"{name}0123456789", "name": name, "error": error,
            "data": {"metrics": metrics, "params": {"params.yaml": {"data": {"train": train}}}}}


def experiment_show():
    base = {"model": "quick25k", "lr": 0.02, "seed": 0, "augment": {"rotate": 0, "translate": 0.1}}
    commit = shown("main", 0.9854, 0.9919, 22350, base)
    commit["experiments"] = [{"revs": [shown("seed-1", 0.9871, 0.9902, 22350, {**base, "seed": 1})]},
                             {"revs": [shown("tiny", 0.9790, 0.9911, 8890, {**base, "model": "tiny10k"})]},
                             {"revs": [shown("broken", None, None, None, {**base, "lr": 5.0}, error={"msg": "x"})]}]
    return [{**shown("workspace", 0.9854, 0.9919, 22350, base), "rev": "workspace", "name": None}, commit]


def test_rows_are_best_validation_first_with_only_the_params_that_differ():
    lines = compare.table(compare.rows(experiment_show()), width=200).splitlines()
    assert lines[0].split()[:4] == ["experiment", "validation", "test", "params"]
    assert lines[0].endswith("differs: lr, model, seed")  # augment.* is the same in every row
    assert [line.split()[0] for line in lines[1:]] == ["seed-1", "workspace", "main", "tiny", "broken"]
    assert lines[1].split()[1:] == ["0.9871", "0.9902", "22350", "lr=0.02", "model=quick25k", "seed=1"]
    assert lines[-1].split()[1:4] == ["-", "-", "-"] and lines[-1].endswith("failed: no metrics")


def test_a_commit_whose_validation_metrics_are_not_in_the_cache_says_to_pull():
    """metrics/test.json is in git, metrics/train.json in the DVC cache: a fresh clone has only the first."""
    commit = shown("main", 0.9854, 0.9919, 22350, {"model": "quick25k"})
    del commit["data"]["metrics"]["metrics/train.json"]
    line = compare.table(compare.rows([commit]), width=200).splitlines()[1]
    assert line.split()[1:4] == ["-", "0.9919", "22350"] and "not in this DVC cache (make pull)" in line


def test_every_line_fits_the_width_and_a_cut_line_says_so():
    for width in (40, 50, 60):
        lines = compare.table(compare.rows(experiment_show()), width=width).splitlines()
        assert all(len(line) <= width for line in lines)
        assert any(line.endswith("…") for line in lines)  # the params did not fit, and it shows
