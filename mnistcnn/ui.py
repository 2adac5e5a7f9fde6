"""Open the MLflow UI on the table of training runs, not on MLflow 3's GenAI view.

MLflow 3.17's UI shows `#/experiments/<id>` as a GenAI overview (traces, tokens,
cost) in a fresh browser, even for an experiment tagged as model training;
`#/experiments/<id>/runs` opens its runs table. `python -m mnistcnn.ui` prints
that address for the project's experiment, then becomes `mlflow ui`:

    python -m mnistcnn.ui --backend-store-uri sqlite:///mlruns/mlflow.db --experiment mnist-compact-cnn

`render` loads a page of the UI in headless Chromium, for the UI's test and the
docs' screenshot (docs/ui_screenshot.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

# No calls home, as in mnistcnn.tracking; no job runner (its workers serve GenAI judges, not runs).
SERVER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
CHROMIUM = "/usr/bin/chromium"  # Debian's: `make browser` installs it
# Headless, offline, as root in a container: no GPU, no sandbox, nothing fetched but the page.
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def runs_table_url(base_url: str, experiment_id: str, view: str | None = None) -> str:
    """The address of one experiment's runs table in MLflow 3.17's UI.

    `view` names a shared view, an experiment tag `mlflow.sharedViewState.<view>`
    (what the UI's Share button writes), choosing for example which columns show.
    """
    url = f"{base_url.rstrip('/')}/#/experiments/{quote(experiment_id, safe='')}/runs"
    return f"{url}?viewStateShareKey={quote(view, safe='')}" if view else url


def experiments_url(base_url: str) -> str:
    """The address of the UI's list of experiments."""
    return f"{base_url.rstrip('/')}/#/experiments"


def experiment_id(store_uri: str, name: str) -> str | None:
    """The id of the active experiment `name` in the store, None if it has none (yet)."""
    if store_uri.startswith("sqlite:///") and not Path(store_uri.removeprefix("sqlite:///")).exists():
        return None  # looking would create the database; `mlflow ui` will
    from mlflow import MlflowClient  # only here: it takes seconds to import

    experiment = MlflowClient(tracking_uri=store_uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment and experiment.lifecycle_stage == "active" else None


def render(url: str, profile: Path, *flags: str, timeout: float = 120) -> str:
    """Load `url` in a fresh headless Chromium until its requests and timers settle, then do what
    `flags` ask (`--dump-dom`, `--screenshot=PATH`); returns what it printed.

    `profile` is an empty folder Chromium may write. Virtual time waits for every request, so
    the page is rendered however slowly the server answers; 10 s of it is ample for MLflow's UI.
    """
    command = [CHROMIUM, *HEADLESS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *flags, url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as browser:
        try:
            out, err = browser.communicate(timeout=timeout)
        except BaseException:
            os.killpg(browser.pid, signal.SIGKILL)  # Chromium and its helper processes: one group
            raise
    if browser.returncode != 0:
        raise RuntimeError(f"chromium exited with {browser.returncode} on {url}:\n{err[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", required=True, help="e.g. sqlite:///mlruns/mlflow.db")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--experiment", help="the experiment whose runs to open on")
    args = parser.parse_args(argv)

    for name, value in SERVER_ENV.items():
        os.environ.setdefault(name, value)
    base = f"http://{args.host}:{args.port}"
    found = experiment_id(args.backend_store_uri, args.experiment) if args.experiment else None
    if found is not None:
        from mnistcnn.tracking import VIEW  # noqa: PLC0415 (imports torch: only when there is a table to show)

        print(f"MLflow UI: runs of {args.experiment} at {runs_table_url(base, found, VIEW)}", flush=True)
    else:
        missing = f" ({args.experiment} is not in the store yet)" if args.experiment else ""
        print(f"MLflow UI: experiments at {experiments_url(base)}{missing}", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.backend_store_uri,
                              "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()
