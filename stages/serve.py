"""serve: score digits with this checkout's code and the champion's weights, once main is shown to have trained them.

    python -m stages.serve [--model URI] [--host 127.0.0.1] [--port 5002] [--workers 2] [--trusted main]

The model is `models:/<promote.model_name>@<promote.alias>` in the tracking store (mlruns/
or $MLFLOW_TRACKING_URI), as `make promote` left it, or $MODEL_URI / --model
(models:/NAME@ALIAS or models:/NAME/VERSION). Of that version only the weights and the
model card are downloaded, and served only once they are the files a commit of main
trained (mnistcnn/serving/trusted.py); the code that scores them is this checkout's, never the
registry's. The scoring server is MLflow's app behind guards (mnistcnn/serving/scoring_server.py).
Clients POST raw pixels to /invocations; see the README's "Serving" section.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

from mnistcnn import cli
from mnistcnn.outputs import DataError
from mnistcnn.params import config
from mnistcnn.serving import registry, scoring_server, classifier, trusted
from mnistcnn.tracking import runs

def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("MODEL_URI") or None,
                        help="models:/NAME@ALIAS or models:/NAME/VERSION (default: $MODEL_URI, else the champion)")
    parser.add_argument("--host", default="127.0.0.1", help="the interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument("--workers", type=int, default=2, help="processes, one core each (default: 2)")
    parser.add_argument("--trusted", default="main", help="the branch whose commits' weights may be served")
    return parser.parse_args()


def verified(uri: str, paths, trusted_branch: str, folder: Path) -> tuple[str, Path]:
    """The version's description and its served model, saved in `folder` from this checkout's code
    and the version's two files, once trusted.check passed them; DataError in one line otherwise."""
    weights, card = str(paths.model), str(paths.model_card)
    names = {weights: Path(weights).name, card: Path(card).name}  # each locked path: its artifact's name
    try:
        version, fetched = registry.fetch(uri, list(names.values()), folder / "files")
    except Exception as err:  # MLflow raises several types: no such version, alias, artifact or access
        reason = str(getattr(err, "message", err)).strip().splitlines()[0]
        raise DataError(f"{uri}: cannot be fetched ({reason})") from None
    label = f"{version.name} version {version.version}"
    try:
        files = {path: fetched[name] for path, name in names.items()}
        commit = trusted.check(version.tags, files, weights, trusted_branch, Path.cwd())
    except trusted.Untrusted as err:
        raise DataError(f"refused to serve {label}: {err}") from None
    model = classifier.save_served_model(files[weights], files[card], folder / "served")
    return f"{label} (weights of commit {commit[:7]} on {trusted_branch})", model


def main() -> NoReturn:
    args = arguments()
    params = config.load()
    uri = args.model or params.promote.model_uri
    store = runs.connect()  # a tracking server must answer, and take our credentials, first
    folder = Path(tempfile.mkdtemp(prefix="mnistcnn-serve-"))  # the server deletes it when it stops
    try:
        label, model = verified(uri, params.paths, args.trusted, folder)
    except BaseException:
        shutil.rmtree(folder)
        raise
    print(f"serving {label} from {store} at http://{args.host}:{args.port}/invocations "
          f"({args.workers} workers)", flush=True)
    scoring_server.serve(model, folder, args.host, args.port, args.workers)


if __name__ == "__main__":
    cli.run(main)
