"""Run a stage's main() with errors a user can act on instead of tracebacks."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Callable, NoReturn

from mnistcnn import phases
from mnistcnn.config import ParamsError
from mnistcnn.health import ServerUnreachable
from mnistcnn.outputs import DataError

# Problems the user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (ParamsError, DataError, ServerUnreachable)
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def _interrupt_on_sigterm(signum, frame) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def run(main: Callable[[], int | None]) -> NoReturn:
    """Call `main`; exit with its return value (None: 0), 1 with a one-line message on bad input,
    130 when interrupted."""
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)  # clean up as on Ctrl-C
    phases.mark("start-up and imports")  # the stage module and all it imports are loaded by now
    try:
        code = main()
        phases.record(Path(sys.argv[0]).stem)
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    sys.exit(code or 0)
