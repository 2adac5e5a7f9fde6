"""`dvc plots show` and `dvc plots diff` draw every plot of dvc.yaml with no network at all: the page
.dvc/config names carries its charting libraries (plots/offline.py; `make plots-lib` builds it). Each
page is opened in a headless Chromium (Playwright) started in a network namespace of its own
(`unshare --net`), where a page that loads anything from a CDN draws nothing.

The histories and predictions the plots read are written here, not trained: this is about drawing."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import configobj
import pytest
import yaml
from playwright.sync_api import Page, Request

from mnistcnn.team import ui
from plots import offline
from tests.conftest import ROOT, git_commit, init_repo, sh, tool_env

PLOTS = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
PATHS = yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]
NO_NETWORK = ("unshare", "--net")  # as root: no interface but a loopback that is down
CDN = "https://cdn.jsdelivr.net/npm/vega@5.20.2"  # what DVC's own page loads first

# The page's state: its address, whether vega-embed loaded and at which versions, and for each plot
# DVC wrote (a <div id> in the body) whether vega drew it: a canvas with a painted pixel, or an SVG
# with shapes (either renderer's element has the class "marks").
STATE = """({
  href: location.href,
  complete: document.readyState === 'complete',
  versions: typeof vegaEmbed === 'function'
    ? {vega: vega.version, 'vega-lite': vegaLite.version, 'vega-embed': vegaEmbed.version} : null,
  plots: [...document.querySelectorAll('body > div[id]')].map(div => {
    const marks = div.querySelector('.marks');
    if (marks instanceof HTMLCanvasElement) {
      const {width, height} = marks;
      return [div.id, width > 0 && height > 0 &&
        marks.getContext('2d').getImageData(0, 0, width, height).data.some((v, i) => i % 4 === 3 && v > 0)];
    }
    return [div.id, marks !== null && marks.querySelector('path, rect, line, text') !== null];
  }),
})"""


def configured_page(repo: Path) -> Path:
    """The page DVC fills in for `repo`: its .dvc/config's plots.html_template, read from .dvc/ as DVC does."""
    return repo / ".dvc" / configobj.ConfigObj(str(repo / ".dvc/config"))["plots"]["html_template"]


def write_run(repo: Path, accuracy: float) -> None:
    """Three epochs of training and validation history and 50 test predictions, as the stages write them."""
    history = [{"epoch": epoch, "step": 100 * epoch, "loss": 1 / epoch, "accuracy": accuracy * epoch / 3}
               for epoch in (1, 2, 3)]
    predictions = "actual,predicted\n" + "".join(f"{i % 10},{(i + (i % 7 == 0)) % 10}\n" for i in range(50))
    for key, text in (("train_history", json.dumps(history)), ("val_history", json.dumps(history)),
                      ("predictions", predictions)):
        (repo / PATHS[key]).parent.mkdir(parents=True, exist_ok=True)
        (repo / PATHS[key]).write_text(text)


@pytest.fixture
def repo(tmp_path) -> Path:
    """This project's dvc.yaml, params.yaml and DVC folder (the page with it), a first run's
    histories and predictions committed, and a second run's in the workspace."""
    if not configured_page(ROOT).is_file():
        pytest.fail(f"{configured_page(ROOT)} is missing: run `make plots-lib`")
    repo = tmp_path / "repo"
    init_repo(repo)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    write_run(repo, accuracy=0.90)
    git_commit(repo, "a first run")
    write_run(repo, accuracy=0.96)
    return repo


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Page:
    """A page of one headless Chromium with no network, for the module's tests: Playwright launches
    a script that execs Chromium under NO_NETWORK (its pipe to Chromium, fds 3 and 4, passes through)."""
    if not os.access(ui.CHROMIUM, os.X_OK):
        pytest.fail(f"{ui.CHROMIUM} is missing: run `make browser` to install Debian's chromium")
    if subprocess.run([*NO_NETWORK, "true"], capture_output=True).returncode != 0:
        pytest.fail(f"`{' '.join(NO_NETWORK)}` is refused here: the test takes Chromium's network away as root")
    offline_chromium = tmp_path_factory.mktemp("chromium") / "chromium"
    offline_chromium.write_text(f'#!/bin/sh\nexec {shlex.join(NO_NETWORK)} {ui.CHROMIUM} "$@"\n')
    offline_chromium.chmod(0o755)
    with ui.chromium(offline_chromium) as chromium:
        yield chromium.new_page()


def open_page(browser: Page, page: Path, timeout: float = 30) -> tuple[dict, list[str]]:
    """Open `page`; its STATE once every plot drew, or once it loaded without vega-embed, or after
    `timeout`; and every address it asked for that is not a file."""
    asked: list[str] = []

    def record(request: Request) -> None:
        asked.append(request.url)

    browser.on("request", record)
    try:
        browser.goto(page.as_uri())
        deadline = time.monotonic() + timeout
        while True:
            state = browser.evaluate(STATE)
            if state["href"] == page.as_uri() and state["complete"]:
                if state["versions"] is None or all(drawn for _, drawn in state["plots"]):
                    break
            if time.monotonic() > deadline:
                break
            browser.wait_for_timeout(200)
    finally:
        browser.remove_listener("request", record)
    return state, [url for url in asked if not url.startswith(("file:", "data:", "blob:"))]


def assert_every_plot_drew(browser: Page, page: Path) -> None:
    state, fetched = open_page(browser, page)
    loads = re.findall(r"<script[^>]*\ssrc\s*=\s*\"([^\"]+)\"", page.read_text())
    assert state["versions"] is not None, f"vega-embed never loaded offline: the page loads {loads or 'no script'}"
    assert not fetched, f"the page asked the network for {fetched}"
    assert state["versions"] == {library.name: library.version for library in offline.LIBRARIES}
    assert len(state["plots"]) == len(PLOTS), state["plots"]  # a <div> for each plot of dvc.yaml
    assert all(drawn for _, drawn in state["plots"]), f"plots that drew nothing: {state['plots']}"


def test_plots_show_draws_every_plot_with_no_network_even_copied_elsewhere(repo, browser, tmp_path):
    sh("dvc", "plots", "show", cwd=repo, env=tool_env())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    page = Path(shutil.copy(repo / "dvc_plots/index.html", elsewhere))
    assert_every_plot_drew(browser, page)
    reach = f"fetch('{CDN}', {{mode: 'no-cors'}}).then(() => 'reached', () => 'unreachable')"
    assert browser.evaluate(reach) == "unreachable"  # the premise: this browser has no network


def test_plots_diff_draws_every_plot_of_the_last_commit_and_the_workspace_with_no_network(repo, browser):
    sh("dvc", "plots", "diff", cwd=repo, env=tool_env())
    page = repo / "dvc_plots/index.html"
    assert '"HEAD"' in page.read_text() and '"workspace"' in page.read_text()  # both runs, overlaid
    assert_every_plot_drew(browser, page)


def test_without_the_page_dvc_stops_with_an_error_rather_than_write_a_blank_page(repo):
    configured_page(repo).unlink()  # `make plots-lib` not run
    result = subprocess.run(["dvc", "plots", "show"], cwd=repo, env=tool_env(), capture_output=True, text=True)
    assert result.returncode != 0 and "{plot_divs}" in result.stdout + result.stderr
    assert not (repo / "dvc_plots/index.html").exists()
