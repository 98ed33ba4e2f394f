"""How every script's ``main`` ends: one ``error:`` line for bad input, status 130 on Ctrl-C, never a traceback.

SIGTERM and SIGUSR1 (what a cluster stops a job with) end a script like Ctrl-C,
with status 128 + their number (``utils.stop_signals``); training first writes
a checkpoint of the iteration it is in.

Under ``mpirun`` a stop on any rank ends the whole job, with the message once
(:func:`_end_job`): a process that returns normally after an error would wait
in ``MPI_Finalize`` and its peers in their next collective until the job's
time limit, so a stopping rank leaves with ``os._exit`` and a non-zero status,
which makes ``mpirun`` (and ``srun --kill-on-bad-exit``) end the other ranks.
"""
from __future__ import annotations

import signal
import sys
import time
import traceback
from typing import Any, Callable, NoReturn

from utils.comm import rank, world_size
from utils.errors import UserError
from utils.fileio import write_failure
from utils.jittor_fixes import exit_now, restore_sigint
from utils.stop_signals import STOP_SIGNALS, raise_on_stop_signals

__all__ = ["KNOWN_ERRORS", "STOP_GRACE_S", "run_main"]

#: Errors that mean "bad input" (or a run that cannot go on) and get one ``error:`` line. The project's own
#: error classes derive from ``utils.errors.UserError`` or ``ValueError``.
KNOWN_ERRORS = (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)

#: Under MPI, how long a rank other than 0 waits before reporting its own stop: when rank 0 stops too (a
#: stop every rank takes, such as a non-finite loss or Ctrl-C), rank 0's message is the one shown.
STOP_GRACE_S = 5.0


def _end_job(message: str, status: int) -> NoReturn:
    """Under MPI: print ``message`` once for the job and leave at once with ``status`` (see the module doc)."""
    if rank() != 0:
        for signum in STOP_SIGNALS:  # mpirun's SIGTERM ends the wait quietly
            signal.signal(signum, signal.SIG_DFL)
        time.sleep(STOP_GRACE_S)  # if rank 0 stops as well, mpirun ends this process meanwhile
        message = message.replace("error: ", f"error: (rank {rank()} of {world_size()}) ", 1)
    print(message, file=sys.stderr, flush=True)
    exit_now(status)


def run_main(fn: Callable[..., Any], *args: Any) -> int:
    """Call ``fn(*args)``: 0 when it returns, 2 with one ``error:`` line for bad input, 130 on Ctrl-C.

    ``fn`` may return an int exit status of its own (e.g. 1 for partly failed work). A stop signal
    (SIGTERM, SIGUSR1) ends it like Ctrl-C with status 128 + the signal's number.
    """
    restore_sigint()
    raise_on_stop_signals()
    try:
        status = fn(*args)
    except KeyboardInterrupt as exc:
        message = str(exc) or "interrupted (Ctrl-C)"
        code = getattr(exc, "status", 130)
        if world_size() > 1:
            _end_job(message, code)
        print(message, file=sys.stderr, flush=True)
        exit_now(code)  # not a normal exit: see utils.jittor_fixes.exit_now
    except KNOWN_ERRORS as exc:
        if world_size() > 1:
            _end_job(f"error: {exc}", 2)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:
        failure = write_failure(exc)  # a full disk, a quota, a read-only file system ("" for anything else)
        if failure:
            message = f"error: {failure}; files are written whole or not at all, so nothing half-written was kept"
            if world_size() > 1:
                _end_job(message, 2)
            print(message, file=sys.stderr, flush=True)
            return 2
        if world_size() > 1:
            _end_job(f"error: unexpected failure:\n{traceback.format_exc().rstrip()}", 1)
        raise
    return status if isinstance(status, int) else 0
