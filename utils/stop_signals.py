"""SIGTERM and SIGUSR1: the signals a cluster stops a job with, turned into a clean stop.

Slurm sends SIGTERM at preemption, at ``scancel`` and at the time limit (then
SIGKILL after its ``KillWait``, 30 s by default), and the warning signal
``--signal=USR1@<seconds>`` ahead of the limit; Open MPI's ``mpirun`` passes
SIGUSR1 on to every rank. Left alone, Jittor 1.3.11's C handler prints a
"Caught segfault ... Get signal 15, exit" message for SIGTERM and exits, and
SIGUSR1 ends the process outright.

* :func:`raise_on_stop_signals` (every script, via ``cli.main.run_main``):
  the signal raises :class:`StopSignal`, a ``KeyboardInterrupt``, so it ends
  a script the way Ctrl-C does, with status 128 + the signal's number;
* :func:`deferred_stop_signals` (the training loop): the signal is only
  recorded, and the loop stops after the step it is in, with a checkpoint of
  that iteration; a second signal stops at once.

In a child process (a data-loader or compile worker forked from the script)
SIGTERM does its default action, so a signal to the whole process group ends
the workers as before, and SIGUSR1 is ignored: ``mpirun`` passes it to each
rank's process group, and a worker killed by it would make Jittor's SIGCHLD
handler end the rank at once ("Caught SIGCHLD ... quick exit") before it can
write its checkpoint (Jittor tolerates workers that die of SIGTERM only).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator, Optional

__all__ = ["STOP_SIGNALS", "StopSignal", "raise_on_stop_signals", "deferred_stop_signals"]

#: The signals handled here.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_MAIN_PID = os.getpid()


class StopSignal(KeyboardInterrupt):
    """A stop asked for by a signal; ``status`` is the exit status (128 + its number)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.status = 128 + signum


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _in_child(signum: int) -> bool:
    """In a forked child: SIGTERM ends it (its default action), SIGUSR1 is ignored; False in the main process."""
    if os.getpid() == _MAIN_PID:
        return False
    if signum == signal.SIGUSR1:
        signal.signal(signum, signal.SIG_IGN)
        return True
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True


def _raise(signum, frame) -> None:
    if not _in_child(signum):
        raise StopSignal(f"stopped by {_name(signum)}", signum)


def raise_on_stop_signals() -> None:
    """Make SIGTERM and SIGUSR1 raise :class:`StopSignal` in this (main) process."""
    global _MAIN_PID
    if threading.current_thread() is threading.main_thread():
        _MAIN_PID = os.getpid()
        for signum in STOP_SIGNALS:
            signal.signal(signum, _raise)


class _Request:
    """What :func:`deferred_stop_signals` recorded: ``signum`` of the first stop signal, or None."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    @property
    def name(self) -> str:
        return _name(self.signum) if self.signum else "a signal"


@contextlib.contextmanager
def deferred_stop_signals() -> Iterator[_Request]:
    """Within it, a first SIGTERM/SIGUSR1 is recorded in the yielded request; a second raises StopSignal."""
    request = _Request()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def record(signum, frame):
        if _in_child(signum):
            return
        if request.signum is not None:
            raise StopSignal(f"stopped by a second {_name(signum)} (no checkpoint of this iteration)", signum)
        request.signum = signum

    previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
