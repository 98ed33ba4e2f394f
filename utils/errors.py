"""The base class of the errors a script reports as one ``error:`` line.

A :class:`UserError` is a problem the user can fix (a file that does not fit,
a run that cannot continue): its message names the problem and the fix, and
``cli.main.run_main`` prints it as one ``error:`` line instead of a traceback.
Errors about bad values derive from ``ValueError`` instead, which the scripts
report the same way.
"""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A problem the user can fix; the message says what it is and what to do."""
