"""The training core: the loop and what it needs, with no knowledge of scripts, files or configurations.

================  ============================================================
``train_loop``    the training loop: batches, one step, the periodic work
``run_log``       ``log.jsonl``, ``train.log`` and the progress bar (and reading them)
``snapshots``     the checkpoints of a run folder: numbered, last, best
``checkpoint``    the checkpoint format, reading and writing it
``optim``         optimizers, the poly schedule, optimizer state
``amp``           mixed precision's loss scaler
``launch``        device and seeds of each process
================  ============================================================

Import the submodules (``from engine.train_loop import train``); this
package itself imports nothing. Evaluation comes into the loop as a callable
(``train(..., eval_fn=...)``), so the engine never imports ``evaluation``.
"""
