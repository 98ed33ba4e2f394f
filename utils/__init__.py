"""The leaf of the library: what every other folder may use, importing nothing of the project's.

=================  ============================================================
``jittor_fixes``   workarounds for Jittor 1.3.11 bugs, each with the bug it fixes
``comm``           processes under ``mpirun``: rank, world size, collectives
``fileio``         atomic writes, JSON, output checks, safe pickles
``torch_reader``   PyTorch checkpoint files read into numpy without torch
``torch_writer``   numpy state dicts written as PyTorch checkpoint files, without torch
``weight_files``   the weight-file format: read any weights file, write ours
``input_norm``     the input normalisation a set of pretrained weights expects
``errors``         the base class of the errors a script reports in one line; optional packages
``sizes``          sizes given as ``N`` or ``(H, W)``
``clips``          the frames of a video clip and which one is labelled
``formatting``     numbers as the tables print them
``progress``       the progress bars
=================  ============================================================

Import the submodules; this package itself imports nothing.
"""
