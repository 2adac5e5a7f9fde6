"""Replicates: the group key, the summary against an independent computation, bad counts, and
the pipeline at three seeds on synthetic data (three runs of one group, their summary)."""

import json
import statistics

import pytest
import yaml

from mnistcnn.params import config
from mnistcnn.params.schema import MAX_REPLICATES, TrainParams
from mnistcnn.training import replicates
from tests.conftest import committed_params, make_repo, sh, stored_runs

T_975 = {2: 4.302652729911275, 4: 2.7764451051977987}  # Student's t, 97.5th percentile, by degrees of freedom


def train_section() -> dict:
    return yaml.safe_load(committed_params().read_text())["train"]


# A valid other value for every key of the train section but the seed's.
CHANGED = {"model": "tiny10k", "arch": {"blocks": [{"channels": 8}], "head": {"pool": "avg", "dropout": "none"}},
           "validation": {"size": 4000, "seed": 0, "per_epoch": 1}, "optimizer": "sgd", "lr": 0.03,
           "schedule": "constant", "warmup": 0.3, "weight_decay": 0.01, "label_smoothing": 0.05,
           "augment": {"rotate": 5, "translate": 0}, "batch_size": 64, "epochs": 2, "dropout": 0.1,
           "device": "cpu", "threads": 1, "kernels": "native"}


@pytest.mark.unit
def test_the_group_key_ignores_the_seed_and_nothing_else():
    base = config.parse_train(train_section())
    assert set(CHANGED) | set(replicates.SEED_KEYS) == set(TrainParams.model_fields)  # a new key needs a case
    key = replicates.group_key(base)
    assert replicates.group_key(base.model_copy(update={"seed": 7, "replicates": 5})) == key
    for name, value in CHANGED.items():
        other = config.parse_train({**train_section(), name: value})
        assert getattr(other, name) != getattr(base, name), name
        assert replicates.group_key(other) != key, f"train.{name} changed, the group key did not"


@pytest.mark.unit
@pytest.mark.parametrize("values", [[0.9921, 0.9913, 0.9903], [0.98, 0.99, 0.985, 0.9801, 0.9777]])
def test_the_summary_equals_an_independent_computation(values):
    summary = replicates.summarize(values)
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = T_975[len(values) - 1] * sd / len(values) ** 0.5
    assert summary.n == len(values)
    assert summary.mean == pytest.approx(mean, abs=1e-12) and summary.sd == pytest.approx(sd, abs=1e-12)
    assert summary.low == pytest.approx(mean - half, abs=1e-12)
    assert summary.high == pytest.approx(mean + half, abs=1e-12)


@pytest.mark.unit
def test_one_seed_has_no_spread_and_none_is_made_up():
    summary = replicates.summarize([0.99])
    assert (summary.n, summary.mean, summary.sd, summary.low, summary.high) == (1, 0.99, None, None, None)
    assert summary.text() == "99.00 (n 1, no spread)"
    document = replicates.document("abc", 0, {0: {"val_accuracy": 0.98, "test_accuracy": 0.99}})
    assert document["spread"] == replicates.NO_SPREAD and document["test_accuracy"]["sd"] is None
    assert replicates.p_lower([0.99], [0.98, 0.97]) is None and replicates.p_differ([0.99, 0.98], [0.9]) is None


@pytest.mark.unit
@pytest.mark.parametrize("value, message", [
    (0, f"train.replicates = 0: must be an integer from 1 to {MAX_REPLICATES}"),
    (MAX_REPLICATES + 1, f"train.replicates = {MAX_REPLICATES + 1}: must be an integer from 1 to {MAX_REPLICATES}"),
    (2.5, "train.replicates = 2.5: must be an integer from 1 to"),
])
def test_a_count_of_replicates_out_of_range_names_the_key(value, message):
    with pytest.raises(config.ParamsError) as err:
        config.parse_train({**train_section(), "replicates": value})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_pipeline_at_three_seeds_writes_three_runs_of_one_group_and_their_summary(tmp_path):
    repo, env = make_repo(tmp_path, train={"replicates": 3, "seed": 4})
    sh("dvc", "repro", cwd=repo, env=env)
    summary = json.loads((repo / "metrics/replicates.json").read_text())
    assert summary["n"] == 3 and summary["served_seed"] == 4 and sorted(summary["seeds"]) == ["4", "5", "6"]
    test = [summary["seeds"][seed]["test_accuracy"] for seed in ("4", "5", "6")]
    assert summary["test_accuracy"]["mean"] == pytest.approx(statistics.fmean(test), abs=1e-12)
    assert summary["test_accuracy"]["sd"] == pytest.approx(statistics.stdev(test), abs=1e-12)
    served = json.loads((repo / "metrics/test.json").read_text())
    assert served["accuracy"] == summary["seeds"]["4"]["test_accuracy"]
    card = json.loads((repo / "models/model.json").read_text())
    assert card == {k: v for k, v in json.loads((repo / "models/replicates/seed-4.json").read_text()).items()
                    if k not in ("seed", "val_accuracy", "val_loss")}
    assert (repo / "models/model.pt").read_bytes() == (repo / "models/replicates/seed-4.pt").read_bytes()

    found = stored_runs(repo)
    seeds = [run for run in found if run["tags"].get(replicates.ROLE_TAG) == "seed"]
    assert sorted(run["params"]["seed"] for run in seeds) == ["4", "5", "6"]
    assert {run["tags"][replicates.GROUP_TAG] for run in seeds} == {summary["group"]}
    assert all(run["status"] == "FINISHED" and "test/accuracy" in run["metrics"] for run in seeds)
    for run in seeds:  # each seed's run holds that seed's own scores
        row = summary["seeds"][run["params"]["seed"]]
        assert float(run["metrics"]["test/accuracy"]) == row["test_accuracy"]
        assert float(run["metrics"]["val/accuracy"]) == row["val_accuracy"]
    [group] = [run for run in found if run["tags"].get(replicates.ROLE_TAG) == "summary"]
    assert group["tags"][replicates.GROUP_TAG] == summary["group"] and group["name"].endswith("-s4-6 summary")
    assert float(group["metrics"]["summary/test_accuracy_mean"]) == pytest.approx(summary["test_accuracy"]["mean"])
    assert float(group["metrics"]["summary/n"]) == 3

    # Seed 5 alone trains the bits it trained as the second of three; the stale seeds' files go.
    seed_5 = json.loads((repo / "models/replicates/seed-5.json").read_text())["weights_sha256"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update({"replicates": 1, "seed": 5})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc", "repro", cwd=repo, env=env)
    assert sorted(p.name for p in (repo / "models/replicates").iterdir()) == ["seed-5.json", "seed-5.pt"]
    assert json.loads((repo / "models/model.json").read_text())["weights_sha256"] == seed_5
    one = json.loads((repo / "metrics/replicates.json").read_text())
    assert one["n"] == 1 and one["spread"] == replicates.NO_SPREAD and one["test_accuracy"]["sd"] is None
    summaries = [run for run in stored_runs(repo) if run["tags"].get(replicates.ROLE_TAG) == "summary"]
    assert [run["id"] for run in summaries] == [group["id"]]  # one seed: its run is the group, no summary run
