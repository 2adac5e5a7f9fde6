"""Bad params, systematically: every key of params.yaml given values of every wrong kind.

Whatever the value, params.yaml is either accepted or refused with an error naming the key;
and a refused one stops every pipeline stage with exit 1, a one-line message naming the key,
no traceback, and nothing written.
"""

import copy
import math

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from mnistcnn import cli
from mnistcnn.params import config
from stages import download, evaluate, train
from tests.conftest import committed_params

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

VALID = yaml.safe_load(committed_params().read_text())


def key_paths(mapping, prefix=()) -> list[tuple]:
    """Every key, sections included, as a path of names: ("train",), ("train", "augment", "rotate"), ..."""
    paths = []
    for key, value in mapping.items():
        paths.append(prefix + (key,))
        if isinstance(value, dict):
            paths += key_paths(value, prefix + (key,))
    return paths


KEYS = key_paths(VALID)
BAD = st.one_of(
    st.none(), st.booleans(), st.just(""), st.just([]), st.just({}),
    st.integers(min_value=-10**30, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1.0, 0, 10**40]),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def with_value(path: tuple, value) -> dict:
    raw = copy.deepcopy(VALID)
    section = raw
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    return raw


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(KEYS), value=BAD)
def test_any_value_is_accepted_or_refused_naming_its_key(path, value):
    try:
        config.parse(with_value(path, value))
    except config.ParamsError as err:
        assert ".".join(path) in str(err)


def refused(path, value) -> bool:
    try:
        config.parse(with_value(path, value))
    except config.ParamsError:
        return True
    return False


@pytest.mark.parametrize("stage", [download, train, evaluate], ids=lambda s: s.__name__.split(".")[-1])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.filter_too_much])
@given(path=st.sampled_from(KEYS), value=BAD)
def test_a_refused_value_stops_the_stage_naming_the_key_with_nothing_written(
        stage, path, value, tmp_path_factory, monkeypatch, capsys):
    assume(refused(path, value))  # a value the schema allows is not this test's business
    folder = tmp_path_factory.mktemp("bad")
    (folder / "params.yaml").write_text(yaml.safe_dump(with_value(path, value)))
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    with pytest.raises(SystemExit) as exit_info:
        cli.run(stage.main)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("error: params.yaml: ") and ".".join(path) in err and "Traceback" not in err
    assert [p.name for p in folder.iterdir()] == ["params.yaml"]
