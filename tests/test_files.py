import os
import signal

import pytest

from mnistcnn import outputs as files
from mnistcnn.outputs import atomic_outputs

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_outputs_written_together_appear_all_or_none(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_outputs() as stage:
            stage(tmp_path / "a").write_text("a")
            raise RuntimeError("the stage failed after its first output")
    assert names(tmp_path) == []
    with atomic_outputs() as stage:
        for name in "ab":
            stage(tmp_path / name).write_text(name)
    assert names(tmp_path) == ["a", "b"] and (tmp_path / "b").read_text() == "b"


def test_an_interrupt_during_the_renames_waits_until_every_output_is_in_place(tmp_path, monkeypatch):
    replace = os.replace

    def replace_then_interrupt(src, dst):
        replace(src, dst)
        # Ctrl-C right after the first rename, raised in this thread: a signal sent to the process
        # may land in a thread an earlier test left running, and be handled late.
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(files.os, "replace", replace_then_interrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    try:
        with pytest.raises(KeyboardInterrupt):
            with atomic_outputs() as stage:
                for name in "abc":
                    stage(tmp_path / name).write_text(name)
        assert names(tmp_path) == ["a", "b", "c"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
