"""Visualisation: what the project draws (it computes nothing it draws).

===============  ==============================================================
``palette``      class indices as colours, palette PNGs, overlays
``attention``    criss-cross attention maps composed over the passes, drawn
``report``       compare.py's tables, figures and ``report.md``
===============  ==============================================================
"""
