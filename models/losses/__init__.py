"""The losses of CCNet, one per module.

=======================  ====================================================
``cross_entropy``        cross-entropy of upsampled logits over labelled pixels
``ohem``                 OHEM cross-entropy (the official hard-pixel mining)
``ccl``                  the category consistent loss of the TPAMI version
``segmentation_loss``    the criterion: main + auxiliary (+ OHEM, + CCL)
=======================  ====================================================
"""
from __future__ import annotations

from models.losses.ccl import CCL_DELTAS, CCL_DIM, CCL_WEIGHTS
from models.losses.ohem import OHEM_MIN_KEPT, OHEM_THRESH
from models.losses.segmentation_loss import AUX_WEIGHT, LossParts, SegmentationLoss

__all__ = ["SegmentationLoss", "LossParts", "AUX_WEIGHT", "OHEM_THRESH", "OHEM_MIN_KEPT", "CCL_WEIGHTS",
           "CCL_DELTAS", "CCL_DIM"]
