"""Open the MLflow UI on the table of training runs, in model-training mode, not MLflow 3's GenAI view.

In a fresh browser MLflow 3.17's UI frames every page as GenAI (traces, judges, prompts, an
AI gateway), even for an experiment tagged as model training. The address of the runs table
with `?workflowType=machine_learning` opens it with the model-training sidebar (runs, models,
registry); the pages it links to (a run's) drop that parameter and fall back on the browser's
saved choice: GenAI, until the user picks "Model training" in the toggle on such a page once.
`python -m mnistcnn.team.ui` prints that address for the project's experiment, then becomes a
quiet `mlflow ui`:

    python -m mnistcnn.team.ui --backend-store-uri sqlite:///mlruns/mlflow.db --experiment mnist-compact-cnn

The MLflow Assistant panel opens by itself on a browser's first visit to a server at
localhost or 127.0.0.1, and stays closed once closed: no server setting or address turns
it off in MLflow 3.17 (its state lives only in the browser's localStorage).

`chromium` drives Debian's headless Chromium through Playwright, and `shown` opens a page in it
and waits for what it should show: for the UI's tests and the docs' screenshot (docs/ui_screenshot.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# No calls home, as in mnistcnn.tracking.runs; no job runner (its workers serve GenAI judges, not runs).
SERVER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# What `mlflow ui` says that a user can do nothing about: each worker's warning that MLflow imports a
# deprecated Starlette module (a message filter: PYTHONWARNINGS cannot name Starlette's category, which
# it would import before site-packages is on the path), and uvicorn's every start-up step and request.
QUIET_WARNINGS = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"
QUIET_UVICORN = "--log-level warning"
# MLflow 3.17's UI frames every page as GenAI (a sidebar of traces, judges and prompts, its mode
# toggle on "GenAI") unless the address asks for model training, or this browser saved that choice
# (the toggle's localStorage `mlflow.workflowType_v1`); it does not read the experiment's kind tag.
MODEL_TRAINING = {"workflowType": "machine_learning"}
CHROMIUM = "/usr/bin/chromium"  # Debian's: `make browser` installs it; Playwright downloads no browser
# Headless, offline, as root in a container: no GPU, no sandbox, nothing fetched but the page.
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# `mlflow ui` starts 4 uvicorn workers by default; one user's UI needs no more than one per core.
MAX_WORKERS = 4


def runs_table_url(base_url: str, experiment_id: str, view: str | None = None) -> str:
    """The address of one experiment's runs table in MLflow 3.17's UI, in model-training mode.

    `view` names a shared view, an experiment tag `mlflow.sharedViewState.<view>`
    (what the UI's Share button writes), choosing for example which columns show.
    """
    query = urlencode({**({"viewStateShareKey": view} if view else {}), **MODEL_TRAINING}, quote_via=quote)
    return f"{base_url.rstrip('/')}/#/experiments/{quote(experiment_id, safe='')}/runs?{query}"


def experiments_url(base_url: str) -> str:
    """The address of the UI's list of experiments, in model-training mode."""
    return f"{base_url.rstrip('/')}/#/experiments?{urlencode(MODEL_TRAINING)}"


def experiment_id(store_uri: str, name: str) -> str | None:
    """The id of the active experiment `name` in the store, None if it has none (yet)."""
    if store_uri.startswith("sqlite:///") and not Path(store_uri.removeprefix("sqlite:///")).exists():
        return None  # looking would create the database; `mlflow ui` will
    from mnistcnn.tracking import store  # noqa: PLC0415 (MLflow: seconds to import, only when there is a store)

    return store.active_experiment(store_uri, name)


@contextlib.contextmanager
def chromium(executable: str | Path = CHROMIUM) -> Iterator[Browser]:
    """A headless Chromium driven by Playwright, closed after; each context it opens starts from an
    empty profile. `executable` may be a script that execs CHROMIUM, e.g. with no network."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 (only tests and the docs' picture drive one)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=HEADLESS)
        try:
            yield browser
        finally:
            browser.close()


def shown(page: Page, url: str, wanted: Sequence[str], timeout: float = 60) -> str:
    """Open `url` in `page`; the page's visible text once it holds every string of `wanted`, or as
    it stands after `timeout` seconds (for the caller to say what is missing)."""
    from playwright.sync_api import TimeoutError as Late  # noqa: PLC0415 (as in `chromium`)

    page.goto(url)
    with contextlib.suppress(Late):
        page.wait_for_function("wanted => wanted.every(item => document.body.innerText.includes(item))",
                               arg=list(wanted), timeout=timeout * 1000)
    return page.inner_text("body")


def default_workers() -> int:
    """MLflow's 4 server processes, or one per CPU this process may run on where there are fewer."""
    return min(MAX_WORKERS, len(os.sched_getaffinity(0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", required=True, help="e.g. sqlite:///mlruns/mlflow.db")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--experiment", help="the experiment whose runs to open on")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help=f"server processes (default: one per CPU, at most {MAX_WORKERS}; here %(default)s)")
    args = parser.parse_args(argv)

    for name, value in SERVER_ENV.items():
        os.environ.setdefault(name, value)
    # The user's own PYTHONWARNINGS comes after, so it wins where the two disagree.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [QUIET_WARNINGS, os.environ.get("PYTHONWARNINGS")]))
    base = f"http://{args.host}:{args.port}"
    found = experiment_id(args.backend_store_uri, args.experiment) if args.experiment else None
    if found is not None:
        from mnistcnn.tracking.store import VIEW  # noqa: PLC0415 (imports MLflow: only when there is a table to show)

        print(f"MLflow UI: runs of {args.experiment} at {runs_table_url(base, found, VIEW)}", flush=True)
    else:
        missing = f" ({args.experiment} is not in the store yet)" if args.experiment else ""
        print(f"MLflow UI: experiments at {experiments_url(base)}{missing}", flush=True)
    store = args.backend_store_uri  # the registry's too, said outright: MLflow otherwise says it assumed so
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
                              "--registry-store-uri", store, "--host", args.host, "--port", str(args.port),
                              f"--uvicorn-opts={QUIET_UVICORN}", "--workers", str(args.workers)])


if __name__ == "__main__":
    main()
