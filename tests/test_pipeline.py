"""End to end: `dvc repro` in a copy of the repository, on synthetic data, as a user runs it."""

import contextlib
import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from mnistcnn.params import config
from mnistcnn.training import kernels
from tests.conftest import git_commit, make_repo, sh, stored_runs


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC repository holding this project's code and a synthetic mirror, after `dvc repro`."""
    repo, env = make_repo(tmp_path_factory.mktemp("e2e"))
    first = sh("dvc", "repro", cwd=repo, env=env)
    return repo, env, first


def runs(repo):
    return [(run["id"], run["status"], run["name"]) for run in stored_runs(repo)]


def set_train(repo, **values):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@contextlib.contextmanager
def train_changed(repo, env, **values):
    """params.yaml's train section changed for the block; after it, the committed params.yaml and
    its outputs again (from DVC's run-cache), so that no later test of the module sees the change."""
    committed = (repo / "params.yaml").read_text()
    set_train(repo, **values)
    try:
        yield
    finally:
        (repo / "params.yaml").write_text(committed)
        assert "Running stage" not in sh("dvc", "repro", cwd=repo, env=env)


def test_repro_runs_every_stage_and_writes_the_declared_metrics(repo):
    repo, _, first = repo
    for stage in ("download", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first
    metrics = json.loads((repo / "metrics/test.json").read_text())
    assert metrics["params"] == 8890
    assert 0.5 < metrics["accuracy"] <= 1  # the synthetic digits are easy; chance is 0.1
    assert sum(map(sum, metrics["confusion"])) == 200
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"download", "train", "evaluate"}


def test_one_mlflow_run_holds_params_curves_metrics_dataset_and_model(repo):
    repo, env, _ = repo
    card = json.loads((repo / "models/model.json").read_text())
    metrics = json.loads((repo / "metrics/test.json").read_text())
    check = textwrap.dedent(f"""
        import json, mlflow, torch
        from mnistcnn.data import mnist
        from mnistcnn.tracking import runs
        run = mlflow.get_run(runs.training_run("mnist-compact-cnn", {card['weights_sha256']!r}))
        client = mlflow.MlflowClient()
        model = mlflow.pyfunc.load_model(f"runs:/{{run.info.run_id}}/model")
        data = mnist.load_split("data/test.pt", "test", json.load(open("data/provenance.json")), "data/provenance.json")
        out = model.predict(mnist.normalize(data["test_images"]).numpy())
        print(json.dumps({{
            "status": run.info.status, "artifact_uri": run.info.artifact_uri, "params": run.data.params, "metrics": run.data.metrics,
            "tags": run.data.tags, "inputs": [d.dataset.name for d in run.inputs.dataset_inputs],
            "curve": [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")],
            "val_curve": [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/accuracy")],
            "artifacts": [a.path for a in client.list_artifacts(run.info.run_id, "evaluation")],
            "pyfunc_accuracy": (torch.as_tensor(out).argmax(1) == data["test_labels"]).double().mean().item(),
        }}))
    """)
    tracking_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlruns/mlflow.db'}",
                    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    found = json.loads(sh(sys.executable, "-c", check, cwd=repo, env=tracking_env).strip().splitlines()[-1])
    assert found["status"] == "FINISHED"
    assert found["artifact_uri"].startswith((repo / "mlruns/artifacts").as_uri())
    assert found["params"]["model"] == "cnn9k" and found["params"]["param_count"] == "8890"
    assert found["params"]["dropout"] == "0.2" and found["params"]["lr"] == "0.01"
    assert found["tags"]["weights.sha256"] == hashlib.sha256((repo / "models/model.pt").read_bytes()).hexdigest()
    assert found["metrics"]["test/accuracy"] == metrics["accuracy"]
    steps = 16  # 500 images (100 of the 600 held out) in batches of 32: the MLflow step is the optimiser's
    assert "train/accuracy" in found["metrics"] and found["curve"] == [steps]
    train_metrics = json.loads((repo / "metrics/train.json").read_text())
    assert found["val_curve"] == [[steps, train_metrics["val_accuracy"]]] and list(train_metrics)[0] == "val_accuracy"
    assert found["params"]["macs"] == str(train_metrics["macs"]) == "510912"
    assert json.loads(found["params"]["arch.blocks"])[2]["dropout"] == "channel"  # cnn9k's, resolved from its name
    tags = found["tags"]
    assert tags["git.commit"] == sh("git", "rev-parse", "HEAD", cwd=repo).strip()
    assert tags["git.dirty"] == "false" and "dvc.exp_name" not in tags  # a plain `dvc repro`
    train = config.load(repo / "params.yaml").train
    assert tags["params.digest"] == config.digest(train)
    assert tags["dataset.digest"] == json.loads((repo / "data/provenance.json").read_text())["digest"]
    assert tags["env.threads"] == str(train.threads) and tags["env.deterministic"] == "true"
    assert tags["env.kernels"] == "portable" and tags["env.machine_specific"] == "false"  # on x86-64 with AVX2
    assert tags["env.kernel_pins"] == " ".join(f"{k}={v}" for k, v in sorted(kernels.PORTABLE.items()))
    assert tags["env.kernel_pins_by_user"] == "none" and tags["env.cpu_capability"] == "AVX2"
    assert tags["env.nondeterministic_kernels"] == "none"  # every CPU kernel used has a deterministic version
    assert tags["env.memory_format"] == "channels_last" and tags["env.device"] == "cpu"
    assert found["inputs"] == ["mnist"]
    assert found["artifacts"] == ["evaluation/confusion_matrix.png"]
    assert found["pyfunc_accuracy"] == pytest.approx(metrics["accuracy"])


def gate(repo, env) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "stages.gate"], cwd=repo, env=env, capture_output=True, text=True)
    return result.returncode, result.stdout


def test_the_gate_judges_what_evaluate_wrote_and_refuses_metrics_edited_by_hand(repo):
    repo, env, _ = repo
    git_commit(repo, "the reproduced pipeline")  # on main: the baseline is this commit
    metrics_path = repo / "metrics/test.json"
    written = metrics_path.read_text()
    accuracy = json.loads(written)["accuracy"]
    code, report = gate(repo, env)
    assert code == 0, report
    assert report.startswith("## Metrics gate: PASS")
    assert f"| served model's test accuracy (the first seed) | {accuracy:.2%} | {accuracy:.2%} | +0.00 pp |" in report
    assert "Parameter count: 8,890 of a 25,000 budget" in report
    assert (repo / "gate_report.md").read_text() == report

    try:  # a better number typed into the metrics file is not what evaluate wrote: stale, not judged
        metrics_path.write_text(json.dumps({**json.loads(written), "accuracy": 1.0}))
        code, report = gate(repo, env)
        assert code == 1 and "the metrics are stale" in report and "| metric |" not in report
    finally:
        metrics_path.write_text(written)


def test_second_repro_changes_nothing_and_an_epoch_change_skips_download(repo):
    repo, env, _ = repo
    lock, n_runs = (repo / "dvc.lock").read_text(), len(runs(repo))
    again = sh("dvc", "repro", cwd=repo, env=env)
    assert "Running stage" not in again
    assert (repo / "dvc.lock").read_text() == lock and len(runs(repo)) == n_runs

    with train_changed(repo, env, epochs=2):
        changed = sh("dvc", "repro", cwd=repo, env=env)
    assert "Running stage 'train'" in changed and "Running stage 'evaluate'" in changed
    assert "Running stage 'download'" not in changed
    assert [status for _, status, _ in runs(repo)].count("FINISHED") == len(runs(repo))
    assert (repo / "dvc.lock").read_text() == lock  # back as it was, for the tests after this one


def run_of(repo, weights: bytes) -> dict:
    """The newest finished run tagged with these weights' SHA-256, as evaluate finds it."""
    digest = hashlib.sha256(weights).hexdigest()
    found = [run for run in stored_runs(repo) if run["tags"].get("weights.sha256") == digest]
    assert found and all(run["status"] == "FINISHED" for run in found), found
    return found[-1]


def test_a_run_cache_restore_keeps_the_link_to_the_run_that_made_the_model(repo):
    repo, env, _ = repo
    card, metrics = (repo / "models/model.json").read_text(), (repo / "metrics/test.json").read_text()
    weights = (repo / "models/model.pt").read_bytes()
    original = run_of(repo, weights)["id"]
    assert "run" not in card  # no run id in a DVC output: it differs between reproductions
    set_train(repo, seed=7)
    sh("dvc", "repro", cwd=repo, env=env)
    assert run_of(repo, (repo / "models/model.pt").read_bytes())["id"] != original
    n_runs = len(runs(repo))

    set_train(repo, seed=0)  # back to the params of the original run: DVC restores, runs nothing
    restored = sh("dvc", "repro", cwd=repo, env=env)
    assert "Stage 'train' is cached - skipping run" in restored and "Running stage" not in restored
    assert (repo / "models/model.json").read_text() == card
    assert (repo / "metrics/test.json").read_text() == metrics
    assert len(runs(repo)) == n_runs
    run = run_of(repo, (repo / "models/model.pt").read_bytes())
    assert run["id"] == original and run["status"] == "FINISHED" and "test/accuracy" in run["metrics"]


def test_plots_show_draws_the_training_curves_and_the_confusion_matrix(repo):
    repo, env, _ = repo
    found = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo, env=env))["data"]
    assert set(found) == {"validation accuracy", "validation loss", "training loss", "training accuracy",
                          "test confusion matrix"}
    scores = json.loads((repo / "metrics/val_history.json").read_text())
    values = found["validation accuracy"][0]["content"]["data"]["values"]
    assert [(v["epoch"], v["accuracy"]) for v in values] == [(row["epoch"], row["accuracy"]) for row in scores]
    history = json.loads((repo / "metrics/train_history.json").read_text())
    for name, y in (("training loss", "loss"), ("training accuracy", "accuracy")):
        values = found[name][0]["content"]["data"]["values"]
        assert [(v["epoch"], v[y]) for v in values] == [(row["epoch"], row[y]) for row in history]
    assert len(found["test confusion matrix"][0]["content"]["data"]["values"]) == 200
    sh("dvc", "plots", "show", "-o", "plots", cwd=repo, env=env)
    page = (repo / "plots/index.html").read_text()
    assert all(name in page for name in found)


def test_evaluate_refuses_weights_with_a_flipped_byte_and_writes_no_metrics(repo):
    repo, env, _ = repo
    weights, metrics = repo / "models/model.pt", repo / "metrics/test.json"
    original, scored = weights.read_bytes(), metrics.read_text()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    try:
        weights.unlink()  # a new file, not a write through a link into DVC's cache
        weights.write_bytes(bytes(damaged))
        result = subprocess.run([sys.executable, "-m", "stages.evaluate"], cwd=repo, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "models/model.pt: SHA-256" in result.stderr and "models/model.json records" in result.stderr
        assert metrics.read_text() == scored
    finally:
        weights.unlink()
        weights.write_bytes(original)


def test_a_model_over_the_gate_budget_is_said_before_it_trains_and_still_trained(repo):
    """An experiment may explore past the budget: train warns in one line before the first epoch;
    only the gate refuses. The budget is no dependency of train: changing it retrains nothing."""
    repo, env, first = repo
    assert "gate.max_params" not in first  # 8,890 parameters, under the committed 25,000
    committed = (repo / "params.yaml").read_text()
    params = yaml.safe_load(committed)
    params["gate"]["max_params"] = 5000
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert "Running stage" not in sh("dvc", "repro", cwd=repo, env=env)
        forced = sh("dvc", "repro", "--force", "--single-item", "train", cwd=repo, env=env)
    finally:
        (repo / "params.yaml").write_text(committed)
    said = forced.index("train: warning: 8,890 parameters is over gate.max_params = 5,000: the gate will refuse")
    assert said < forced.index("train: epoch 1/")
