"""`make server` / `make server-stop`: the team's MLflow tracking server on PostgreSQL.

    python -m stages.tracking_server start [--folder server] [--host 127.0.0.1 [--allowed-hosts H,...]] [--port 5001]
    python -m stages.tracking_server add-user NAME [--folder server]
    python -m stages.tracking_server stop  [--folder server]

Then MLFLOW_TRACKING_URI=http://127.0.0.1:5001, with a user's MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, sends every stage's run there. add-user prints the new teammate's
password, once, and what else they set. Off loopback the server speaks TLS only: teammates
trust its CA (server/tls/ca.crt) with MLFLOW_TRACKING_SERVER_CERT_PATH and PGSSLROOTCERT.
See mnistcnn/team/tracking_server.py for what the folder holds, mnistcnn/team/access.py for who
may do what.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mnistcnn import cli
from mnistcnn.params import config
from mnistcnn.team import access, tracking_server, ui
from mnistcnn.tracking import health


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.tracking_server", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "add-user", "stop"])
    parser.add_argument("name", nargs="?", help="add-user: the teammate's user name")
    parser.add_argument("--folder", type=Path, default=Path("server"), help="where its data lives (default: server/)")
    parser.add_argument("--host", default="127.0.0.1", help="the interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--study-port", type=int, default=5003, help="PostgreSQL's TCP port, for the search's studies")
    parser.add_argument("--allowed-hosts", default="",
                        help="with a --host other than loopback: the host names (and :port) clients use, comma-separated")
    args = parser.parse_args()
    if args.action == "add-user" and not args.name:
        parser.error("add-user needs the teammate's name: python -m stages.tracking_server add-user NAME")
    params = config.load()
    if args.action == "stop":
        stopped = tracking_server.stop(args.folder)
        print("stopped " + " and ".join(stopped) if stopped else f"no server of {args.folder} was running")
    elif args.action == "add-user":
        add_user(args.folder, args.name)
    else:
        running = tracking_server.start(args.folder, args.host, args.port, study_port=args.study_port,
                                        allowed_hosts=args.allowed_hosts, model_name=params.promote.model_name)
        report(running, params.tracking.experiment)
    return 0


def add_user(folder: Path, name: str) -> None:
    """A teammate added on the server of `folder`, and what they export (the password shown once)."""
    server = tracking_server.running(folder)
    if server is None:
        raise tracking_server.ServerError(f"no server of {folder} is running: start it first (make server)")
    password = access.add_teammate(server.local_url, server.folder, name, verify=server.verify)
    print(f"user {name} added: they may log runs, not register models or move aliases. What they set, the "
          f"password shown this once:\n  export MLFLOW_TRACKING_URI={server.url} MLFLOW_TRACKING_USERNAME={name} "
          f"MLFLOW_TRACKING_PASSWORD={password}")
    if server.encrypted:
        print(f"  and, with a copy of {server.ca} on their machine (it is public; check it came from you):\n"
              f"  export MLFLOW_TRACKING_SERVER_CERT_PATH=/path/to/ca.crt PGSSLROOTCERT=/path/to/ca.crt")


def report(running: tracking_server.Server, experiment: str) -> None:
    """What the server is, and how each kind of user reaches it."""
    os.environ.update({"MLFLOW_TRACKING_URI": running.url, **access.credentials(running.folder, access.ADMIN),
                       **({health.CERT_VARIABLE: str(running.ca)} if running.encrypted else {})})
    from mnistcnn.tracking import runs  # noqa: PLC0415 (seconds to import: not for `stop`)

    table = ui.runs_table_url(running.url, runs.open_experiment(experiment), runs.VIEW)
    print(f"MLflow tracking server at {running.url} (PostgreSQL backend, data in {running.folder}); every request "
          f"needs a user and password\n"
          f"  log runs there:  export MLFLOW_TRACKING_URI={running.url}\n"
          + (f"                   trusting its CA (TLS): export {health.CERT_VARIABLE}={running.ca} "
             f"PGSSLROOTCERT={running.ca}\n" if running.encrypted else "") +
          f"                   and MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD of a user: add one with\n"
          f"                   python -m stages.tracking_server add-user NAME\n"
          f"  admin, promoter: their passwords are in {running.folder}/{access.FILES['admin']} and "
          f"{access.FILES['promoter']} (make promote uses the promoter's)\n"
          f"  runs of {experiment}: {table}\n"
          f"  search studies:  export SEARCH_STORAGE=\"$(cat {running.study_url_file})\"  (then make search)\n"
          f"                   the file holds the study database's password, readable by you only: copy it\n"
          f"                   privately to a worker's machine\n"
          f"  stop it:         make server-stop")


if __name__ == "__main__":
    cli.run(main, user_errors=(tracking_server.ServerError, access.AccessError))
