"""The applications: one per script, each taking the script's options and doing its job.

================  ============================================================
``train``         train.py: options -> model, data, optimizer -> the loop
``evaluate``      evaluate.py: a model from a file evaluated, ``results.json``
``predict``       predict.py: colourised predictions of image files
``attention``     visualize_attention.py: attention maps over images
``compare``       compare.py: runs side by side, ``report.md``
``export``        convert_weights.py --export: a model as another code base's PyTorch file
``model_files``   every script's way to get a model from a file
================  ============================================================

Import the submodules (``from apis.model_files import load_model``); this
package itself imports nothing.
"""
