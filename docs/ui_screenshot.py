"""Take the README's picture of the MLflow UI: one experiment's runs table, in headless Chromium.

    python docs/ui_screenshot.py --url http://127.0.0.1:5000 --experiment mnist-compact-cnn -o docs/mlflow_runs.png

Against a running tracking server (`make ui`). The table shows no metric unless a
view says so: `--view KEY` opens the view the UI's Share button saved as KEY.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mnistcnn.team import ui


def screenshot(url: str, experiment: str, out: Path, view: str | None = None) -> None:
    """Write a 1400x900 PNG of `experiment`'s runs table on the server at `url`."""
    experiment_id = ui.experiment_id(url, experiment)
    if experiment_id is None:
        raise SystemExit(f"no experiment {experiment!r} on {url}")
    with tempfile.TemporaryDirectory() as profile:
        ui.render(ui.runs_table_url(url, experiment_id, view), Path(profile), "--hide-scrollbars",
                  "--window-size=1400,900", f"--screenshot={out.resolve()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the tracking server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--experiment", default="mnist-compact-cnn")
    parser.add_argument("--view", help="a shared view's key: which columns show")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/mlflow_runs.png"))
    args = parser.parse_args()
    screenshot(args.url, args.experiment, args.out, args.view)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
