"""CI cannot run here: check that the workflow and .ci/run parse and call the same make targets."""

import re

import yaml

from tests.conftest import ROOT

TARGETS = ["make test", "make repro", "make check-repro", "make gate"]


def make_targets(commands: list[str]) -> list[str]:
    pattern = r"\bmake (?:test-cpus|test|repro|check-repro|gate)(?![\w-])"
    return [match for command in commands for match in re.findall(pattern, command)]


def test_ci_script_runs_the_tests_the_pipeline_checks_it_reproduced_then_the_gate_and_other_cpus():
    lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if not line.startswith("#")]
    assert make_targets(lines) == [*TARGETS, "make test-cpus"]
    assert "accuracy" not in "\n".join(lines)  # the gate, not an inline check, judges the metrics


def test_the_pull_request_workflow_runs_the_same_targets_and_posts_the_report():
    workflow = yaml.safe_load((ROOT / ".github/workflows/gate.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    assert workflow["permissions"]["pull-requests"] == "write"
    steps = workflow["jobs"]["gate"]["steps"]
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    assert make_targets([step.get("run", "") for step in steps]) == ["make test", "make test-cpus", *TARGETS[1:]]
    names = [step.get("id") or step.get("name") for step in steps]
    gate, post, fail = steps[names.index("gate")], steps[names.index("Post the report")], steps[-1]
    assert gate["continue-on-error"] is True and "--report" in gate["run"]
    assert "always()" in post["if"] and "gh pr comment" in post["run"]
    assert fail["if"] == "steps.gate.outcome != 'success'" and "exit 1" in fail["run"]
    assert names.index("gate") < names.index("Post the report") < len(steps) - 1


def test_pull_requests_restore_from_the_team_remote_only_when_one_is_configured():
    workflow = yaml.safe_load((ROOT / ".github/workflows/gate.yml").read_text())
    job = workflow["jobs"]["gate"]
    assert job["env"]["DVC_REMOTE_URL"] == "${{ secrets.DVC_REMOTE_URL }}"
    names = [step.get("name") for step in job["steps"]]
    pull = job["steps"][names.index("Pull the team's outputs and run-cache")]
    assert pull["if"] == "env.DVC_REMOTE_URL != ''" and "make pull" in pull["run"]
    assert pull["continue-on-error"] is True  # what the remote lacks, the pipeline makes
    assert names.index("Pull the team's outputs and run-cache") < names.index("Pipeline")


def test_a_push_to_main_shares_its_outputs_and_run_cache():
    workflow = yaml.safe_load((ROOT / ".github/workflows/main.yml").read_text())
    assert workflow[True]["push"]["branches"] == ["main"]
    runs = [step.get("run", "") for step in workflow["jobs"]["share"]["steps"]]
    found = [t for r in runs for t in re.findall(r"\bmake (?:pull|repro|check-repro|push)\b", r)]
    assert found == ["make pull", "make repro", "make check-repro", "make push"]  # never push other bits
    share = workflow["jobs"]["share"]
    assert "DVC_REMOTE_CONFIGURED" in share["if"] and "MLFLOW_TRACKING_URI" in share["if"]
    pushes = [step for step in share["steps"] if "make push" in step.get("run", "")]
    assert pushes and all(step["if"] == "vars.DVC_REMOTE_CONFIGURED == 'true'" for step in pushes)
    promote = share["steps"][-1]
    assert promote["if"] == "env.MLFLOW_TRACKING_URI != ''" and promote["run"] == "make gate && make promote"
    # the server lets only the promoter promote: the job logs in as it, from secrets, never from vars
    assert {share["env"][f"MLFLOW_TRACKING_{k}"] for k in ("USERNAME", "PASSWORD")} == {
        "${{ secrets.MLFLOW_TRACKING_USERNAME }}", "${{ secrets.MLFLOW_TRACKING_PASSWORD }}"}
    makefile = (ROOT / "Makefile").read_text()
    assert "\tdvc push --run-cache" in makefile and "\tdvc pull --run-cache" in makefile
