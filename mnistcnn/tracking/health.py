"""Whether an MLflow tracking server answers, and takes our login, asked without importing MLflow."""

from __future__ import annotations

import base64
import os
import re
import ssl
import urllib.error
import urllib.request


class ServerUnreachable(Exception):
    """The tracking server named by $MLFLOW_TRACKING_URI does not answer."""


TIMEOUT = 3  # seconds per request: a stage must fail fast when the server is down


# What MLflow's client trusts an HTTPS server's certificate by (a CA file), as MLflow documents it
CERT_VARIABLE = "MLFLOW_TRACKING_SERVER_CERT_PATH"


def _context(cafile: str | os.PathLike | None) -> ssl.SSLContext:
    """TLS as MLflow's client does it: the CA in `cafile`, else in $MLFLOW_TRACKING_SERVER_CERT_PATH, else the system's."""
    return ssl.create_default_context(cafile=cafile or os.environ.get(CERT_VARIABLE) or None)


def untrusted(url: str, reason: str) -> str | None:
    """What to set, when `reason` (a problem()) is a certificate this machine does not trust."""
    if "CERTIFICATE_VERIFY_FAILED" not in reason and "certificate verify failed" not in reason:
        return None
    trusted = os.environ.get(CERT_VARIABLE)
    said = re.sub(r"^\[[^]]*\] *| *\(_ssl\.c:\d+\)$", "", reason)  # OpenSSL's own words, without its tags
    return (f"the MLflow tracking server at {url} presents a certificate this machine does not trust "
            f"({said}): set {CERT_VARIABLE} to the team server's CA certificate "
            f"(tls/ca.crt in its folder){f', not {trusted}' if trusted else ''}")


def problem(url: str, timeout: float = TIMEOUT, cafile: str | os.PathLike | None = None) -> str | None:
    """None when the server at `url` answers its /health endpoint; otherwise what went wrong."""
    trusted = cafile or os.environ.get(CERT_VARIABLE)
    if url.startswith("https") and trusted and not os.path.isfile(trusted):
        return f"certificate verify failed: no CA certificate at {trusted}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout,
                                    context=_context(cafile) if url.startswith("https") else None) as response:
            if response.status == 200:
                return None
            return f"/health answered HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"/health answered HTTP {err.code}"
    except (OSError, ValueError) as err:  # refused, timed out, no such host, a malformed URL
        return str(getattr(err, "reason", None) or err)


def check(url: str, timeout: float = TIMEOUT, cafile: str | os.PathLike | None = None) -> bool:
    return problem(url, timeout, cafile) is None


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
        with urllib.request.urlopen(request, timeout=timeout,
                                    context=_context(None) if url.startswith("https") else None):
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
