"""CI cannot run here: check that the workflow and .ci/run parse and call the same make targets."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.conftest import ROOT

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

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
    tests, job = workflow["jobs"]["tests"], workflow["jobs"]["gate"]
    assert make_targets([step.get("run", "") for step in tests["steps"]]) == ["make test"]
    assert job["needs"] == "tests"
    steps = job["steps"]
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    assert make_targets([step.get("run", "") for step in steps]) == ["make test-cpus", *TARGETS[1:]]
    names = [step.get("id") or step.get("name") for step in steps]
    gate, post, fail = steps[names.index("gate")], steps[names.index("Post the report")], steps[-1]
    assert gate["continue-on-error"] is True and "--report" in gate["run"]
    assert "always()" in post["if"] and "gh pr comment" in post["run"]
    assert fail["if"] == "steps.gate.outcome != 'success'" and "exit 1" in fail["run"]
    assert names.index("gate") < names.index("Post the report") < len(steps) - 1


def admitted_pythons() -> list[str]:
    """The minor versions pyproject.toml's requires-python admits, of 3.8 to 3.19."""
    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    return [f"3.{minor}" for minor in range(8, 20) if f"3.{minor}.0" in spec]


def test_the_tests_run_on_every_python_the_project_admits():
    workflow = yaml.safe_load((ROOT / ".github/workflows/gate.yml").read_text())
    assert admitted_pythons() == ["3.11", "3.12", "3.13"]
    assert workflow["jobs"]["tests"]["strategy"]["matrix"]["python-version"] == admitted_pythons()


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "actionlint"), "-color=false", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_actionlint_finds_nothing_wrong_in_the_workflows():
    result = actionlint(*sorted((ROOT / ".github/workflows").glob("*.yml")))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_actionlint_catches_a_typo_in_an_expression(tmp_path):
    """The check can fail: a workflow with a misspelt context and a bad runner label is refused."""
    broken = tmp_path / "broken.yml"
    workflow = (ROOT / ".github/workflows/gate.yml").read_text()
    broken.write_text(workflow.replace("github.event.pull_request.number", "github.evnet.pull_request.number"))
    result = actionlint(broken)
    assert result.returncode == 1 and "evnet" in result.stdout


def workflow_texts() -> dict[str, str]:
    """Each workflow file's text, by name."""
    return {path.name: path.read_text() for path in sorted((ROOT / ".github/workflows").glob("*.yml"))}


def run_commands(text: str) -> list[str]:
    """The shell lines of a workflow's steps (comments dropped)."""
    jobs = yaml.safe_load(text)["jobs"].values()
    return [line.split(" #")[0] for job in jobs for step in job["steps"]
            for line in step.get("run", "").splitlines() if not line.lstrip().startswith("#")]


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def test_every_make_target_and_make_variable_the_workflows_name_exists():
    makefile = (ROOT / "Makefile").read_text()
    for name, text in workflow_texts().items():
        for command in (c for line in run_commands(text) for c in re.findall(r"\bmake ([^&|;]+)", line)):
            words = command.split()
            targets = [w for w in words if "=" not in w and not w.startswith(("-", '"', "$"))]
            assert set(targets) <= makefile_targets(), f"{name}: make {command}"
            for variable in (w.split("=")[0] for w in words if "=" in w):
                assert f"$({variable})" in makefile, f"{name}: make {command}: no variable {variable}"


def test_every_repository_variable_and_secret_the_workflows_read_is_documented():
    docs = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    for name, text in workflow_texts().items():
        for kind, key in re.findall(r"\b(vars|secrets)\.(\w+)", text):
            assert key in docs, f"{name} reads {kind}.{key}, which no page of the docs names"


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
    for verb in ("push", "pull"):  # outputs and run-cache, after the SSH remote's host key is checked
        assert f"\tpython -m stages.remote check && dvc {verb} --run-cache\n" in makefile


def test_the_committed_lock_records_every_code_dependency_as_it_is_now():
    """An edit to a stage's code without `dvc repro` leaves dvc.lock stale, which CI's check-repro
    finds after a quarter of an hour (the pipeline reruns and rewrites the lock); here in a second."""
    import hashlib  # noqa: PLC0415

    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    stale = sorted(f"{stage}: {dep['path']}" for stage, entry in lock.items() for dep in entry.get("deps", [])
                   if dep["path"] in tracked
                   and hashlib.md5((ROOT / dep["path"]).read_bytes()).hexdigest() != dep["md5"])
    checked = sum(dep["path"] in tracked for entry in lock.values() for dep in entry.get("deps", []))
    assert stale == [] and checked > 30, "run `make repro` and commit dvc.lock"
