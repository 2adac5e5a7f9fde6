"""The benchmark's record of where a stage's time goes: written only when asked, summed right."""

import json
import subprocess
import sys
import time

import pytest

from mnistcnn import phases

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def test_breakdown_attributes_each_interval_to_the_phase_it_ends():
    line = {"started": 100.0, "marks": [["imports", 103.0], ["data", 104.5], ["imports", 105.0]], "ended": 105.25}
    assert phases.breakdown(line) == {"imports": 3.5, "data": 1.5, "exit": 0.25}


def test_a_stage_records_its_phases_only_where_the_variable_says(tmp_path):
    script = "from mnistcnn import cli, phases\ncli.run(lambda: phases.mark('work'))"
    (tmp_path / "stage_x.py").write_text(script)
    log = tmp_path / "phases.jsonl"
    for env in ({}, {phases.ENV: str(log)}):
        result = subprocess.run([sys.executable, str(tmp_path / "stage_x.py")], env={"PATH": "/usr/bin", **env},
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    [line] = [json.loads(text) for text in log.read_text().splitlines()]  # one line: the second run's
    assert line["stage"] == "stage_x" and [m[0] for m in line["marks"]] == ["start-up and imports", "work"]
    assert line["started"] <= line["marks"][0][1] <= line["marks"][1][1] <= line["ended"]


def test_a_process_start_is_read_to_the_clock_tick():
    before = time.time()
    result = subprocess.run([sys.executable, "-c", "from mnistcnn import phases; print(repr(phases.process_start()))"],
                            capture_output=True, text=True, check=True)
    after = time.time()
    started = float(result.stdout)
    assert before - 0.02 <= started <= after  # a tick is 10 ms; psutil's create_time was 0.8 s off here
    assert started < before + (after - before) / 2  # the interpreter's start-up comes after it
