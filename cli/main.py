"""How every script's ``main`` ends: one ``error:`` line for bad input, status 130 on Ctrl-C, never a traceback."""
from __future__ import annotations

import sys
from typing import Any, Callable

from utils.errors import UserError
from utils.jittor_fixes import exit_now, restore_sigint

__all__ = ["KNOWN_ERRORS", "run_main"]

#: Errors that mean "bad input" (or a run that cannot go on) and get one ``error:`` line. The project's own
#: error classes derive from ``utils.errors.UserError`` or ``ValueError``.
KNOWN_ERRORS = (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def run_main(fn: Callable[..., Any], *args: Any) -> int:
    """Call ``fn(*args)``: 0 when it returns, 2 with one ``error:`` line for bad input, 130 on Ctrl-C.

    ``fn`` may return an int exit status of its own (e.g. 1 for partly failed work).
    """
    restore_sigint()
    try:
        status = fn(*args)
    except KeyboardInterrupt as exc:
        print(str(exc) or "interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        exit_now(130)  # not a normal exit: see utils.jittor_fixes.exit_now
    except KNOWN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return status if isinstance(status, int) else 0
