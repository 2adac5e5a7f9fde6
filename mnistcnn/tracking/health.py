"""Whether an MLflow tracking server answers, and takes our login, asked without importing MLflow."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request


class ServerUnreachable(Exception):
    """The tracking server named by $MLFLOW_TRACKING_URI does not answer."""


TIMEOUT = 3  # seconds per request: a stage must fail fast when the server is down


def problem(url: str, timeout: float = TIMEOUT) -> str | None:
    """None when the server at `url` answers its /health endpoint; otherwise what went wrong."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"/health answered HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"/health answered HTTP {err.code}"
    except (OSError, ValueError) as err:  # refused, timed out, no such host, a malformed URL
        return str(getattr(err, "reason", None) or err)


def check(url: str, timeout: float = TIMEOUT) -> bool:
    return problem(url, timeout) is None


class LoginRefused(Exception):
    """The tracking server wants a user and password this process does not have."""


def login_problem(url: str, timeout: float = TIMEOUT) -> str | None:
    """None when the server at `url` takes this process's login ($MLFLOW_TRACKING_USERNAME and
    $MLFLOW_TRACKING_PASSWORD, as MLflow's client sends them) or wants none; otherwise what to set."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    request = urllib.request.Request(f"{url.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    if user:
        login = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(login).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        if err.code != 401:
            return None  # not a login problem: MLflow's client reports it with the request that meets it
    except (OSError, ValueError):
        return None  # unreachable: problem() says so
    if not user:
        return (f"the MLflow tracking server at {url} needs a login: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (its admin adds users: python -m stages.tracking_server add-user NAME)")
    return (f"the MLflow tracking server at {url} refused the login of MLFLOW_TRACKING_USERNAME={user}: "
            "check MLFLOW_TRACKING_PASSWORD")
