"""Whether an MLflow tracking server answers, asked without importing MLflow."""

from __future__ import annotations

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
