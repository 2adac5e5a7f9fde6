"""Run a stage's main() with errors a user can act on instead of tracebacks."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from pathlib import Path
from typing import Callable, NoReturn

from mnistcnn import phases
from mnistcnn.outputs import DataError
from mnistcnn.params.config import ParamsError
from mnistcnn.tracking.health import LoginRefused, ServerUnreachable

# Problems the user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (ParamsError, DataError, ServerUnreachable, LoginRefused)
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def _interrupt_on_sigterm(signum, frame) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def _exit(code: int, entry: bool) -> NoReturn:
    """Exit with `code`. A process's entry point skips the interpreter's teardown, which frees
    torch's and MLflow's modules one object at a time (0.6 s of every stage process on 2 cores):
    the exit handlers still run, so streams and logs are flushed and runs ended, and every file
    the stage wrote is closed by now."""
    if entry and hasattr(atexit, "_run_exitfuncs"):
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def run(main: Callable[[], int | None], user_errors: tuple[type[Exception], ...] = ()) -> NoReturn:
    """Call `main`; exit with its return value (None: 0), 1 with a one-line message on bad input
    (USER_ERRORS, and the stage's own `user_errors`), 130 when interrupted. Called in-process
    (tests), it raises SystemExit as sys.exit does."""
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)  # clean up as on Ctrl-C
    phases.mark("start-up and imports")  # the stage module and all it imports are loaded by now
    entry = main.__module__ == "__main__"  # `python -m stages.X`, not a test calling stages.X.main
    try:
        code = main()
        phases.record(Path(sys.argv[0]).stem)
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        _exit(EXIT_INTERRUPTED, entry)
    except (*USER_ERRORS, *user_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        _exit(EXIT_ERROR, entry)
    _exit(code or 0, entry)
