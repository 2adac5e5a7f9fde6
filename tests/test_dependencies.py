"""dvc.yaml's deps name exactly what each stage's result depends on: `dvc status` checked both ways."""

import ast
import json
import os
import shutil
import sys

import pytest
import yaml

from tests.conftest import ROOT, committed_params, copy_code, git_commit, init_repo, sh, tool_env
from tests.test_layout import imports

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load(committed_params().read_text())

# Modules a stage imports that cannot change its outputs or its MLflow record, and why.
NOT_DEPENDENCIES = {
    "mnistcnn/cli.py": "exit codes and error messages only",
    "mnistcnn/phases.py": "timestamps for the benchmark, written only where $MNISTCNN_PHASES says",
}


def project_imports(path: str) -> set[str]:
    """The project's own modules that `path` imports, directly or through others (files, repo-relative)."""
    found, todo = set(), [path]
    while todo:
        for name in imports(ROOT / todo.pop()):
            file = name.replace(".", "/") + ".py"
            if name.startswith("mnistcnn.") and (ROOT / file).is_file() and file not in found:
                found.add(file)
                todo.append(file)
    return found


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_imports_is_a_dependency_and_no_other_code_is(stage):
    deps = set(STAGES[stage]["deps"])
    code = {d for d in deps if d.endswith(".py")}
    imported = project_imports(f"stages/{stage}.py") | {f"stages/{stage}.py"}
    assert imported - set(NOT_DEPENDENCIES) == code
    assert "requirements.lock" in deps  # the torch build decides the bytes of every output


def test_the_entry_points_package_sets_only_speed_and_chatter():
    """Importing any module runs mnistcnn/__init__.py, which no stage lists: a docstring only
    (tests/test_layout.py checks every package __init__). The entry points' package sets the
    process's OpenMP wait policy and MLflow's chatter, never a result."""
    body = ast.parse((ROOT / "stages/__init__.py").read_text()).body
    code = [ast.unparse(node) for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert code == ["import os", "if 'OMP_WAIT_POLICY' not in os.environ:\n    os.environ.setdefault('GOMP_SPINCOUNT', '10000')",
                    "os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')", "os.environ.setdefault('DO_NOT_TRACK', '1')",
                    "os.environ.setdefault('MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR', 'false')",
                    "os.environ.setdefault('MLFLOW_LOGGING_LEVEL', 'WARNING')",
                    "os.environ.setdefault('MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT', 'true')"]


def test_stages_spin_briefly_for_work_unless_the_user_says_otherwise():
    show = "import os, stages.train; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    assert sh(sys.executable, "-c", show, cwd=ROOT, env=env).strip() == "None 10000"
    assert sh(sys.executable, "-c", show, cwd=ROOT, env={**env, "GOMP_SPINCOUNT": "50"}).strip() == "None 50"
    passive = sh(sys.executable, "-c", show, cwd=ROOT, env={**env, "OMP_WAIT_POLICY": "PASSIVE"}).strip()
    assert passive == "PASSIVE None"  # the user's policy, with no spin count to override it


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A repository with the project's code whose dvc.lock records every stage as up to date.

    The outputs are placeholders recorded by `dvc commit`: `dvc status` compares deps, not results,
    so nothing needs training."""
    repo = tmp_path_factory.mktemp("deps") / "repo"
    init_repo(repo)
    copy_code(repo)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for key, path in PARAMS["paths"].items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if key == "raw":
            target.mkdir()
            (target / "placeholder").write_text("x")
        elif key != "gate_report":
            target.write_text("{}" if path.endswith(".json") else "x")
    env = tool_env()
    sh("dvc", "commit", "--force", "--quiet", cwd=repo, env=env)
    git_commit(repo, "every stage recorded")
    assert status(repo, env) == {}
    return repo, env


def status(repo, env) -> dict:
    return json.loads(sh("dvc", "status", "--json", cwd=repo, env=env))


@pytest.mark.parametrize("edited, rerun", [
    ("mnistcnn/gate/verdict.py", set()),  # the gate's rules: judge again, train nothing
    ("mnistcnn/gate/baseline.py", set()),
    ("stages/gate.py", set()),
    ("mnistcnn/cli.py", set()),
    ("mnistcnn/phases.py", set()),
    ("mnistcnn/search/space.py", set()),  # the search's code: no stage of the pipeline imports it
    ("mnistcnn/training/engine.py", {"train", "evaluate"}),
    ("mnistcnn/training/kernels.py", {"train", "evaluate"}),  # the CPU code paths
    ("mnistcnn/outputs.py", {"download", "train", "evaluate"}),  # the bytes of every saved file
    ("mnistcnn/model/weights.py", {"train", "evaluate"}),  # what the weights file holds, read back
    ("mnistcnn/model/layers.py", {"train", "evaluate"}),
    ("requirements.lock", {"download", "train", "evaluate"}),
])
def test_an_edit_reruns_exactly_the_stages_whose_result_it_can_change(committed, edited, rerun):
    repo, env = committed
    path = repo / edited
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        assert set(status(repo, env)) == rerun
    finally:
        path.write_text(original)
    assert status(repo, env) == {}
