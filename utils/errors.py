"""The base class of the errors a script reports as one ``error:`` line, and the check for an
optional package that such a line reports.

A :class:`UserError` is a problem the user can fix (a file that does not fit,
a run that cannot continue): its message names the problem and the fix, and
``cli.main.run_main`` prints it as one ``error:`` line instead of a traceback.
Errors about bad values derive from ``ValueError`` instead, which the scripts
report the same way.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["UserError", "missing_package"]


class UserError(Exception):
    """A problem the user can fix; the message says what it is and what to do."""


def missing_package(*modules: str) -> Optional[str]:
    """The import error of the first of ``modules`` that does not import (e.g. "No module named 'onnx'"),
    None when all do: for a feature that needs an optional package to say so before any work."""
    for module in modules:
        try:
            __import__(module)
        except ImportError as exc:
            return str(exc)
    return None
