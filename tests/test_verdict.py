"""The gate's pure judgement: metrics dicts and thresholds in, rows and a verdict out. No git, no DVC."""

import math

import pytest

from mnistcnn.gate import verdict
from mnistcnn.gate.verdict import CANNOT_JUDGE, FAIL, PASS, CannotJudge, Metrics
from mnistcnn.params.schema import GateParams

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

GATE = GateParams(min_accuracy=0.95, max_params=25_000, max_accuracy_drop=0.3)
BASE = Metrics(accuracy=0.9728, params=24_394, loss=0.1164)


def metrics(**changes):
    return Metrics(**{"accuracy": 0.9728, "params": 24_394, "loss": 0.1164, **changes})


def test_valid_metrics_are_read_and_extra_keys_ignored():
    raw = {"accuracy": 0.9728, "params": 24394, "loss": 0.12, "confusion": [[1]]}
    assert verdict.parse_metrics(raw, "m.json") == Metrics(0.9728, 24394, 0.12)
    assert verdict.parse_metrics({"accuracy": 1, "params": 24394.0}, "m.json") == Metrics(1.0, 24394, None)


@pytest.mark.parametrize("raw, message", [
    ({"accuracy": math.nan, "params": 1}, "m.json: accuracy = nan is not a finite number"),
    ({"accuracy": math.inf, "params": 1}, "m.json: accuracy = inf is not a finite number"),
    ({"accuracy": True, "params": 1}, "m.json: accuracy = True is not a finite number"),
    ({"accuracy": "0.97", "params": 1}, "m.json: accuracy = '0.97' is not a finite number"),
    ({"params": 1}, "m.json: accuracy = None is not a finite number"),
    ({"accuracy": 97.28, "params": 1}, "m.json: accuracy = 97.28 is not a fraction in [0, 1]"),
    ({"accuracy": 0.97, "params": 24394.5}, "m.json: params = 24394.5 is not a parameter count"),
    ({"accuracy": 0.97, "params": -1}, "m.json: params = -1 is not a parameter count"),
    ([0.97], "m.json: expected a mapping of metrics, got [0.97]"),
])
def test_unusable_metrics_cannot_be_judged_and_name_the_source_and_key(raw, message):
    with pytest.raises(CannotJudge) as err:
        verdict.parse_metrics(raw, "m.json")
    assert str(err.value) == message


def test_a_non_numeric_loss_is_shown_as_missing_not_judged():
    assert verdict.parse_metrics({"accuracy": 0.9, "params": 1, "loss": math.nan}, "m").loss is None


def test_values_on_every_threshold_pass():
    current = metrics(accuracy=0.95, params=25_000)
    result = verdict.judge(current, metrics(accuracy=0.9530), GATE)  # 0.3 pp, up to float error
    assert result.code == PASS
    assert [row.passed for row in result.checks] == [True, True, True, None]


@pytest.mark.parametrize("current, failures", [
    (metrics(accuracy=0.9499), ["test accuracy 94.99% is below the minimum 95.00%",
                                "test accuracy dropped 2.29 pp against the baseline (allowed 0.30 pp)"]),
    (metrics(accuracy=0.9697), ["test accuracy dropped 0.31 pp against the baseline (allowed 0.30 pp)"]),
    (metrics(params=25_001), ["25,001 parameters exceed the budget of 25,000"]),
])
def test_each_failure_is_named_in_the_summary(current, failures):
    result = verdict.judge(current, BASE, GATE)
    assert result.code == FAIL
    assert result.summary == "; ".join(failures) + "."
    assert sum(row.passed is False for row in result.checks) == len(failures)


def test_an_improvement_passes_and_the_summary_says_by_how_much():
    result = verdict.judge(metrics(accuracy=0.99, params=8_890, loss=0.03), BASE, GATE)
    assert result.code == PASS
    assert result.summary == ("test accuracy 99.00% (minimum 95.00%), 8,890 parameters (budget 25,000), "
                              "+1.72 pp against the baseline (allowed drop 0.30 pp).")
    rows = {row.metric: row for row in result.checks}
    assert rows["parameters"].delta == "-15,504" and rows["test loss"].delta == "-0.0864"


def test_without_a_baseline_the_regression_row_is_shown_but_not_judged():
    result = verdict.judge(metrics(accuracy=0.96), None, GATE)
    assert result.code == PASS and "no baseline to compare with" in result.summary
    regression = result.checks[1]
    assert regression.passed is None and regression.baseline == "—" and regression.delta == "—"
    assert verdict.judge(metrics(accuracy=0.94), None, GATE).code == FAIL  # absolute thresholds still hold


def test_thresholds_a_change_proposes_are_named_as_taking_effect_after_it_merges():
    assert verdict.threshold_changes(GATE, GATE) == []
    looser = GateParams(min_accuracy=0.9, max_params=30_000, max_accuracy_drop=0.3)
    assert verdict.threshold_changes(looser, GATE) == [
        "**This change moves the thresholds**: `min_accuracy` 0.95 → 0.9, `max_params` 25000 → 30000. "
        "They take effect once it has merged; it is judged by the baseline's."]
    assert verdict.threshold_changes(GATE, None) == [
        "The baseline has no `gate:` section: this change's own thresholds are used."]


def test_dvc_status_becomes_one_line_per_stage():
    status = {"train": [{"changed deps": {"params.yaml": {"train": "modified"}, "stages/train.py": "modified"}},
                        {"changed outs": {"models/model.pt": "deleted"}}, "changed command"],
              "evaluate": ["always changed"]}
    assert verdict.describe_status(status) == [
        "`train`: changed deps params.yaml, stages/train.py; changed outs models/model.pt; changed command",
        "`evaluate`: always changed"]


def test_the_report_has_the_verdict_the_table_and_the_parameter_count():
    report = verdict.markdown(verdict.judge(metrics(params=30_000), BASE, GATE, ["a note"]), "`abc1234`")
    lines = report.splitlines()
    assert lines[0] == "## Metrics gate: FAIL"
    assert lines[2] == "**FAIL**: 30,000 parameters exceed the budget of 25,000."
    assert "Baseline: `abc1234`" in lines and "- a note" in lines
    assert "| parameters | 24,394 | 30,000 | +5,606 | ≤ 25,000 | **FAIL** |" in lines
    assert "| test loss | 0.1164 | 0.1164 | +0.0000 | — | info |" in lines
    assert lines[-1] == "Parameter count: 30,000 of a 25,000 budget (120% used)."


def test_stale_and_unjudgeable_reports_have_no_table():
    stale = verdict.markdown(verdict.stale(["`train`: changed command"]), "`abc1234`")
    assert stale.startswith("## Metrics gate: FAIL\n") and "Run `make repro`" in stale
    assert "- `train`: changed command" in stale and "| metric |" not in stale
    unjudged = verdict.markdown(verdict.Verdict(CANNOT_JUDGE, "m.json: missing"), "not resolved")
    assert unjudged.startswith("## Metrics gate: CANNOT JUDGE\n\n**CANNOT JUDGE**: m.json: missing\n")
