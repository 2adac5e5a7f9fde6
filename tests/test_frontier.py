"""The accuracy-vs-parameters front: the rule on hand-made points, pooling seeds, and `make frontier`
end to end on a throwaway MLflow store of hand-written pipeline runs and search trials."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from mnistcnn import cli
from mnistcnn.search import frontier
from mnistcnn.search.frontier import Run
from stages import frontier as stage
from tests.conftest import ROOT, committed_params, empty_store, tool_env
from tests.helpers import using

HELD_OUT = (5000, 0)  # params_file's train.validation


def run(group: str, params: int, validation: dict[int, float], test: dict[int, float] | None = None,
        name: str | None = None, source: str = frontier.PIPELINE, epochs: int = 1) -> Run:
    return Run(group, source, name or group, params, epochs, HELD_OUT, validation, test or {})


def names(points) -> list[str]:
    return [point.name for point in points]


@pytest.mark.unit
def test_the_front_drops_the_beaten_keeps_a_tie_once_and_the_smaller_worse():
    points = frontier.pool([
        run("small", 500, {0: 0.95, 1: 0.97}),  # the smallest: nothing smaller beats it
        run("worse-3k", 3000, {0: 0.975}),  # equal params with better-3k, a lower mean: beaten
        run("a", 1000, {0: 0.97}),  # smaller than b and worse: kept
        run("b", 2000, {0: 0.98}),
        run("b-tie", 2000, {0: 0.98}),  # the same params and mean as b, seen later: b kept once
        run("better-3k", 3000, {0: 0.99}),
        run("big", 5000, {0: 0.985}),  # bigger than better-3k and worse
        run("as-good-bigger", 6000, {0: 0.99}),  # as good as better-3k, and bigger: dominated
    ])
    on_front = frontier.front(points)
    assert names(on_front) == ["small", "a", "b", "better-3k"]
    assert [p.params for p in on_front] == [500, 1000, 2000, 3000]
    assert on_front[0].validation.n == 2 and on_front[0].validation.mean == pytest.approx(0.96)
    assert frontier.best_under(points, 2500).name == "b"
    assert frontier.best_under(points, 999).name == "small"
    assert frontier.best_under(points, 10_000).name == "better-3k"
    assert frontier.best_under(points, 499) is None


@pytest.mark.unit
def test_a_seed_of_a_group_seen_twice_counts_once_and_a_trial_brings_no_test_score():
    trial = run("g25", 22_350, {0: 0.5, 1: 0.987, 2: 0.986}, name="s trial 3", source="search s")
    points = frontier.pool([run("g25", 22_350, {0: 0.985}, {0: 0.991}, name="quick25k-e1"), trial,
                            run("g25", 22_350, {1: 0.987}, {1: 0.992}, name="quick25k-e1"),
                            run("other", 9000, {0: 0.9})])
    [pooled, other] = points
    assert pooled.validation.n == 3 and pooled.seeds["validation"] == {0: 0.985, 1: 0.987, 2: 0.986}  # the first seen
    assert pooled.validation.mean == pytest.approx(0.986) and pooled.test.n == 2
    assert (pooled.name, pooled.sources, pooled.runs) == ("quick25k-e1", ("pipeline", "search s"), 3)
    assert other.test is None and other.validation.sd is None


def record(run_id: str, tags: dict, params: dict, metrics: dict, status: str = "FINISHED", **histories) -> dict:
    return {"id": run_id, "name": tags.get("mlflow.runName", run_id), "status": status, "tags": tags,
            "params": params, "metrics": metrics, "histories": histories}


@pytest.mark.unit
def test_each_run_left_out_is_counted_with_its_reason():
    params = {"param_count": "9000", "epochs": "15", "seed": "0", "validation.size": "5000", "validation.seed": "0"}
    trial = {"search.role": "trial", "search.study": "s", "trial.number": "4", "trial.state": "complete"}
    found, left_out = frontier.runs([
        record("seed", {"mlflow.runName": "tiny-e15-s0"}, params, {"val/accuracy": 0.99, "test/accuracy": 0.993}),
        record("trial", trial, {**params, "seed": "1"}, {"val/accuracy": 0.97, "test/accuracy": 0.5},
               **{frontier.SEED_HISTORY: {1: 0.97, 2: 0.96}}),
        record("old-trial", trial, params, {"val/accuracy": 0.98}),
        record("other-images", {}, {**params, "validation.size": "1000"}, {"val/accuracy": 0.999}),
        record("killed", {}, params, {"val/accuracy": 0.999}, status="KILLED"),
        record("pruned", {**trial, "trial.state": "pruned"}, params, {"val/accuracy": 0.999}),
        record("summary", {"replicates.role": "summary"}, params, {"val/accuracy": 0.999}),
        record("study", {"search.role": "study"}, {}, {}),
        record("no-count", {}, {"epochs": "1", "seed": "0"}, {"val/accuracy": 0.999}),
    ], HELD_OUT)
    assert [(r.name, r.source, r.validation, r.test) for r in found] == [
        ("tiny-e15", "pipeline", {0: 0.99}, {0: 0.993}), ("s trial 4", "search s", {1: 0.97, 2: 0.96}, {}),
        ("s trial 4", "search s", {0: 0.98}, {})]
    assert left_out == {"scored on other held-out images (validation 1000/0)": 1, "killed (not finished)": 1,
                        "pruned trial": 1, "replicates summary run": 1, "search study run": 1,
                        "no param_count, epochs or validation params": 1}
    fifteen = [record("seed", {}, params, {"val/accuracy": 0.99})]
    assert frontier.runs(fifteen, HELD_OUT, max_epochs=1)[1] == {"over 1 epochs": 1}
    assert len(frontier.runs(fifteen, HELD_OUT, max_epochs=15)[0]) == 1


# --- end to end: a store of hand-written runs --------------------------------------------------------

TRAIN = {"epochs": "1", "validation.size": "5000", "validation.seed": "0", "validation.per_epoch": "1"}


def write(client, experiment_id: str, name: str, tags: dict, params: dict, metrics: list, start: int) -> str:
    """A run as the stages write it: tags, params, metrics (key, value, step), ended FINISHED."""
    run_id = client.create_run(experiment_id, start_time=start, run_name=name, tags=tags).info.run_id
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()],
                     metrics=[mlflow.entities.Metric(k, v, start, step) for k, v, step in metrics])
    client.set_terminated(run_id, "FINISHED")
    return run_id


def seed_run(client, experiment_id, start, group, model, params, seed, validation, test=None, epochs=1, size=5000):
    metrics = [("val/accuracy", validation - 0.01, 10), ("val/accuracy", validation, 20)]  # the latest is the final
    metrics += [("test/accuracy", test, 0)] if test is not None else []
    write(client, experiment_id, f"{model}-e{epochs}-s{seed}", {"replicates.group": group, "replicates.role": "seed"},
          {**TRAIN, "epochs": epochs, "seed": seed, "param_count": params, "validation.size": size}, metrics, start)


def trial_run(client, experiment_id, start, number, state, params, seed_scores=None, group=None, validation=0.9):
    tags = {"search.role": "trial", "search.study": "s", "trial.number": str(number), "trial.state": state,
            **({"replicates.group": group} if group else {}),
            **({"trial.seeds": str(len(seed_scores))} if seed_scores else {})}
    metrics = [("val/accuracy", validation, 40)]
    metrics += [(frontier.SEED_HISTORY, value, seed) for seed, value in (seed_scores or {}).items()]
    write(client, experiment_id, f"s-{number}", tags, {**TRAIN, "seed": 0, "param_count": params}, metrics, start)


@pytest.fixture
def store(tmp_path):
    """A SQLite store holding experiment `exp` (pipeline runs) and `exp-search` (a study's trials)."""
    shutil.copy(empty_store(), tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    made = {name: client.create_experiment(name, artifact_location=(tmp_path / "artifacts" / name).as_uri())
            for name in ("exp", "exp-search", "exp-frontier", "empty")}
    pipeline, search = made["exp"], made["exp-search"]
    for seed, (validation, test) in enumerate([(0.985, 0.991), (0.987, 0.992), (0.986, 0.990)]):
        seed_run(client, pipeline, 1000 + seed, "g25", "quick25k", 22_350, seed, validation, test)
    seed_run(client, pipeline, 1010, "gbig", "big", 30_000, 0, 0.984, 0.989)  # bigger and worse than g25
    seed_run(client, pipeline, 1020, "tiny", "tiny", 5_000, 0, 0.990, 0.994, epochs=15)
    seed_run(client, pipeline, 1021, "tiny", "tiny", 5_000, 1, 0.992, epochs=15)  # not scored on test (yet)
    seed_run(client, pipeline, 1030, "g50k", "wide", 50_000, 0, 0.995, epochs=15)
    seed_run(client, pipeline, 1040, "other", "other", 4_000, 0, 0.999, size=1000)  # other held-out images
    write(client, pipeline, "quick25k-e1-s0-2 summary", {"replicates.group": "g25", "replicates.role": "summary"},
          {**TRAIN, "seed": 0, "param_count": 22_350}, [("val/accuracy", 0.999, 0)], 1050)
    write(client, search, "s", {"search.role": "study", "search.study": "s"}, {}, [], 2000)
    trial_run(client, search, 2001, 0, "complete", 12_000, {0: 0.980, 1: 0.982, 2: 0.981}, group="g12")
    trial_run(client, search, 2002, 1, "pruned", 9_000, validation=0.999)
    trial_run(client, search, 2003, 2, "complete", 20_000, validation=0.970)  # older: no group, no seed scores
    trial_run(client, search, 2004, 3, "complete", 22_350, {0: 0.985}, group="g25")  # the pipeline's seed 0 again
    return uri, client, tmp_path


def params_file(folder: Path) -> Path:
    """The committed params.yaml, its held-out images set to HELD_OUT whatever it says."""
    params = yaml.safe_load(committed_params().read_text())
    params["train"]["validation"].update(size=HELD_OUT[0], seed=HELD_OUT[1])
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder / "params.yaml"


def front_lines(output: str) -> list[str]:
    """The table's rows: the lines between its header and the summary line."""
    lines = output.splitlines()
    return lines[1: next(i for i, line in enumerate(lines) if " groups from " in line)]


def test_make_frontier_prints_draws_and_logs_the_front_of_a_store(store):
    uri, client, tmp = store
    shown = subprocess.run([sys.executable, "-m", "stages.frontier", "--experiment", "exp", "--params",
                            str(params_file(tmp)), "--figure", str(tmp / "front.png"), "--width", "200"],
                           cwd=ROOT, env=tool_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    rows = front_lines(shown.stdout)
    assert [row.split()[0] for row in rows] == ["5,000", "50,000"]  # 15 epochs beat every 1-epoch run
    assert "99.10 ± 0.14 (n 2)" in rows[0] and "99.40 (n 1, no spread)" in rows[0] and "tiny-e15" in rows[0]
    assert "6 groups from 10 runs (14 read); 4 dominated" in shown.stdout
    assert ("left out: 1 scored on other held-out images (validation 1000/0); 1 replicates summary run; "
            "1 search study run; 1 pruned trial") in shown.stdout
    assert (tmp / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    [logged] = client.search_runs([client.get_experiment_by_name("exp-frontier").experiment_id])
    assert logged.data.tags["frontier.front"] == "2" and logged.data.tags["frontier.dominated"] == "4"
    document = json.loads((tmp / "artifacts/exp-frontier" / logged.info.run_id / "artifacts/front.json").read_text())
    assert [(p["name"], p["params"], p["validation"]["n"]) for p in document["front"]] == [
        ("tiny-e15", 5000, 2), ("wide-e15", 50000, 1)]
    assert (tmp / "artifacts/exp-frontier" / logged.info.run_id / "artifacts/frontier.png").is_file()
    history = client.get_metric_history(logged.info.run_id, "front/validation_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(5000, pytest.approx(0.991)), (50000, 0.995)]


def test_max_epochs_and_under_answer_the_two_questions(store, capsys, monkeypatch):
    uri, _, tmp = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    common = ["--experiment", "exp", "--params", str(params_file(tmp)), "--width", "200"]
    with using(uri):
        assert stage.main([*common, "--max-epochs", "1", "--under", "25000", "--figure", str(tmp / "1.png")]) == 0
        one_epoch = capsys.readouterr().out
        assert stage.main([*common, "--max-epochs", "1", "--under", "10000", "--figure", str(tmp / "2.png")]) == 0
        too_small = capsys.readouterr().out
    rows = front_lines(one_epoch)
    assert [row.split()[0] for row in rows] == ["12,000", "22,350"]
    assert re.search(r"98\.10 ± 0\.10 \(n 3\) +- +1  s trial 0 +search s$", rows[0])  # a trial has no test score
    assert "98.60 ± 0.10 (n 3)  99.10 ± 0.10 (n 3)" in rows[1]  # the trial's seed 0 is the pipeline's: once
    assert "left out: 3 over 1 epochs;" in one_epoch
    assert "best with at most 25,000 parameters: quick25k-e1 (pipeline, search s), 22,350 parameters" in one_epoch
    assert "best with at most 10,000 parameters: none" in too_small
    assert (tmp / "1.png").is_file() and (tmp / "2.png").is_file()


def test_a_store_with_nothing_to_compare_is_a_one_line_error(store, capsys, monkeypatch):
    uri, _, tmp = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with using(uri), pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: stage.main(["--experiment", "empty", "--params", str(params_file(tmp)),
                                    "--figure", str(tmp / "none.png")]), user_errors=(stage.FrontierError,))
    assert exit_info.value.code == cli.EXIT_ERROR and not (tmp / "none.png").exists()
    assert capsys.readouterr().err == ("error: no runs with validation accuracy in experiment empty (or empty-search); "
                                       "run make repro or make search first\n")
    assert os.environ["MLFLOW_TRACKING_URI"] == uri
