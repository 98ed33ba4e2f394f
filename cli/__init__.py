"""The command line: what the scripts parse, how they fail, and the rules of their files and flags.

================  ============================================================
``arguments``     the parser (one ``error:`` line, the nearest flag) and argument groups
``main``          ``run_main``: one ``error:`` line for bad input, 130 on Ctrl-C
``config``        train.py's and evaluate.py's defaults, validation, resume rules
``official``      the official CCNet's (and an earlier port's) flags mapped to ours
``run_folder``    what a run folder holds, and what may be removed from it
================  ============================================================

Import the submodules; this package itself imports nothing.
"""
