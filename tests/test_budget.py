"""`python -m stages.budget`: a model's cost before any training, with `dvc exp run -S` overrides."""

import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

OVER = "train.arch.blocks=[{channels:32,pool:max},{channels:64,pool:max},{channels:64,pool:max}]"


def budget(*overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    args = [arg for override in overrides for arg in ("-S", override)]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "stages.budget", *args], cwd=ROOT, capture_output=True, text=True)
    return result, time.perf_counter() - start


def test_a_named_model_fits_and_is_counted_with_its_multiply_adds():
    result, _ = budget("train.model=quick25k")
    assert result.returncode == 0, result.stderr
    assert "quick25k: 22,350 parameters, 1.44M multiply-adds per image" in result.stdout
    assert "fits gate.max_params = 25,000 (2,650 to spare)" in result.stdout


def test_a_declared_model_over_the_budget_is_refused_in_under_two_seconds_naming_count_and_budget():
    params = (ROOT / "params.yaml").read_text()
    result, seconds = budget("train.model=declared", OVER)
    assert result.returncode == 1
    assert "61,674 parameters is over gate.max_params = 25,000 by 36,674" in result.stderr
    assert seconds < 2, f"{seconds:.2f} s"
    assert (ROOT / "params.yaml").read_text() == params  # the overrides went to a copy


def test_no_torch_is_imported_to_count():
    probe = ("import sys\nfrom stages import budget\nsys.argv = ['budget', '-S', 'train.model=tiny10k']\n"
             "assert budget.main() == 0\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]" and "tiny10k: 9,610 parameters" in result.stdout


def test_bad_overrides_and_bad_shapes_are_one_line_errors():
    result, _ = budget("train.model=declared", "train.arch.blocks=[{channels:8,pool:max},{channels:0}]")
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: train.arch.blocks[1].channels = 0: must be an integer in [1, 1024]")
    result, _ = budget("train.lerning_rate=1")
    assert result.returncode == 1 and "error: -S train.lerning_rate=1: Could not override" in result.stderr
