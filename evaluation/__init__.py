"""Evaluation: inference, the evaluation loop and the metrics (it never imports the training engine).

===============  ==============================================================
``inference``    whole image, sliding windows, multi-scale and flip; one image
``evaluator``    ``evaluate(model, dataset, ...)``: the loop, under ``mpirun`` too
``metrics``      the confusion matrix and its metrics; the printed table
``submission``   benchmark-server formats of predictions
===============  ==============================================================
"""
