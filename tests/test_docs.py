"""The README and docs/*.md point only at things that exist.

Every command their `sh` blocks show (and every inline span that starts with one)
names a real `make` target, a real `python -m` module and a real `dvc`
subcommand; every relative link, image and `#anchor` resolves to a file and a
heading. The checks grow with the pages: a new page, block or link is checked
with no list to extend. The last tests feed each check a broken line, so each
can be seen to fail.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 260
SHELLS = ("sh", "bash", "shell")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# --- reading a page ------------------------------------------------------------------------------

def blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """Each fenced block: (its info word, the line number of its first line, its lines)."""
    found, fence, info, start, body = [], None, "", 0, []
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, info, start, body = match.group(1), match.group(2).lower(), number + 1, []
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0] + " "):
            found.append((info, start, body))
            fence = None
        elif fence is not None:
            body.append(line)
    return found


def prose(text: str) -> str:
    """The page with its fenced blocks blanked, line for line: where headings, links and inline code are."""
    fence, lines = None, []
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0] + " "):
            fence = None
        elif fence is None:
            lines.append(line)
            continue
        lines.append("")
    return "\n".join(lines)


# An inline code span: a run of backticks, then anything up to the same run, within a paragraph.
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def code_spans(text: str) -> list[tuple[int, str]]:
    """The inline code spans of some prose, with their line numbers; a span's line breaks read as spaces."""
    return [(line_of(text, m.start()), m.group(2).strip().replace("\n", " ")) for m in CODE_SPAN.finditer(text)]


def without_code(text: str) -> str:
    """The prose with its code spans blanked, keeping its line breaks."""
    return CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


# --- shell commands ------------------------------------------------------------------------------

def simple_commands(line: str) -> list[str]:
    """One shell line's simple commands: its comment dropped, split at ; & | ( ) and $( ."""
    commands, current, quote, i = [], "", None, 0
    while i < len(line):
        char = line[i]
        if quote:
            if char == "\\" and quote == '"':
                current, i = current + line[i:i + 2], i + 2
                continue
            quote = None if char == quote else quote
            current += char
        elif char in "'\"":
            quote, current = char, current + char
        elif char == "\\":
            current, i = current + line[i:i + 2], i + 2
            continue
        elif char == "#" and (not current or current[-1].isspace()):
            break
        elif char in ";&|()" or line.startswith("$(", i):
            commands.append(current)
            current = ""
            i += 2 if line.startswith("$(", i) else 1
            continue
        else:
            current += char
        i += 1
    return [c.strip() for c in [*commands, current] if c.strip()]


def words(command: str) -> list[str]:
    """A simple command's words, without the variable assignments before it."""
    try:
        argv = shlex.split(command)
    except ValueError:  # quoting the scanner split apart (a quote inside $(...)): good enough
        argv = command.split()
    while argv and ASSIGNMENT.match(argv[0]):
        argv = argv[1:]
    return argv


def shell_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """A block's logical lines (continuations joined), each with the number of its first line."""
    joined, start, current = [], None, ""
    for number, line in enumerate(lines, first):
        start = number if start is None else start
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append((start, current + line))
        start, current = None, ""
    if current:
        joined.append((start, current))
    return joined


def commands_of(text: str) -> list[tuple[int, list[str]]]:
    """Every command a page shows: each simple command of its sh blocks, and each inline code span
    that starts with `make `, `dvc ` or `python -m `; with its line number."""
    found = []
    for info, first, lines in blocks(text):
        if info in SHELLS:
            for number, line in shell_lines(lines, first):
                found += [(number, argv) for command in simple_commands(line) if (argv := words(command))]
    for number, span in code_spans(prose(text)):
        if re.match(r"(\w+=\S+ )*(make|dvc|python -m) ", span):
            found += [(number, argv) for command in simple_commands(span) if (argv := words(command))]
    return found


@functools.cache
def makefile_targets() -> frozenset[str]:
    """The targets the Makefile's rule lines declare (not its variables, nor pattern or $(...) targets)."""
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-][A-Za-z0-9_. -]*?)\s*::?(?![=])", line)
        if match and not line.startswith("\t"):
            targets |= {name for name in match.group(1).split() if not name.startswith(".")}
    return frozenset(targets)


@functools.cache
def make_dry_run(target: str) -> str | None:
    """None when `make -n TARGET` would run; else what make said."""
    result = subprocess.run(["make", "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True)
    return None if result.returncode == 0 else (result.stderr or result.stdout).strip()


def make_problems(argv: list[str], targets: frozenset[str], dry_run=make_dry_run) -> list[str]:
    names = [w for w in argv[1:] if not w.startswith("-") and not ASSIGNMENT.match(w)]
    if not names:
        return [f"`{shlex.join(argv)}`: names no target"]
    problems = []
    for name in names:
        if name not in targets:
            problems.append(f"`{shlex.join(argv)}`: the Makefile has no target `{name}`")
        elif (said := dry_run(name)) is not None:
            problems.append(f"`{shlex.join(argv)}`: `make -n {name}` fails: {said}")
    return problems


@functools.cache
def module_exists(module: str) -> bool:
    """Whether `python -m MODULE` finds it: a module or package of this checkout, or an installed one."""
    path = ROOT.joinpath(*module.split("."))
    if (ROOT / module.split(".")[0] / "__init__.py").is_file():  # stages/, mnistcnn/, benchmarks/, ...
        return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def python_problems(argv: list[str], exists=module_exists) -> list[str]:
    if "-m" not in argv[1:-1]:
        return []
    module = argv[argv.index("-m") + 1]
    return [] if exists(module) else [f"`{shlex.join(argv)}`: no module `{module}` here or installed"]


@functools.cache
def dvc_parser() -> argparse.ArgumentParser:
    from dvc.cli.parser import get_main_parser  # noqa: PLC0415 (only here: it imports every dvc command)

    return get_main_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict | None:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def dvc_problems(argv: list[str], parser_of=dvc_parser) -> list[str]:
    """The words after `dvc` walked down dvc's own parser, as `dvc WORDS --help` would be: each must be
    a subcommand where the parser has subcommands (`exp` then `run`, `remote` then `add`)."""
    parser, path = parser_of(), ["dvc"]
    for word in argv[1:]:
        choices = subcommands(parser)
        if choices is None or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        if word not in choices:
            return [f"`{shlex.join(argv)}`: `{' '.join(path)}` has no subcommand `{word}`"]
        parser, path = choices[word], [*path, word]
    return [] if len(path) > 1 else [f"`{shlex.join(argv)}`: names no dvc subcommand"]


def command_problems(text: str, targets: frozenset[str] | None = None, **checks) -> list[str]:
    """What is wrong with the commands a page shows, each with its line number."""
    targets = makefile_targets() if targets is None else targets
    problems = []
    for number, argv in commands_of(text):
        program = Path(argv[0]).name
        if program == "make":
            found = make_problems(argv, targets, checks.get("dry_run", make_dry_run))
        elif re.fullmatch(r"python(3(\.\d+)?)?", program):
            found = python_problems(argv, checks.get("exists", module_exists))
        elif program == "dvc":
            found = dvc_problems(argv, checks.get("parser_of", dvc_parser))
        else:
            found = []
        problems += [f"line {number}: {p}" for p in found]
    return problems


# --- links and anchors ---------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (a `#` line in a fenced block is none), duplicates numbered as GitHub does."""
    counts: dict[str, int] = {}
    found = set()
    for line in prose(text).splitlines():
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        if match:
            base = slug(match.group(1))
            found.add(f"{base}-{counts[base]}" if base in counts else base)
            counts[base] = counts.get(base, 0) + 1
    return found


LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(text: str) -> list[tuple[int, str]]:
    """Every link and image target of a page's prose (not of its code), with its line number."""
    text = without_code(prose(text))
    return [(line_of(text, m.start()), m.group(1)) for m in LINK.finditer(text)]


def link_problems(page: Path, text: str | None = None) -> list[str]:
    """Each relative link of `page` that names no file, or an anchor no heading of its page makes."""
    text = page.read_text() if text is None else text
    problems = []
    for number, target in links(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", target):
            continue  # https:, mailto:: not this checkout's
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if path and not file.exists():
            shown = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
            problems.append(f"line {number}: ({target}): no file {shown}")
        elif anchor and file.suffix == ".md":
            if anchor not in anchors(file.read_text() if file != page else text):
                problems.append(f"line {number}: ({target}): {file.name} has no heading with the anchor #{anchor}")
    return problems


# --- the pages -----------------------------------------------------------------------------------

def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_command_a_page_shows_names_a_target_module_or_subcommand_that_exists(page):
    assert command_problems(page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_and_anchor_of_a_page_resolves(page):
    assert link_problems(page) == []


RUN_MODULE = re.compile(r"(?:\bpython3?|\$\(PYTHON\))(?:\s+-\w+)*\s+-m\s+([\w.]+)")


def test_every_module_the_makefile_dvc_yaml_and_ci_run_names_exists():
    """`make -n` passes a recipe whose module is missing (`make bench-serve` named one for months)."""
    sources = {name: "\n".join(line for line in (ROOT / name).read_text().splitlines()
                               if not line.lstrip().startswith("#")) for name in ("Makefile", "dvc.yaml", ".ci/run")}
    found = {(name, module) for name, text in sources.items() for module in RUN_MODULE.findall(text)}
    assert {module for _, module in found} >= {"stages.train", "benchmarks.load", "plots.offline"}
    assert [f"{name}: python -m {module}" for name, module in sorted(found) if not module_exists(module)] == []


def test_the_readme_is_a_front_door_that_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    first = next(lines for info, _, lines in blocks(text) if info in SHELLS)
    assert [argv for _, line in shell_lines(first, 1) for c in simple_commands(line) if (argv := words(c))] == [
        ["make", "repro"], ["make", "test"]]
    assert ("MNIST_MIRROR=../shared/datasets/mnist make repro") in text
    readme_links = {target.partition("#")[0] for _, target in links(text)}
    assert {page_id(p) for p in PAGES[1:]} <= readme_links  # every page is reachable from the front door


def test_the_pages_show_commands_for_the_checks_to_read():
    """The extraction finds what is there (a parser that found nothing would pass every page)."""
    shown = [argv for page in PAGES for _, argv in commands_of(page.read_text())]
    assert ["make", "repro"] in shown and ["dvc", "exp", "run", "-S", "train.seed=1"] in shown
    assert any(argv[:3] == ["python", "-m", "stages.tracking_server"] for argv in shown)
    assert sum(len(links(page.read_text())) for page in PAGES) > 50


def test_the_team_pages_first_run_on_the_server_runs_the_stages_even_on_an_up_to_date_clone():
    """A plain `make repro` on a clone that is up to date runs no stage, and logs nothing to the server."""
    shown = [argv for _, argv in commands_of((ROOT / "docs/team.md").read_text())]
    pointed = next(i for i, argv in enumerate(shown) if "MLFLOW_TRACKING_URI=" in " ".join(argv))
    first = next(argv for argv in shown[pointed:] if argv[:2] in (["make", "repro"], ["dvc", "repro"], ["dvc", "exp"]))
    assert first[:3] in (["dvc", "repro", "--force"], ["dvc", "repro", "-f"], ["dvc", "exp", "run"]), first


BARE_PYTHON = re.compile(r"(?:^|[\s$(])python3?\s")


def bare_python(text: str) -> list[str]:
    """The sh lines that run a bare `python` before the page activates the venv: in a new shell it is
    the system's, with none of the project's packages."""
    activate = text.find("source .venv/bin/activate")
    return [f"line {start + i}: {line.strip()}" for info, start, lines in blocks(text) if info in ("sh", "bash", "")
            for i, line in enumerate(lines) if BARE_PYTHON.search(line.split("#")[0])
            and not 0 <= activate < line_offset(text, start + i)]


def line_offset(text: str, number: int) -> int:
    return sum(len(line) + 1 for line in text.splitlines()[: number - 1])


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_a_page_runs_python_from_the_venv(page):
    assert bare_python(page.read_text()) == []


# --- each check, fed a broken line ---------------------------------------------------------------

def sh_block(*lines: str) -> str:
    return "\n".join(["Some prose.", "", "```sh", *lines, "```", ""])


def test_the_command_check_fails_on_a_target_module_or_subcommand_that_does_not_exist():
    targets = frozenset({"repro", "test", "compare"})
    dry = lambda target: None  # noqa: E731 (no make run: the target set above is the Makefile here)
    assert command_problems(sh_block("make repro   # fine", "make compare COMPARE_ARGS=--only-changed"), targets,
                            dry_run=dry) == []
    broken = sh_block("make repro && make reproo", "MNIST_MIRROR=x make plots  # a target nobody wrote")
    assert command_problems(broken, targets, dry_run=dry) == [
        "line 4: `make reproo`: the Makefile has no target `reproo`",
        "line 5: `make plots`: the Makefile has no target `plots`"]
    assert command_problems(sh_block("make repro"), targets, dry_run=lambda t: "make: *** No rule") == [
        "line 4: `make repro`: `make -n repro` fails: make: *** No rule"]
    assert command_problems(sh_block("python -m stages.trian --fast", "python -m stages.train"), targets) == [
        "line 4: `python -m stages.trian --fast`: no module `stages.trian` here or installed"]
    assert command_problems(sh_block("python -m no_such_module_anywhere", "python -m mnistcnn"), targets) == [
        "line 4: `python -m no_such_module_anywhere`: no module `no_such_module_anywhere` here or installed",
        "line 5: `python -m mnistcnn`: no module `mnistcnn` here or installed"]  # a package without __main__
    assert command_problems(sh_block("python3 -m venv .venv", "python -m pytest", "python -m plots.offline x"),
                            targets) == []
    assert command_problems(sh_block("dvc exp runn -S a=1", "dvc repor", "dvc queue start -j 2"), targets) == [
        "line 4: `dvc exp runn -S a=1`: `dvc exp` has no subcommand `runn`",
        "line 5: `dvc repor`: `dvc` has no subcommand `repor`"]
    prose_span = "Run `make bench-everything` once, and `dvc plots diff a b`.\n"
    assert command_problems(prose_span, targets, dry_run=dry) == [
        "line 1: `make bench-everything`: the Makefile has no target `bench-everything`"]


def test_the_command_reader_drops_comments_and_quotes_and_splits_chains():
    assert simple_commands('make search SEARCH_ARGS="--trials 30"   # a # in a comment') == [
        'make search SEARCH_ARGS="--trials 30"']
    assert simple_commands("make repro && make gate; dvc repro --pull | tee log") == [
        "make repro", "make gate", "dvc repro --pull", "tee log"]
    assert words('SERVE_PORT=1 make serve MODEL_URI="models:/m/3"') == ["make", "serve", "MODEL_URI=models:/m/3"]
    assert shell_lines(["make search \\", "  SEARCH_ARGS=x", "make ui"], 10) == [
        (10, "make search    SEARCH_ARGS=x"), (12, "make ui")]


def test_the_makefile_reader_finds_rules_not_variables():
    targets = makefile_targets()
    assert {"repro", "test", "compare", "ui", "bench", "install"} <= targets
    assert not {"PYTHON", "BIN", "export", "PHONY", ".PHONY"} & targets


def test_the_python_check_fails_before_the_venv_is_active_and_passes_after():
    assert bare_python(sh_block('curl -d "$(python -c 1)"')) == ['line 4: curl -d "$(python -c 1)"']
    assert bare_python(sh_block(".venv/bin/python -m stages.predict x.png", "python3 -V  # a comment")) == [
        "line 5: python3 -V  # a comment"]
    assert bare_python(sh_block("source .venv/bin/activate", "python -m stages.recipe tiny10k")) == []


def test_the_link_check_fails_on_a_missing_file_or_heading():
    page = ROOT / "docs" / "example.md"  # never written: its text is given
    text = "\n".join([
        "# Example", "", "## A section: with `code`", "", "```sh", "# Not a heading", "```", "",
        "[ok](#a-section-with-code), [ok](install.md), [ok](../README.md), ![ok](sweep.png), [ok](https://x.org)",
        "[gone](installing.md), [lost](#not-a-heading), [lost](install.md#no-such-section)",
        "`[in code](nowhere.md)` is not a link",
    ])
    assert link_problems(page, text) == [
        "line 10: (installing.md): no file docs/installing.md",
        "line 10: (#not-a-heading): example.md has no heading with the anchor #not-a-heading",
        "line 10: (install.md#no-such-section): install.md has no heading with the anchor #no-such-section"]


def test_anchors_are_githubs():
    assert slug("train.arch: a declared architecture") == "trainarch-a-declared-architecture"
    assert slug("Its size, and a CPU-only install") == "its-size-and-a-cpu-only-install"
    assert slug("Counting before training: `make budget`") == "counting-before-training-make-budget"
    assert anchors("# A\n## A\n## B\n") == {"a", "a-1", "b"}
