"""A tracking server that is down, refusing connections or hanging: each stage fails within seconds,
says what to do, and writes nothing."""

import subprocess
import sys
import time

import pytest

from tests.conftest import free_port, make_repo, sh


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """A repository after its download stage, logging to the local store: nothing trained yet."""
    repo, env = make_repo(tmp_path_factory.mktemp("down"))
    sh("dvc", "repro", "download", cwd=repo, env=env)
    return repo, env


@pytest.mark.parametrize("kind", ["refused", "hanging"])
def test_a_server_that_is_down_fails_each_stage_in_seconds_and_nothing_is_written(downloaded, silent_port, kind):
    repo, env = downloaded
    uri = f"http://127.0.0.1:{silent_port if kind == 'hanging' else free_port()}"
    for stage in ("download", "train"):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=repo, capture_output=True, text=True,
                                env={**env, "MLFLOW_TRACKING_URI": uri})
        assert time.monotonic() - started < 10
        assert result.returncode == 1, result.stderr
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith(f"error: cannot reach the MLflow tracking server at {uri}")
        assert "make server" in message and "MLFLOW_TRACKING_URI" in message
    assert not (repo / "models").exists() and not (repo / "metrics").exists()
    assert sh("dvc", "status", "download", cwd=repo, env=env).strip().endswith("up to date.")
