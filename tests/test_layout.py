"""The package's house rules, checked on every module there is: a check that grows with the code.

Folders by concern, each small; modules a newcomer reads in one sitting; imports that only
point inwards (no circle, function-level imports included); MLflow behind its two doors; and
the module that each scoring worker re-imports before it may answer its supervisor, light.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

PACKAGE = ROOT / "mnistcnn"
# Inner first: a module may import its own layer's modules and those of the layers before it.
LAYERS = [
    {"outputs", "phases"},
    {"model"},
    {"params"},
    {"data", "training"},
    {"tracking"},
    {"gate", "search", "serving", "team"},
    {"cli"},
]
MLFLOW_DOORS = {"tracking": "runs: their start, end, params, tags, metrics and artifacts",
                "serving": "the Model Registry and the served model"}
MAX_MODULES, MAX_LINES = 12, 200


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a subpackage's __init__ by the subpackage's)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (functions, TYPE_CHECKING blocks too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def project_arrows() -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    known = modules()
    return {name: {target for target in imports(path) if target in known and target != name}
            for name, path in known.items()}


def concern(module: str) -> str:
    """The first name below `mnistcnn`: a subpackage, or a top-level module."""
    return module.split(".")[1] if "." in module else ""


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if concern(module) in names)


def test_every_folder_of_the_package_holds_at_most_12_modules():
    folders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            folders.setdefault(path.parent.relative_to(ROOT), []).append(path.name)
    assert {str(f): len(m) for f, m in folders.items() if len(m) > MAX_MODULES} == {}
    assert len(folders) > 1  # grouped: not one flat folder


def test_no_module_is_over_200_lines():
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {path: n for path, n in lengths.items() if n > MAX_LINES} == {}


def test_every_concern_has_its_layer_and_imports_only_point_inwards():
    arrows = project_arrows()
    assert {concern(m) for m in arrows if m != "mnistcnn"} <= set().union(*LAYERS)
    outward = sorted(f"{source} -> {target}" for source, targets in arrows.items() if source != "mnistcnn"
                     for target in targets if target != "mnistcnn" and layer(target) > layer(source))
    assert outward == []


def test_no_import_circle_not_even_through_a_function_level_import():
    arrows = project_arrows()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(arrows[module]):
            assert state.get(target) != "open", " -> ".join(path[path.index(target):] + [target]) if target in path \
                else f"{module} -> {target}"
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(arrows):
        if module not in state:
            visit(module, [module])


def test_only_the_two_doors_import_mlflow():
    importers = {name for name, path in modules().items()
                 if any(i == "mlflow" or i.startswith("mlflow.") for i in imports(path))}
    importers |= {f"stages.{path.stem}" for path in (ROOT / "stages").glob("*.py")
                  if any(i == "mlflow" or i.startswith("mlflow.") for i in imports(path))}
    assert {m for m in importers if concern(m) not in MLFLOW_DOORS or m.startswith("stages.")} == set()


def test_a_packages_init_holds_its_map_and_nothing_that_runs():
    """Importing any module runs its packages' __init__ files, which no dvc.yaml stage lists: a docstring only."""
    inits = sorted(PACKAGE.rglob("__init__.py"))
    assert PACKAGE / "__init__.py" in inits and len(inits) > 1
    for init in inits:
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init


def test_the_module_each_scoring_worker_reimports_first_loads_neither_torch_nor_mlflow():
    """A scoring worker answers uvicorn's health check only once it has re-imported the server's main
    module, and is killed when that takes over 5 s: loading torch and MLflow took 16 s on a busy
    2-core machine, and workers were restarted in a loop (mnistcnn/serving/scoring_server.serve)."""
    heavy = ("torch", "mlflow", "pandas", "numpy")
    loaded = subprocess.run([sys.executable, "-c", f"import sys, mnistcnn.serving.scoring_server; "
                             f"print(sorted(set({heavy!r}) & set(sys.modules)))"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_layout_page_names_every_module_of_the_package_and_every_entry_point():
    page = (ROOT / "docs/layout.md").read_text()
    named = [*PACKAGE.rglob("*.py"), *(ROOT / "stages").glob("*.py")]
    assert len(named) > 40 and [str(path.relative_to(ROOT)) for path in named if path.name not in page] == []
