"""serve: MLflow's own scoring server for the registry's champion (or any model URI).

    python -m stages.serve [--model URI] [--host 127.0.0.1] [--port 5002]     (make serve)

The default model is `models:/<promote.model_name>@<promote.alias>` in the tracking
store (mlruns/ or $MLFLOW_TRACKING_URI), as `make promote` left it. It runs
`mlflow models serve --env-manager local`: this environment, no new one.
Clients POST raw pixels to /invocations; see the README's "Serving" section.
"""

from __future__ import annotations

import argparse
import os
import sys

from mnistcnn import config, tracking, ui


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("MODEL_URI") or None,
                        help="a model URI (default: $MODEL_URI, else the registry's champion)")
    parser.add_argument("--host", default="127.0.0.1", help="the interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5002)
    args = parser.parse_args()
    model = args.model or config.load().promote.model_uri
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()  # models:/ resolves in the project's store
    bin_dir = os.path.dirname(sys.executable)  # mlflow starts `uvicorn` by name: this environment's
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    for name, value in ui.SERVER_ENV.items():
        os.environ.setdefault(name, value)
    print(f"serving {model} from {os.environ['MLFLOW_TRACKING_URI']} at http://{args.host}:{args.port}/invocations",
          flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "models", "serve", "--model-uri", model,
                              "--env-manager", "local", "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()
