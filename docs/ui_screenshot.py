"""Take the docs' picture of the MLflow UI (docs/team.md): one experiment's runs table, in headless Chromium.

    python docs/ui_screenshot.py --url http://127.0.0.1:5000 --experiment mnist-compact-cnn -o docs/mlflow_runs.png

Against a running tracking server (`make ui`). The table shows no metric unless a view says so:
it opens the view the pipeline saves on the experiment (`--view KEY`: the one the UI's Share
button saved as KEY). MLflow opens its Assistant panel, a third of the window, on a first visit,
and a banner over a shared view: the script closes both, and fails unless the window shows the
validation and test accuracy and the parameter count.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as Late

from mnistcnn.team import ui
from mnistcnn.tracking.store import VIEW

# Wide enough for the view's columns, the parameters last (param_count and seed at their end).
WINDOW = {"width": 1760, "height": 640}
IN_VIEW = ["val/accuracy", "test/accuracy", "param_count"]
# The table has loaded with the view's columns (the grid draws only the columns in the window).
LOADED = ["val/accuracy", "matching runs"]
# The columns of IN_VIEW whose header does not lie whole in the window.
OFF_SCREEN = """columns => columns.filter(name => ![...document.querySelectorAll('[role=columnheader]')]
  .some(h => h.innerText.trim() === name && h.getBoundingClientRect().right <= window.innerWidth))"""


def close_panels(page: Page) -> None:
    """Close the Assistant panel and hide the shared view's banner, where the UI shows them."""
    assistant_close = page.get_by_role("button", name="Close", exact=True)
    for button in (assistant_close, page.get_by_role("button", name="Hide banner")):
        with contextlib.suppress(Late):  # not shown: the Assistant opens by itself on localhost only
            button.click(timeout=5_000)
            button.wait_for(state="hidden")


def wait_in_view(page: Page, timeout: float = 10) -> None:
    """Return once every column of IN_VIEW is in the window; exit naming those that are not."""
    try:
        page.wait_for_function(f"columns => ({OFF_SCREEN})(columns).length === 0", arg=IN_VIEW,
                               timeout=timeout * 1000)
    except Late:
        raise SystemExit(f"columns outside the {WINDOW['width']}-pixel window or not shown: "
                         f"{page.evaluate(OFF_SCREEN, IN_VIEW)}") from None


def screenshot(url: str, experiment: str, out: Path, view: str | None = VIEW) -> None:
    """Write a PNG of `experiment`'s runs table on the server at `url`, the size of WINDOW."""
    experiment_id = ui.experiment_id(url, experiment)
    if experiment_id is None:
        raise SystemExit(f"no experiment {experiment!r} on {url}")
    with ui.chromium() as browser:
        page = browser.new_page(viewport=WINDOW)
        ui.shown(page, ui.runs_table_url(url, experiment_id, view), LOADED)
        close_panels(page)
        wait_in_view(page)
        page.screenshot(path=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the tracking server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--experiment", default="mnist-compact-cnn")
    parser.add_argument("--view", default=VIEW, help="a shared view's key: which columns show (default: %(default)s)")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/mlflow_runs.png"))
    args = parser.parse_args()
    screenshot(args.url, args.experiment, args.out, args.view)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
