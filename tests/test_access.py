"""Only the team gets in, and only the promoter moves the champion: the real team server (MLflow's
authentication app on PostgreSQL, `mnistcnn.team.tracking_server`), attacked over HTTP, and its UI logged in to in
headless Chromium (Playwright)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest
import requests
from playwright.sync_api import Browser, Page
from playwright.sync_api import Error as BrowserError

from mnistcnn.team import access, tracking_server, ui
from tests.conftest import ROOT, free_port

# A registered model of this module's own on the run's shared team server, set up as the server sets
# up the one it serves (access.bootstrap): the admin owns it, the promoter alone may manage it.
MODEL, ALIAS = "attacked-model", "champion"
TEAMMATE = "dana"


@pytest.fixture(scope="module")
def team(team_server):
    """The team server, with this module's model and one teammate; returns it and the teammate's login."""
    access.bootstrap(team_server.url, team_server.folder, MODEL)
    return team_server, add_user(team_server, TEAMMATE)


def add_user(team: tracking_server.Server, name: str) -> tuple[str, str]:
    """`python -m stages.tracking_server add-user NAME`; the login it prints."""
    added = subprocess.run([sys.executable, "-m", "stages.tracking_server", "add-user", name, "--folder", str(team.folder),
                            "--port", str(team.port)], cwd=ROOT, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    return name, re.search(r"MLFLOW_TRACKING_PASSWORD=(\S+)", added.stdout).group(1)


def login_of(team: tracking_server.Server, user: str) -> tuple[str, str]:
    found = access.credentials(team.folder, user)
    return found["MLFLOW_TRACKING_USERNAME"], found["MLFLOW_TRACKING_PASSWORD"]


def attack(url: str, login: tuple[str, str] | None) -> list[int]:
    """The five requests that, unauthenticated, made an upload the registry's champion: create a run,
    upload a file into it through the artifact proxy, create the registered model, register a version
    from the upload, point the alias at it. Returns each answer's HTTP status."""
    api, session = f"{url}/api/2.0", requests.Session()
    session.auth = login
    experiment = session.get(f"{api}/mlflow/experiments/get-by-name", params={"experiment_name": "Default"})
    experiment_id = experiment.json()["experiment"]["experiment_id"] if experiment.ok else "0"
    created = session.post(f"{api}/mlflow/runs/create", json={"experiment_id": experiment_id})
    run_id = created.json()["run"]["info"]["run_id"] if created.ok else "0" * 32
    uploaded = session.put(f"{api}/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/evil/MLmodel",
                           data=b"python_function: {loader_module: evil}\n")
    model = session.post(f"{api}/mlflow/registered-models/create", json={"name": MODEL})
    version = session.post(f"{api}/mlflow/model-versions/create", json={
        "name": MODEL, "source": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/evil", "run_id": run_id})
    number = version.json()["model_version"]["version"] if version.ok else "1"
    alias = session.post(f"{api}/mlflow/registered-models/alias", json={"name": MODEL, "alias": ALIAS,
                                                                       "version": number})
    return [answer.status_code for answer in (created, uploaded, model, version, alias)]


def champion(url: str, login: tuple[str, str]) -> str | None:
    answer = requests.get(f"{url}/api/2.0/mlflow/registered-models/get", params={"name": MODEL}, auth=login)
    assert answer.ok, answer.text
    return next((a["version"] for a in answer.json()["registered_model"].get("aliases", []) if a["alias"] == ALIAS),
                None)


@pytest.fixture(scope="module")
def promoted(team) -> str:
    """A champion the promoter set, through the same five requests: the version number."""
    started, _ = team
    statuses = attack(started.url, login_of(started, access.PROMOTER))
    assert statuses == [200, 200, 400, 200, 200], statuses  # 400: the server made the model, at its start
    return champion(started.url, login_of(started, access.ADMIN))


def test_every_secret_is_generated_and_readable_by_its_owner_only(team):
    started, _ = team
    for name in access.FILES.values():
        assert stat.S_IMODE(os.stat(started.folder / name).st_mode) == 0o600, name
    passwords = {(started.folder / access.FILES[user]).read_text() for user in ("admin", "promoter", "flask")}
    assert len(passwords) == 3 and all(len(p) >= 32 for p in passwords)


def test_anonymous_requests_fail_at_the_first_and_leave_the_champion(team, promoted):
    started, _ = team
    assert attack(started.url, None) == [401] * 5
    assert requests.get(f"{started.url}/", timeout=30).status_code == 401  # the UI too: no default READ
    assert requests.get(f"{started.url}/health", timeout=30).status_code == 200
    assert champion(started.url, login_of(started, access.ADMIN)) == promoted


def test_a_wrong_password_is_refused_like_none(team, promoted):
    started, (user, _) = team
    assert attack(started.url, (user, "not-the-password")) == [401] * 5
    assert attack(started.url, (access.ADMIN, "password")) == [401] * 5


def test_a_teammate_logs_runs_and_uploads_but_cannot_register_or_move_the_alias(team, promoted):
    started, teammate = team
    assert attack(started.url, teammate) == [200, 200, 400, 403, 403]
    assert champion(started.url, teammate) == promoted  # a teammate reads the registry
    bob = add_user(started, "bob")
    experiments = requests.get(f"{started.url}/api/2.0/mlflow/experiments/search", params={"max_results": 10},
                               auth=bob).json()["experiments"]
    deleted = requests.post(f"{started.url}/api/2.0/mlflow/experiments/delete", auth=bob,
                            json={"experiment_id": experiments[0]["experiment_id"]})
    assert deleted.status_code == 403


def test_add_user_refuses_the_servers_own_users_and_an_existing_name(team):
    started, _ = team
    for name in (access.ADMIN, access.PROMOTER, TEAMMATE):
        added = subprocess.run([sys.executable, "-m", "stages.tracking_server", "add-user", name, "--folder",
                                str(started.folder), "--port", str(started.port)], cwd=ROOT, capture_output=True,
                               text=True)
        assert added.returncode == 1 and added.stderr.startswith("error: ") and name in added.stderr, added.stderr
        assert len(added.stderr.strip().splitlines()) == 1


def test_binding_beyond_loopback_needs_the_allowed_hosts(tmp_path):
    with pytest.raises(tracking_server.ServerError, match="--allowed-hosts"):
        tracking_server.start(tmp_path, "0.0.0.0", free_port())
    assert not (tmp_path / "postgres").exists()  # refused before anything started


def typed(browser: Browser, login: tuple[str, str]) -> Page:
    """A page whose user types `login` into the browser's basic-auth dialog: sent only in answer to
    the server's challenge (a 401), never unasked; a login the server refuses is not tried twice."""
    user, password = login
    context = browser.new_context(http_credentials={"username": user, "password": password, "send": "unauthorized"})
    return context.new_page()


def test_the_ui_shows_the_runs_once_logged_in_and_nothing_before(team):
    started, teammate = team
    url = ui.runs_table_url(started.url, "0")  # the Default experiment: the attacks made runs in it
    runs = requests.post(f"{started.url}/api/2.0/mlflow/runs/search", json={"experiment_ids": ["0"]},
                         auth=teammate).json()["runs"]
    names = [run["info"]["run_name"] for run in runs]
    assert names
    challenge = requests.get(url, timeout=30)  # what the browser's first request gets: the login dialog
    assert challenge.status_code == 401 and challenge.headers["WWW-Authenticate"].startswith("Basic"), challenge
    with ui.chromium() as browser:
        text = ui.shown(typed(browser, teammate), url, [*names, teammate[0]])
        assert all(name in text for name in names), text[:2000]
        assert teammate[0] in text  # the page names who is logged in
        text = ui.shown(typed(browser, (teammate[0], "not-the-password")), url, names, timeout=15)
        assert "not authenticated" in text and not any(name in text for name in names), text[:2000]
        cancelled = browser.new_page()  # no login given: the dialog closed
        with pytest.raises(BrowserError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            cancelled.goto(url)
        cancelled.wait_for_load_state()  # Chromium's error page
        assert not any(name in cancelled.inner_text("body") for name in names)
