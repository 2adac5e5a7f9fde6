"""`make server` / `make server-stop`: the team's MLflow tracking server on PostgreSQL.

    python -m stages.server start [--folder server] [--host 127.0.0.1] [--port 5001]
    python -m stages.server stop  [--folder server]

Then MLFLOW_TRACKING_URI=http://127.0.0.1:5001 sends every stage's run there.
See mnistcnn/server.py for what the folder holds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnistcnn import config, server, ui


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.server", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--folder", type=Path, default=Path("server"), help="where its data lives (default: server/)")
    parser.add_argument("--host", default="127.0.0.1", help="the interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--study-port", type=int, default=5003, help="PostgreSQL's TCP port, for the search's studies")
    args = parser.parse_args()
    try:
        if args.action == "stop":
            stopped = server.stop(args.folder)
            print("stopped " + " and ".join(stopped) if stopped else f"no server of {args.folder} was running")
            return 0
        running = server.start(args.folder, args.host, args.port, study_port=args.study_port)
    except server.ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    experiment = config.load().tracking.experiment
    os.environ["MLFLOW_TRACKING_URI"] = running.url
    from mnistcnn import tracking  # noqa: PLC0415 (seconds to import: not for `stop`)

    runs = ui.runs_table_url(running.url, tracking.open_experiment(experiment), tracking.VIEW)
    print(f"MLflow tracking server at {running.url} (PostgreSQL backend, data in {running.folder})\n"
          f"  log runs there:  export MLFLOW_TRACKING_URI={running.url}\n"
          f"  runs of {experiment}: {runs}\n"
          f"  search studies:  export SEARCH_STORAGE={running.study_url}  (then make search, on any machine)\n"
          f"  stop it:         make server-stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
