"""The gate command in a throwaway git + DVC repository whose one stage writes metrics from params.

History: A (main, no metrics yet) - B (main, the baseline: 97.28%) - C (feature, 97.25%),
and main moves on to D (99.90%) after the feature branched, so the merge base (B) is
not main's tip. Each test works on a copy of that repository.
"""

import shutil
import subprocess
import sys

import pytest
import yaml

from mnistcnn import cli
from mnistcnn.gate import baseline
from mnistcnn.gate.verdict import CannotJudge
from stages import gate
from tests.conftest import ROOT, committed_params, copy_code, git_commit, init_repo, sh, tool_env

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

FAKE_EVALUATE = """\
import json, pathlib, yaml
metrics = yaml.safe_load(open("fake.yaml"))["fake"]
seeds = metrics.pop("seeds", None) or [metrics["accuracy"]]  # the test accuracy at each seed
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/test.json").write_text(json.dumps(metrics, indent=2))
replicates = {"n": len(seeds), "seeds": {str(i): {"test_accuracy": a} for i, a in enumerate(seeds)}}
pathlib.Path("metrics/replicates.json").write_text(json.dumps(replicates, indent=2))
"""
DVC_YAML = {"stages": {"evaluate": {
    "cmd": "python fake_evaluate.py", "deps": ["fake_evaluate.py"], "params": [{"fake.yaml": ["fake"]}],
    "metrics": [{"metrics/test.json": {"cache": False}}, {"metrics/replicates.json": {"cache": False}}]}}}


def set_params(repo, section, **values):
    """Change params.yaml's `gate:` section, or the fake stage's metrics (in fake.yaml: params.yaml
    refuses sections it does not know)."""
    path = repo / ("fake.yaml" if section == "fake" else "params.yaml")
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def reproduce(repo, **fake):
    set_params(repo, "fake", **fake)
    sh("dvc", "repro", "-q", cwd=repo, env=tool_env())


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    repo = tmp_path_factory.mktemp("gate") / "repo"
    init_repo(repo)
    copy_code(repo)
    shutil.copy(committed_params(), repo / "params.yaml")
    fake = {"fake": {"accuracy": 0.9728, "loss": 0.1164, "params": 24394}}
    (repo / "fake.yaml").write_text(yaml.safe_dump(fake, sort_keys=False))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / "fake_evaluate.py").write_text(FAKE_EVALUATE)
    commits = {"A": git_commit(repo, "code, no metrics yet")}
    reproduce(repo)
    commits["B"] = git_commit(repo, "baseline")
    sh("git", "checkout", "-qb", "feature", cwd=repo)
    reproduce(repo, accuracy=0.9725, loss=0.12)
    commits["C"] = git_commit(repo, "feature")
    sh("git", "checkout", "-q", "main", cwd=repo)
    reproduce(repo, accuracy=0.999)
    commits["D"] = git_commit(repo, "main moves on")
    sh("git", "checkout", "-q", "feature", cwd=repo)
    return repo, commits


@pytest.fixture
def repo(template, tmp_path, monkeypatch):
    """A fresh copy of the template, as the working directory."""
    copy = tmp_path / "repo"
    shutil.copytree(template[0], copy, symlinks=True)
    monkeypatch.chdir(copy)
    return copy


def run_gate(capsys, *argv):
    code = gate.main(list(argv))
    return code, capsys.readouterr().out


def test_a_change_within_every_threshold_passes_against_the_merge_base(repo, template):
    result = subprocess.run([sys.executable, "-m", "stages.gate"], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("## Metrics gate: PASS\n")
    assert f"`{template[1]['B'][:7]}`, the merge base of HEAD and `main`" in result.stdout
    assert ("| test accuracy %, mean [95% interval] | 97.28 (n 1, no interval) | 97.25 (n 1, no interval) | — "
            "| mean ≥ 95.00% | pass |") in result.stdout
    assert "| parameters | 24,394 | 24,394 | +0 | ≤ 25,000 | pass |" in result.stdout
    assert "Parameter count: 24,394 of a 25,000 budget" in result.stdout
    assert "committed at HEAD" not in result.stdout and "Thresholds differ" not in result.stdout
    assert (repo / "gate_report.md").read_text() == result.stdout


def test_main_s_tip_is_the_baseline_only_when_asked(repo, capsys):
    code, out = run_gate(capsys, "--rev", "main")
    assert code == 1
    assert "mean test accuracy dropped 2.65 pp against the baseline (allowed 0.30 pp)" in out


@pytest.mark.parametrize("values, failure", [
    ({"params": 30000}, "30,000 parameters exceed the budget of 25,000."),
    ({"accuracy": 0.969}, "mean test accuracy dropped 0.38 pp against the baseline (allowed 0.30 pp)."),
])
def test_each_threshold_fails_on_its_own_and_is_named(repo, capsys, values, failure):
    reproduce(repo, **values)
    code, out = run_gate(capsys, "--report", "elsewhere.md")
    assert code == 1
    assert f"**FAIL**: {failure}\n" in out  # the only failure
    assert out.count("| **FAIL** |") == 1
    assert (repo / "elsewhere.md").read_text() == out and not (repo / "gate_report.md").exists()
    assert "differ from those committed at HEAD" in out


def test_a_change_that_loosens_its_own_gate_and_worsens_the_model_still_fails(repo, capsys):
    set_params(repo, "gate", min_accuracy=0, max_accuracy_drop=99, max_params=10**9)
    reproduce(repo, accuracy=0.5, params=30000)
    code, out = run_gate(capsys)
    assert code == 1
    assert ("**FAIL**: mean test accuracy 50.00% is below the minimum 95.00%; mean test accuracy dropped 47.28 pp "
            "against the baseline (allowed 0.30 pp); 30,000 parameters exceed the budget of 25,000.") in out
    assert ("**This change moves the thresholds**: `min_accuracy` 0.95 → 0.0, `max_params` 25000 → 1000000000, "
            "`max_accuracy_drop` 0.3 → 99.0. They take effect once it has merged") in out


def test_thresholds_are_the_baseline_s_when_it_tightened_them(repo, template, capsys):
    """main tightens the minimum to 98%: a change branched before is judged by that once it is the baseline."""
    sh("git", "checkout", "-q", "main", cwd=repo)
    set_params(repo, "gate", min_accuracy=0.98)
    tightened = git_commit(repo, "main tightens the gate")
    sh("git", "checkout", "-q", "feature", cwd=repo)
    code, out = run_gate(capsys, "--rev", tightened)
    assert code == 1 and "mean test accuracy 97.25% is below the minimum 98.00%" in out
    assert "**This change moves the thresholds**: `min_accuracy` 0.98 → 0.95." in out


def test_a_git_failure_reading_the_baseline_s_thresholds_is_an_error_not_a_missing_section(repo, template):
    assert baseline.thresholds(template[1]["A"]) == baseline.thresholds(template[1]["B"])  # both have one
    with pytest.raises(CannotJudge, match="git cannot list params.yaml at 0000000"):
        baseline.thresholds("0" * 40)  # a commit git does not have


def test_a_drop_of_exactly_the_allowed_amount_passes(repo, capsys):
    reproduce(repo, accuracy=0.9698)  # 0.3 pp below 0.9728, which floats make 0.30000000000000027
    code, out = run_gate(capsys)
    assert code == 0, out
    assert ("| test accuracy vs baseline | 97.28 (n 1, no interval) | 96.98 (n 1, no interval) "
            "| -0.30 pp (no spread on one side) | drop ≤ 0.30 pp, none real (Welch p ≥ 0.05) | pass |") in out


@pytest.mark.parametrize("content, message", [
    (None, "metrics/test.json: missing; the evaluate stage writes it (run `dvc repro`)"),
    ('{"accuracy": 0.97, "params": ', "metrics/test.json: DVC cannot read it"),
    ('{"accuracy": NaN, "params": 24394}', "metrics/test.json: accuracy = nan is not a finite number"),
    ('{"accuracy": "97%", "params": 24394}', "metrics/test.json: accuracy = '97%' is not a finite number"),
    ('{"accuracy": 0.97}', "metrics/test.json: params = None is not a finite number"),
])
def test_missing_or_unusable_metrics_cannot_be_judged(repo, capsys, content, message):
    metrics = repo / "metrics/test.json"
    metrics.unlink() if content is None else metrics.write_text(content)
    code, out = run_gate(capsys)
    assert code == 2
    assert out.startswith("## Metrics gate: CANNOT JUDGE\n") and message in out
    assert "the merge base of HEAD and `main`" in out  # the baseline was found before the metrics failed
    assert (repo / "gate_report.md").read_text() == out  # the pull request still gets a comment


def test_an_unknown_revision_cannot_be_judged(repo, capsys):
    code, out = run_gate(capsys, "--rev", "no-such-branch")
    assert code == 2 and "--rev no-such-branch: unknown git revision" in out and "Baseline: not resolved" in out


def test_params_changed_but_not_reproduced_are_refused_as_stale(repo, capsys):
    set_params(repo, "fake", accuracy=0.99)
    code, out = run_gate(capsys)
    assert code == 1
    assert "the metrics are stale" in out and "Run `make repro`" in out
    assert "- `evaluate`: changed deps fake.yaml" in out
    assert "| metric |" not in out  # stale metrics are not judged at all: no table


def test_without_a_baseline_only_the_absolute_thresholds_are_judged(repo, template, capsys):
    code, out = run_gate(capsys, "--rev", template[1]["A"])
    assert code == 0, out
    assert f"No baseline: `metrics/test.json` does not exist at `{template[1]['A'][:7]}`" in out
    assert ("| test accuracy vs baseline | — | 97.25 (n 1, no interval) | — "
            "| drop ≤ 0.30 pp, none real (Welch p ≥ 0.05) | no baseline |") in out


def test_origin_main_stands_in_for_main_and_neither_cannot_be_judged(repo, template, capsys):
    sh("git", "branch", "-qD", "main", cwd=repo)
    code, out = run_gate(capsys)
    assert code == 2 and "no branch main or origin/main to compare with" in out
    sh("git", "update-ref", "refs/remotes/origin/main", template[1]["D"], cwd=repo)
    code, out = run_gate(capsys)
    assert code == 0, out
    assert f"`{template[1]['B'][:7]}`, the merge base of HEAD and `origin/main`" in out


def test_a_bad_threshold_cannot_be_judged_and_names_the_key(repo, capsys):
    set_params(repo, "gate", max_accuracy_drop=-1)
    code, out = run_gate(capsys)
    assert code == 2 and "gate.max_accuracy_drop = -1: must be a number in [0, 100) (percentage points)" in out


def test_a_baseline_with_a_bad_threshold_cannot_be_judged(repo, capsys):
    sh("git", "checkout", "-q", "main", cwd=repo)
    set_params(repo, "gate", min_accuracy=95)
    bad = git_commit(repo, "a gate that is not a fraction")
    sh("git", "checkout", "-q", "feature", cwd=repo)
    code, out = run_gate(capsys, "--rev", bad)
    assert code == 2 and f"params.yaml at {bad[:7]}: gate.min_accuracy = 95: must be a number in [0, 1)" in out


def test_the_metrics_files_the_gate_reads_are_the_pipeline_s_test_metrics():
    """The gate reads paths.test_metrics and paths.replicate_metrics; dvc.yaml must declare them as metrics."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = [next(iter(m)) if isinstance(m, dict) else m for m in stages["evaluate"]["metrics"]]
    assert declared == ["${paths.test_metrics}", "${paths.replicate_metrics}"]


@pytest.mark.parametrize("returned, code", [(None, 0), (0, 0), (1, 1), (2, 2)])
def test_cli_run_exits_with_what_main_returns(returned, code):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: returned)
    assert exit_info.value.code == code


def test_replicates_are_judged_with_their_spread_and_the_report_shows_both_intervals(repo, capsys):
    """Main committed at three seeds; the change at three: within the noise it passes, beyond it fails."""
    sh("git", "checkout", "-q", "main", cwd=repo)
    reproduce(repo, accuracy=0.9921, seeds=[0.9921, 0.9913, 0.9903])
    three = git_commit(repo, "main at three seeds")
    sh("git", "checkout", "-q", "feature", cwd=repo)
    reproduce(repo, accuracy=0.9916, seeds=[0.9916, 0.9908, 0.9900])  # 0.04 pp lower: noise
    code, out = run_gate(capsys, "--rev", three)
    assert code == 0, out
    assert ("| test accuracy vs baseline | 99.12 [98.90, 99.35] (n 3) | 99.08 [98.88, 99.28] (n 3) "
            "| -0.04 pp (p 0.284) | drop ≤ 0.30 pp, none real (Welch p ≥ 0.05) | pass |") in out
    assert "| served model's test accuracy (the first seed) | 99.21% | 99.16% | -0.05 pp | — | info |" in out
    reproduce(repo, accuracy=0.9893, seeds=[0.9893, 0.9889, 0.9896])  # 0.20 pp lower, beyond the noise
    code, out = run_gate(capsys, "--rev", three)
    assert code == 1
    assert ("**FAIL**: mean test accuracy dropped 0.20 pp against the baseline, more than its seeds' noise "
            "(Welch's t-test p = 0.024 < 0.05).") in out
