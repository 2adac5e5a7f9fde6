"""The gate's pure judgement: metrics dicts and thresholds in, rows and a verdict out. No git, no DVC."""

import math

import pytest

from mnistcnn.gate import spread, verdict
from mnistcnn.gate.verdict import CANNOT_JUDGE, FAIL, PASS, CannotJudge, Metrics
from mnistcnn.params.schema import GateParams

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

GATE = GateParams(min_accuracy=0.95, max_params=25_000, max_accuracy_drop=0.3, confidence=0.95)
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
    assert [row.passed for row in result.checks] == [True, True, None, True, None]  # served, loss: shown


@pytest.mark.parametrize("current, failures", [
    (metrics(accuracy=0.9499), ["mean test accuracy 94.99% is below the minimum 95.00%",
                                "mean test accuracy dropped 2.29 pp against the baseline (allowed 0.30 pp)"]),
    (metrics(accuracy=0.9697), ["mean test accuracy dropped 0.31 pp against the baseline (allowed 0.30 pp)"]),
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
    assert result.summary == ("mean test accuracy 99.00% over 1 seed (minimum 95.00%), 8,890 parameters "
                              "(budget 25,000), +1.72 pp against the baseline's mean over 1 seed (one seed on "
                              "a side: no spread to test; allowed drop 0.30 pp).")
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
    looser = GateParams(min_accuracy=0.9, max_params=30_000, max_accuracy_drop=0.3, confidence=0.95)
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


# The rule on replicates (mnistcnn.gate.spread), on hand-made test accuracies at three seeds each.
SEEDS = (0.9921, 0.9913, 0.9903)  # the default recipe's seeds 0 to 2: mean 99.12%, sd 0.09 pp


@pytest.mark.parametrize("current, passed, p_range", [
    ((0.9921, 0.9913, 0.9903), True, (0.49, 0.51)),  # the same scores: no drop at all
    ((0.9925, 0.9931, 0.9918), True, (0.9, 1)),  # better
    ((0.9916, 0.9908, 0.9900), True, (0.2, 0.5)),  # 0.04 pp lower: well within the seeds' noise
    ((0.9893, 0.9889, 0.9896), False, (0, 0.05)),  # 0.20 pp lower, beyond the noise: a real drop
    ((0.9870, 0.9880, 0.9875), False, (0, 0.01)),  # 0.37 pp lower: over the allowance too
])
def test_the_replicate_rule_fails_a_real_drop_and_passes_noise(current, passed, p_range):
    judged = spread.judge(current, SEEDS, GATE)
    assert judged.failed is not passed, judged.reason
    assert p_range[0] <= judged.p <= p_range[1]
    result = verdict.judge(metrics(accuracy=current[0], seeds=current), metrics(accuracy=0.9921, seeds=SEEDS), GATE)
    assert result.code == (PASS if passed else FAIL)
    row = result.checks[1]
    assert row.baseline == "99.12 [98.90, 99.35] (n 3)" and row.passed is passed


def test_a_drop_within_the_allowance_but_beyond_the_noise_names_the_test():
    judged = spread.judge((0.9893, 0.9889, 0.9896), SEEDS, GATE)
    assert judged.reason == ("mean test accuracy dropped 0.20 pp against the baseline, more than its seeds' "
                             f"noise (Welch's t-test p = {judged.p:.3f} < 0.05)")


def test_a_noisy_change_is_still_held_to_the_allowance():
    """Spread cannot excuse a large drop: a mean 0.4 pp lower fails however wide the seeds scatter."""
    judged = spread.judge((0.9990, 0.9700, 0.9730), SEEDS, GATE)
    assert judged.p > 0.05 and judged.failed and "allowed 0.30 pp" in judged.reason


def test_with_one_seed_on_a_side_the_allowance_alone_judges_and_no_spread_is_made_up():
    judged = spread.judge((0.9900,), SEEDS, GATE)
    assert judged.p is None and not judged.failed and judged.p_text == "no spread on one side"
    assert judged.current.sd is None and judged.current.low is None
    assert spread.judge((0.9880,), SEEDS, GATE).failed  # 0.32 pp below the baseline's mean


def test_every_seed_s_accuracy_is_read_from_the_replicates_metrics():
    raw = {"n": 2, "seeds": {"1": {"test_accuracy": 0.99}, "0": {"test_accuracy": 0.98, "val_loss": 0.1}}}
    assert verdict.with_seeds(BASE, raw, "r.json").seeds == (0.98, 0.99)  # in seed order
    for bad in ({"n": 1}, {"seeds": {"0": {"test_accuracy": 99.0}}}, {"seeds": {"x": {"test_accuracy": 0.9}}},
                {"seeds": {"0": {"test_accuracy": "0.9"}}}, {"seeds": {}}):
        with pytest.raises(CannotJudge, match="r.json: expected each seed's test_accuracy"):
            verdict.with_seeds(BASE, bad, "r.json")
