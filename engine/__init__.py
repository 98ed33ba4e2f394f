"""The engine: everything between the models and datasets below and the scripts above.

==================  ==========================================================
``dist``            processes, devices, seeds (``mpirun``)
``optim``           optimizers, the poly schedule, optimizer state
``checkpoint``      checkpoints, and ``load_model``: the one way to get a model
                    from a file (train.py checkpoint, run folder, weights file)
``config``          train.py's configuration: defaults, presets, resume rules
``official``        the official CCNet's command-line spellings mapped to ours
``run_folder``      what a run folder holds, and what may be removed from it
``loop``            the training loop: step, log, snapshots, evaluation
``training``        train.py's run: options -> model, data, optimizer -> loop
``inference``       whole / sliding window / TTA, preprocessing, colourising
``evaluation``      the evaluation loop, metrics, evaluate.py's run
``attention``       criss-cross attention maps composed over the passes
``complexity``      parameters and FLOPs counted from the layers
``report``          compare.py's side-by-side report of runs
``cli``             argument groups and the error wrapper of the scripts
``compat``          workarounds for Jittor 1.3.11 bugs
==================  ==========================================================

Import the submodules (``from engine.checkpoint import load_model``); this
package itself imports nothing, so that any part can be loaded alone.
"""
