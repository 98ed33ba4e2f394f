"""The CCNet criterion: cross-entropy (or OHEM) on the main head, plus the auxiliary and the consistency losses.

Upstream: speedinghzl/CCNet ``loss/criterion.py`` (``CriterionDSN``,
``CriterionOhemDSN``), MIT license.

* The main head gets cross-entropy (:mod:`models.losses.cross_entropy`) or,
  with ``ohem``, OHEM cross-entropy (:mod:`models.losses.ohem`).
* The auxiliary head gets plain cross-entropy, weighted ``aux_weight`` (0.4).
* With ``ccl``, the category consistent loss of the TPAMI version
  (:mod:`models.losses.ccl`) on the model's projected RCCA feature.

The logged values come back as one :class:`LossParts` mapping.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Callable, Optional, Sequence, Union

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.losses.ccl import CCL_DELTAS, CCL_WEIGHTS, category_consistent_loss
from models.losses.cross_entropy import cross_entropy
from models.losses.ohem import OHEM_MIN_KEPT, OHEM_THRESH, ohem_cross_entropy
from models.precision import float32

__all__ = ["AUX_WEIGHT", "LossParts", "SegmentationLoss"]

#: Weight of the auxiliary head's loss (official recipe, used by train.py too).
AUX_WEIGHT = 0.4


class LossParts(Mapping):
    """The logged values of one loss evaluation (name -> float), read from Jittor on first access.

    The values stay one pending Jittor vector (:attr:`pending`) until a key is
    read, so that a training step can compute them in the same execution as
    its forward, backward and update (``engine.train_loop.train_step`` synchronises
    once per step). Checks that need the values (labels outside the classes)
    run at that first read.
    """

    def __init__(self, names: Sequence[str], values: jt.Var, finish: Callable[[dict], dict]) -> None:
        self.pending = values
        self._names, self._finish, self._stats = list(names), finish, None

    def _fetch(self) -> dict[str, float]:
        if self._stats is None:
            fetched = self.pending.numpy()
            self._stats = self._finish(dict(zip(self._names, (float(v) for v in fetched))))
        return self._stats

    def __getitem__(self, key: str) -> float:
        return self._fetch()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fetch())

    def __len__(self) -> int:
        return len(self._fetch())


class SegmentationLoss(nn.Module):
    """CCNet criterion: CE (or OHEM CE) on the main logits + ``aux_weight`` * CE on the auxiliary logits.

    Args:
        num_classes: number of classes; labels must be in ``[0, num_classes)`` or ``ignore_index``.
        ignore_index: label of ignored pixels (255).
        aux_weight: weight of the auxiliary loss (0.4).
        ohem: online hard example mining on the main head (official ``CriterionOhemDSN``).
        ohem_thresh: OHEM probability threshold (official README 0.7).
        ohem_min_kept: OHEM minimum kept pixels (official README 100000).
        align_corners: of the bilinear upsampling of the logits to the label size.
        ccl: add the category consistent loss on the third output (the projected
            RCCA feature of a model built with ``ccl_dim``), weighted by
            ``ccl_weights`` (alpha, beta, gamma) with margins ``ccl_deltas``.

    ``execute(outputs, label)`` takes ``(main, aux)`` (``aux`` may be None) or
    the main logits alone, and an integer label ``[B, H, W]``; it returns the
    total loss (a Jittor scalar to back-propagate) and its parts, a
    :class:`LossParts` mapping of floats read on first access: ``loss``,
    ``loss_main``, ``loss_aux`` (if any), ``valid_pixels``, with OHEM
    ``ohem_threshold`` and ``ohem_kept``, and with CCL ``loss_ccl_var``,
    ``loss_ccl_dis`` and ``loss_ccl_reg`` (unweighted). Reading them raises
    ValueError for a label outside ``[0, num_classes)`` other than
    ``ignore_index``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, aux_weight: float = AUX_WEIGHT, ohem: bool = False,
                 ohem_thresh: float = OHEM_THRESH, ohem_min_kept: int = OHEM_MIN_KEPT,
                 align_corners: bool = True, ccl: bool = False, ccl_weights: Sequence[float] = CCL_WEIGHTS,
                 ccl_deltas: Sequence[float] = CCL_DELTAS) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class index (num_classes {num_classes})")
        if ohem_min_kept < 0:
            raise ValueError(f"ohem_min_kept must be >= 0, got {ohem_min_kept}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.aux_weight = float(aux_weight)
        self.ohem = bool(ohem)
        self.ohem_thresh = float(ohem_thresh)
        self.ohem_min_kept = int(ohem_min_kept)
        self.align_corners = bool(align_corners)
        self.ccl = bool(ccl)
        self.ccl_weights = tuple(float(w) for w in ccl_weights)
        self.ccl_deltas = tuple(float(d) for d in ccl_deltas)
        if len(self.ccl_weights) != 3 or min(self.ccl_weights) < 0:
            raise ValueError(f"ccl_weights must be three non-negative numbers, got {ccl_weights}")
        if len(self.ccl_deltas) != 2 or not 0 <= self.ccl_deltas[0] < self.ccl_deltas[1]:
            raise ValueError(f"ccl_deltas must be delta_v, delta_d with 0 <= delta_v < delta_d, got {ccl_deltas}")

    def execute(self, outputs: Union[jt.Var, Sequence[Optional[jt.Var]]],
                label: jt.Var) -> tuple[jt.Var, LossParts]:
        if isinstance(outputs, (tuple, list)):
            main = outputs[0]
            aux = outputs[1] if len(outputs) > 1 else None
            feature = outputs[2] if len(outputs) > 2 else None
        else:
            main, aux, feature = outputs, None, None
        # the losses in float32 (models.precision)
        main, aux, feature = (None if t is None else float32(t) for t in (main, aux, feature))
        if self.ccl and feature is None:
            raise ValueError("the category consistent loss needs the model's projected RCCA feature: build the "
                             "model with ccl_dim (train.py --ccl does)")
        if label.ndim != 3:
            raise ValueError(f"label must be [B, H, W], got shape {list(label.shape)}")
        if main.ndim != 4 or main.shape[0] != label.shape[0] or main.shape[1] != self.num_classes:
            raise ValueError(f"logits must be [B={label.shape[0]}, C={self.num_classes}, h, w], "
                             f"got {list(main.shape)}")
        label = label.stop_grad()
        if str(label.dtype) != "int32":
            label = label.cast("int32")
        valid = label != self.ignore_index
        bad = valid & ((label < 0) | (label >= self.num_classes))
        safe = jt.ternary(valid & bad.logical_not(), label, jt.zeros_like(label))

        target = jt.ternary(valid, safe, jt.full_like(safe, -1))  # for the fused kernels (lazy: unused otherwise)
        if self.ohem:
            loss_main, valid_count, threshold = ohem_cross_entropy(main, label.shape[1:], valid, safe,
                                                                   self.ohem_thresh, self.ohem_min_kept,
                                                                   self.align_corners)
        else:
            (loss_main, valid_count), threshold = cross_entropy(main, valid, safe, target, self.align_corners), None
        loss = loss_main
        names = ["loss_main", "ohem_kept"] if self.ohem else ["loss_main"]
        values = [loss_main, valid_count] if self.ohem else [loss_main]
        if aux is not None:
            loss_aux, _ = cross_entropy(aux, valid, safe, target, self.align_corners)
            loss = loss + self.aux_weight * loss_aux
            names.append("loss_aux")
            values.append(loss_aux)
        if threshold is not None:
            names.append("ohem_threshold")
            values.append(threshold)
        if self.ccl:
            terms = category_consistent_loss(feature, label, self.num_classes, self.ignore_index, self.ccl_deltas)
            for name, term, weight in zip(("var", "dis", "reg"), terms, self.ccl_weights):
                loss = loss + weight * term
                names.append(f"loss_ccl_{name}")
                values.append(term)
        names += ["valid_pixels", "bad_labels", "bad_min", "bad_max"]
        values += [valid.sum(), bad.sum(),
                   jt.ternary(bad, label, jt.full_like(label, 2 ** 30)).min(),
                   jt.ternary(bad, label, jt.full_like(label, -2 ** 30)).max()]
        return loss, LossParts(names, jt.concat([v.reshape(-1).cast("float64") for v in values]), self._finish)

    def _finish(self, stats: dict[str, float]) -> dict[str, float]:
        """The label check and the total, once the values are on the host."""
        if stats.pop("bad_labels") > 0:
            lo, hi = int(stats.pop("bad_min")), int(stats.pop("bad_max"))
            raise ValueError(f"labels must be in [0, {self.num_classes}) or the ignore index {self.ignore_index}; "
                             f"found values in [{lo}, {hi}] outside that range (check the dataset's label "
                             f"mapping and num_classes)")
        stats.pop("bad_min")
        stats.pop("bad_max")
        ccl_total = 0.0
        if self.ccl:
            ccl_total = sum(w * stats[f"loss_ccl_{n}"] for n, w in zip(("var", "dis", "reg"), self.ccl_weights))
        stats["loss"] = float(stats["loss_main"] + self.aux_weight * stats.get("loss_aux", 0.0) + ccl_total)
        return stats
