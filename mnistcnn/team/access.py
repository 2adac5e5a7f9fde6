"""Who may do what on the team server: MLflow's authentication app, its users and their grants.

`make server` runs MLflow with `--app-name basic-auth`, its user database on the same
PostgreSQL. Every request but /health must carry a user's name and password (HTTP basic
authentication, over TLS when it leaves the machine: README, Security); anonymous ones
get 401 and nothing else. The users:

    admin     everything, including adding users. Its password is generated on first start
              into `admin.password` in the server's folder (mode 0600), or taken from
              $MLFLOW_AUTH_ADMIN_PASSWORD; MLflow ships none.
    promoter  `make promote`'s identity (`promoter.password`): MANAGE on the registered model
              `promote.model_name`, which the server creates, so that no one else owns it.
    teammates `python -m stages.tracking_server add-user NAME`: EDIT on every experiment (log runs,
              upload artifacts), READ on everything else (default_permission), so they
              cannot register a version or move the champion's alias (403).

Every file here is created readable by its owner only and never overwritten.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import requests

from mnistcnn.tracking import health

ADMIN, PROMOTER = "admin", "promoter"
AUTH_DATABASE = "mlflow_auth"
FILES = {"admin": "admin.password", "promoter": "promoter.password", "flask": "flask.secret", "ini": "auth.ini"}
TIMEOUT = 30  # seconds per request
AUTH_INI = """# Written by mnistcnn/team/access.py at every start: edits are lost.
[mlflow]
default_permission = READ
database_uri = {database_uri}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# a login that passed is not hashed again for 60 s (each worker keeps its own, HMAC-keyed, cache):
# scrypt costs about 95 ms of CPU a request, and a stage makes hundreds. A password changed
# or a user deleted through another worker is still let in until then.
auth_cache_ttl_seconds = 60
"""


class AccessError(Exception):
    """A user or grant could not be made; the message says which and why."""


def private_file(path: Path, content: str | None = None) -> str:
    """The text of `path`, written first (`content`, else a random password) when it is missing,
    readable by its owner only."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) if content is None else content)
    return path.read_text().strip()


def rewritten_private_file(path: Path, content: str) -> str:
    """private_file with `content`, in place of what `path` held: for what can change between starts."""
    path.unlink(missing_ok=True)
    return private_file(path, content)


def admin_password(folder: Path) -> str:
    return os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or private_file(folder / FILES["admin"])


def server_env(folder: Path, database_uri: str) -> dict[str, str]:
    """The environment MLflow's server starts with: the auth app's configuration and secrets."""
    ini = folder / FILES["ini"]
    rewritten_private_file(ini, AUTH_INI.format(database_uri=database_uri, admin=ADMIN))  # the address can change
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password(folder),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": private_file(folder / FILES["flask"])}


def _trusted(verify: str | bool | None = None) -> str | bool:
    """What a request checks the server's certificate against: `verify`, else the CA that MLflow's
    client trusts ($MLFLOW_TRACKING_SERVER_CERT_PATH), else the system's."""
    return verify if verify is not None else os.environ.get(health.CERT_VARIABLE) or True


def _call(url: str, admin: tuple[str, str], method: str, endpoint: str, body: dict | None = None,
          exists_ok: bool = False, verify: str | bool | None = None) -> dict:
    """One admin request to the server's REST API; AccessError unless it succeeds (or, with
    `exists_ok`, the thing already exists)."""
    response = requests.request(method, f"{url}/api/{endpoint}", auth=admin, timeout=TIMEOUT, verify=_trusted(verify),
                                **({"params": body} if method == "GET" else {"json": body}))
    if response.ok:
        return response.json() if response.content else {}
    try:
        error = response.json()
    except ValueError:
        error = {"message": response.text.strip()[:200]}
    if exists_ok and error.get("error_code") == "RESOURCE_ALREADY_EXISTS":
        return {}
    raise AccessError(f"{method} {endpoint} answered HTTP {response.status_code}: {error.get('message')}")


def grant(url: str, admin: tuple[str, str], user: str, kind: str, name: str, permission: str,
          verify: str | bool | None = None) -> None:
    _call(url, admin, "POST", "3.0/mlflow/users/permissions/grant", exists_ok=True, verify=verify,
          body={"username": user, "resource_type": kind, "resource_id": name, "permission": permission})


def create_user(url: str, admin: tuple[str, str], user: str, password: str, verify: str | bool | None = None) -> bool:
    """Create `user` unless it exists; True when it was created."""
    found = requests.get(f"{url}/api/2.0/mlflow/users/get", params={"username": user}, auth=admin, timeout=TIMEOUT,
                         verify=_trusted(verify))
    if found.ok:
        return False
    _call(url, admin, "POST", "2.0/mlflow/users/create", {"username": user, "password": password}, verify=verify)
    return True


def add_teammate(url: str, folder: Path, user: str, verify: str | bool | None = None) -> str:
    """A new teammate, who may log runs but not promote; returns their password (shown once)."""
    if user in (ADMIN, PROMOTER):
        raise AccessError(f"{user} is the server's own user: choose another name")
    admin = (ADMIN, admin_password(folder))
    password = secrets.token_urlsafe(18)
    if not create_user(url, admin, user, password, verify):
        raise AccessError(f"user {user} already exists: its password is theirs (an admin can reset it "
                          "through MLflow's update-password API)")
    grant(url, admin, user, "experiment", "*", "EDIT", verify)
    return password


def bootstrap(url: str, folder: Path, model_name: str, verify: str | bool | None = None) -> None:
    """At every start: the promoter exists, and the registered model exists, created by the admin,
    with MANAGE for the promoter alone."""
    admin = (ADMIN, admin_password(folder))
    create_user(url, admin, PROMOTER, private_file(folder / FILES["promoter"]), verify)
    grant(url, admin, PROMOTER, "experiment", "*", "EDIT", verify)  # promote logs the served model into its run
    _call(url, admin, "POST", "2.0/mlflow/registered-models/create", {"name": model_name}, exists_ok=True,
          verify=verify)
    grant(url, admin, PROMOTER, "registered_model", model_name, "MANAGE", verify)


def credentials(folder: Path, user: str) -> dict[str, str]:
    """The environment a client runs as `user` (admin or promoter) with."""
    password = admin_password(folder) if user == ADMIN else private_file(folder / FILES[user])
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
