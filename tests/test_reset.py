"""`make reset` in a clone whose DVC cache lacks the commit's outputs: one line naming them and what to run.
(The reset itself, after two workspace experiments: tests/test_experiments.py.)"""

import pytest

from stages import reset

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

# What `dvc checkout --force` (3.67) printed in a fresh clone that had not reproduced or pulled
FRESH_CLONE = """ERROR: Checkout failed for following targets:
models/model.pt
metrics/train.json
Is your cache up to date?
<https://error.dvc.org/missing-files>
"""


def test_outputs_a_fresh_clone_lacks_are_named_with_what_makes_them():
    assert reset._missing(FRESH_CLONE) == ("this DVC cache lacks the commit's models/model.pt, metrics/train.json: "
                                           "`make repro` reproduces them, `make pull` fetches them")


def test_another_failure_is_passed_on_as_dvc_said_it():
    assert reset._missing("ERROR: unexpected error - disk full\n") == "ERROR: unexpected error - disk full"
