"""The search (stages/search.py) on synthetic data: its space checked before any trial, trials
pruned and refused, every trial a child run of the study's run, the test images never read,
Ctrl-C leaving the study resumable, and the winner reproduced bit for bit as a DVC experiment."""

import json
import signal
import statistics
import subprocess
import sys
import time

import optuna
import pytest
import torch
import yaml

from mnistcnn.model import arch
from mnistcnn.params import config
from mnistcnn.search import objective, search, space
from tests.conftest import ROOT, free_port, git_commit, make_repo, params_for, sh, stored_runs
from tests.helpers import SEARCH, with_search


def base_params(**changes) -> dict:
    """The test repositories' params.yaml (params_for), any digests: the checks read no data."""
    digests = dict.fromkeys(("train_images", "train_labels", "test_images", "test_labels"), "0" * 64)
    return with_search(params_for(digests, ["http://127.0.0.1:9/"]), **changes)


def checked(tmp_path, **changes):
    """The params of a search section with `changes`, and its space as the search checks it."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base_params(**changes)))
    params = config.load(path)
    return params, search.check(params, path)


def refusal(tmp_path, **changes) -> str:
    """The one-line error of a search section with `changes`, raised before any trial."""
    with pytest.raises(config.ParamsError) as caught:
        checked(tmp_path, **changes)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_bad_search_section_is_one_line_naming_its_key_before_any_trial(tmp_path):
    assert "search.space.colour: unknown key; allowed: arch, optimizer, lr" in refusal(
        tmp_path, space={"colour": {"choices": [1]}})
    assert "search.space.lr.low: 0.5 is above search.space.lr.high = 0.05" in refusal(
        tmp_path, space={"lr": {"low": 0.5}})
    assert "search.space.batch_size: 0 is not allowed: train.batch_size = 0: must be an integer >= 1" in refusal(
        tmp_path, space={"batch_size": {"choices": [32, 0]}})
    assert "search.space.arch.blocks.pool: 'huge' is not allowed: train.arch.blocks[0].pool = 'huge'" in refusal(
        tmp_path, space={"arch": {"blocks": {"pool": {"choices": ["max", "huge"]}}}})
    assert "search.space.seed: cannot vary" in refusal(tmp_path, space={"seed": {"choices": [0, 1]}})
    assert "search.space.arch.blocks.colour: unknown key; allowed under each block" in refusal(
        tmp_path, space={"arch": {"blocks": {"colour": {"low": 1, "high": 2}}}})
    # cnn9k at 4 channels a block: convs 40 + 148 + 148, norms 3 x 8, the linear layer 4*3*3*10 + 10 = 370
    assert "search.max_params = 500: no architecture of the space fits (the smallest of its corners has " \
           "730 parameters)" in refusal(tmp_path, max_params=500)
    assert "search.pruner.kind = 'best': must be one of halving, median, none" in refusal(
        tmp_path, pruner={"kind": "best"})


def test_a_trials_values_land_on_each_block_and_the_budget_is_checked_over_the_corners():
    leaves = space.parse({"lr": {"low": 0.001, "high": 0.1, "log": True},
                           "arch": {"blocks": {"channels": {"low": 4, "high": 8}}, "head": {"pool": {"choices": ["avg"]}}}})
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    named = space.names(leaves, config.parse_train(base).architecture)
    assert list(named) == ["lr", "arch.blocks[0].channels", "arch.blocks[1].channels", "arch.blocks[2].channels",
                           "arch.blocks[3].channels", "arch.head.pool"]
    section = space.apply(base, {"lr": 0.01, "arch.blocks[2].channels": 7, "arch.head.pool": "avg"})
    assert section["lr"] == 0.01 and section["arch"]["blocks"][2]["channels"] == 7
    assert section["arch"]["head"]["pool"] == "avg" and base["arch"]["blocks"][2]["channels"] == 40  # a copy
    assert len(list(space.corners(named))) == 2 * 2**4  # lr's two ends, each block's two, one choice


@pytest.mark.unit
def test_a_proposal_over_the_budget_is_scaled_down_to_fit_on_the_channel_grid_its_shape_kept(tmp_path):
    params, trials = checked(tmp_path, max_params=6000)
    wide = trials.section({f"arch.blocks[{i}].channels": width for i, width in enumerate([32, 8, 24])})
    fitted = trials.fit(wide, 6000)
    widths = [block["channels"] for block in fitted["arch"]["blocks"]]
    assert arch.count_parameters(arch.Arch.model_validate(fitted["arch"])) <= 6000
    assert widths[0] > widths[2] > widths[1] and all(w >= 4 and w % 4 == 0 for w in widths), widths  # low 4, step 4
    wider = [{**block, "channels": width + 4} for block, width in zip(fitted["arch"]["blocks"], widths)]
    assert arch.count_parameters(arch.Arch.model_validate({**fitted["arch"], "blocks": wider})) > 6000  # the widest
    small = trials.section({f"arch.blocks[{i}].channels": 4 for i in range(3)})
    assert trials.fit(small, 6000) is small  # within the budget: as drawn
    assert trials.fit(small, 100) is None  # nothing of the space fits: refused, untrained


def test_a_constrained_fitted_study_proposes_fewer_over_budget_trials_than_todays_on_the_same_space(tmp_path):
    """40 proposals each, no training: the value stands in for accuracy as the parameter count (bigger is better
    up to the budget, where it is most tempting to overshoot). Today's search refused an oversized trial
    untrained and told the sampler nothing; now it is fitted, and what stays over is a constraint."""
    space_ = {"lr": {"low": 0.001, "high": 0.05, "log": True}, "arch": {"blocks": {"channels": {"low": 4, "high": 64,
                                                                                                 "step": 4}}}}
    params, trials = checked(tmp_path, max_params=6000, space=space_, fit=True)

    def today(trial):
        section = trials.section(objective.suggest(trial, trials.named))
        count = arch.count_parameters(arch.Arch.model_validate(section["arch"]))
        if count > 6000:
            trial.set_user_attr("outcome", "over budget")
            raise optuna.TrialPruned()
        return count / 6000

    def now(trial):
        return objective.propose(trial, trials, params.search, "0" * 64)[1].params / 6000

    over = {}
    for name, run in (("today", today), ("now", now)):
        with search.quiet():
            study = search.open_study(name, None, params.search, trials)
            study.optimize(run, n_trials=40)
        over[name] = sum(t.user_attrs.get("outcome") == "over budget" for t in study.trials)
        if name == "now":
            assert all(t.constraints["params_over_budget"] <= 0 for t in study.trials)
            assert any(t.user_attrs.get("fitted") for t in study.trials)
    assert over["now"] <= 4 < over["today"], over  # at most 10% over budget, against today's many


def test_racing_trains_only_the_survivors_at_more_seeds_and_a_raced_trials_value_is_their_mean(tmp_path):
    """Six trials of the real objective on 256 random images (their accuracies differ by chance, as a
    study's do), every one completing: each goes on to seeds 1 and 2 only while its seed 0 is the best so far."""
    params, trials = checked(tmp_path, pruner={"kind": "none"}, race={"seeds": 3, "survivors": 1}, fit=True)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(256, 1, 28, 28, generator=generator), torch.randint(0, 10, (256,), generator=generator)
    data = objective.Data(images[:192], labels[:192], (images[192:], labels[192:]), "0" * 64)
    with search.quiet():
        study = search.open_study("race", None, params.search, trials)
        study.optimize(objective.objective(trials, params.search, data, torch.device("cpu")), n_trials=6)
    best_first, raced = -1.0, []
    for trial in study.trials:  # one worker: complete in number order
        assert trial.state == optuna.trial.TrialState.COMPLETE
        seeds = trial.user_attrs["seed_accuracies"]
        first = seeds[0][1]
        assert [seed for seed, _ in seeds] == ([0, 1, 2] if first >= best_first else [0])
        assert trial.value == pytest.approx(statistics.mean(a for _, a in seeds), abs=1e-12)
        best_first = max(best_first, first)
        raced += [trial] if len(seeds) == 3 else []
    assert 0 < len(raced) < 6, "only the survivors race"
    assert search.best(study) == max(raced, key=lambda t: (t.value, -t.number))  # chosen on the mean


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A repository after its download stage and an 8-trial search, with the test images deleted
    before the search: it must never need them."""
    repo, env = make_repo(tmp_path_factory.mktemp("search"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(with_search(params), sort_keys=False))
    git_commit(repo, "a search section")
    sh("dvc", "repro", "download", cwd=repo, env=env)
    (repo / "data/test.pt").unlink()
    output = sh(sys.executable, "-m", "stages.search", cwd=repo, env=env)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{repo / 'studies/optuna.db'}")
    return repo, env, study, output


def test_the_search_runs_its_trials_prunes_refuses_the_oversized_and_never_reads_the_test_images(searched):
    repo, _, study, output = searched
    assert not (repo / "data/test.pt").exists()  # deleted before the search, which ran to the end
    trials = study.trials
    assert [t.number for t in trials] == list(range(8))
    outcomes = [t.user_attrs.get("outcome") or t.state.name.lower() for t in trials]
    assert {"complete", "pruned", "over budget"} <= set(outcomes), outcomes
    for trial in trials:
        over = trial.user_attrs["param_count"] > SEARCH["max_params"]
        assert (trial.user_attrs.get("outcome") == "over budget") == over
        assert over == ("val_curve" not in trial.user_attrs)  # refused before training
        assert trial.constraints == {"params_over_budget": trial.user_attrs["param_count"] - SEARCH["max_params"]}
    firsts = []  # the race: a complete trial goes on to seed 1 only while its seed 0 ranks in the best 2 so far
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        seeds = trial.user_attrs["seed_accuracies"]
        assert seeds[0] == [0, trial.user_attrs["val_curve"][-1]["accuracy"]]  # at the final step
        assert [row["step"] for row in trial.user_attrs["val_curve"]] == [4, 8, 12, 16]
        raced = sum(first > seeds[0][1] for first in firsts) < SEARCH["race"]["survivors"]
        assert [seed for seed, _ in seeds] == ([0, 1] if raced else [0])
        assert trial.value == pytest.approx(statistics.mean(a for _, a in seeds), abs=1e-12)  # raced: the mean
        firsts.append(seeds[0][1])
    assert f"search: trial 7 {outcomes[7]}" in output and "written to recipes/s.yaml" in output


def test_every_trial_is_a_child_run_of_the_studys_run_with_its_curve_state_and_figures(searched):
    repo, _, study, _ = searched
    runs = stored_runs(repo)
    parents = [r for r in runs if r["tags"].get("search.role") == "study"]
    assert len(parents) == 1 and parents[0]["tags"]["search.study"] == "s"
    children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == parents[0]["id"]]
    assert sorted(int(r["tags"]["trial.number"]) for r in children) == list(range(8))
    for child in children:
        trial = study.trials[int(child["tags"]["trial.number"])]
        assert child["tags"]["trial.state"] == (trial.user_attrs.get("outcome") or trial.state.name.lower())
        assert child["tags"]["search.study"] == "s" and child["tags"]["env.threads"] == "2"
        assert {"arch.digest", "params.digest", "dataset.digest", "git.commit"} <= set(child["tags"])
        assert int(child["params"]["param_count"]) == trial.user_attrs["param_count"]
        if trial.state == optuna.trial.TrialState.COMPLETE:  # the first seed's curve
            assert float(child["metrics"]["val/accuracy"]) == trial.user_attrs["val_curve"][-1]["accuracy"]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            seeds = trial.user_attrs["seed_accuracies"]
            assert child["tags"]["trial.seeds"] == str(len(seeds))
            assert float(child["metrics"]["trial/value"]) == trial.value
    raced = [t for t in study.trials if search.seeds(t) == 2]
    best = max(raced, key=lambda t: (t.value, -t.number))  # chosen among the raced, on their mean
    assert parents[0]["tags"]["best.trial"] == str(best.number) == str(search.best(study).number)
    figures = {p.name for p in (repo / "mlruns/artifacts").rglob("figures/*.png")}
    assert figures == {"optimization_history.png", "intermediate_values.png", "param_importances.png"}


def test_the_winners_recipe_reproduces_its_validation_accuracy_bit_for_bit_through_the_pipeline(searched):
    repo, env, study, _ = searched
    best = search.best(study)
    text = (repo / "recipes/s.yaml").read_text()
    recipe = yaml.safe_load(text)["train"]
    assert recipe == {**best.user_attrs["train"], "replicates": 2} and recipe["model"] == "declared"
    assert f"chosen on its validation accuracy {best.value:.4f} ± " in text and "(n 2, seeds 0-1)" in text
    flags = sh(sys.executable, "-m", "stages.recipe", "s", cwd=repo, env=env).split()
    output = sh("dvc", "exp", "run", *flags, cwd=repo, env=env)  # evaluate scores the test set, downloaded again
    metrics = json.loads((repo / "metrics/train.json").read_text())  # the served model: the first seed's
    assert metrics["val_accuracy"] == best.user_attrs["seed_accuracies"][0][1]
    assert metrics["val_loss"] == best.user_attrs["val_loss"] and metrics["params"] == best.user_attrs["param_count"]
    summary = json.loads((repo / "metrics/replicates.json").read_text())
    assert summary["val_accuracy"]["mean"] == best.value and summary["test_accuracy"]["n"] == 2
    assert "test accuracy over the seeds" in output  # the test mean and its interval, reported


def test_ctrl_c_fails_the_running_trial_queues_it_again_and_the_study_continues(searched):
    repo, env, _, _ = searched
    # trials of seconds (10 epochs, scored 4 times each): interrupted at its first scoring, mid-trial
    slow = ["-S", "search.epochs=10", "-S", "search.max_params=100000", "--study", "slow", "--trials", "2"]
    # Ctrl-C as a terminal sends it, however the tests were started: a shell's background job (`make test &`)
    # inherits SIGINT ignored, and Python then leaves it ignored, so the worker would never see it
    worker = subprocess.Popen([sys.executable, "-m", "stages.search", *slow], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    storage = f"sqlite:///{repo / 'studies/optuna.db'}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="slow", storage=storage).trials
        except KeyError:  # not created yet
            continue
        if trials and "val_curve" in trials[-1].user_attrs:  # training, past its first scoring
            break
    worker.send_signal(signal.SIGINT)
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 130, output
    assert "trial 0 failed and is queued again" in output
    first, retry = optuna.load_study(study_name="slow", storage=storage).trials
    assert first.state == optuna.trial.TrialState.FAIL and retry.state == optuna.trial.TrialState.WAITING
    assert retry.params == first.params
    interrupted = [r for r in stored_runs(repo) if r["tags"].get("trial.ended_by") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["status"] == "FAILED"
    resumed = sh(sys.executable, "-m", "stages.search", *slow[:-1], "1", cwd=repo, env=env)
    assert "2 trial(s) so far" in resumed and "search: trial 1 complete" in resumed
    again = optuna.load_study(study_name="slow", storage=storage).trials[1]
    assert again.state == optuna.trial.TrialState.COMPLETE and again.system_attrs["failed_trial"] == 0


@pytest.mark.parametrize("kind", ["refused", "hanging"])
def test_a_storage_that_does_not_answer_is_a_clear_error_within_10_s(silent_port, kind):
    port = silent_port if kind == "hanging" else free_port()
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "stages.search", "--storage",
                             f"postgresql://optuna:secret@127.0.0.1:{port}/optuna"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 10
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot open the study storage postgresql+psycopg2://optuna:***@127.0.0.1:{port}/")
    assert ("timeout expired" if kind == "hanging" else "Connection refused") in result.stderr
    assert "secret" not in result.stderr
