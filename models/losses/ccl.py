"""The category consistent loss of CCNet's TPAMI version (Huang et al., TPAMI 2020, Sec. 3.4).

RCCA features of one class are pulled to their class mean, class means are
pushed apart, and the means are kept small. No released code has the loss;
it is written from the paper's formulas, and its defaults (:data:`CCL_WEIGHTS`,
:data:`CCL_DELTAS`, :data:`CCL_DIM`) come from secondary summaries of the
paper, so all are ``train.py`` flags.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from utils.jittor_fixes import matmul_per_image

__all__ = ["CCL_WEIGHTS", "CCL_DELTAS", "CCL_DIM", "nearest_labels", "category_consistent_loss"]

#: Weights (alpha, beta, gamma) of the variance, distance and regularisation terms, margins
#: (delta_v, delta_d), and the width D of the projected feature.
CCL_WEIGHTS = (1.0, 1.0, 0.001)
CCL_DELTAS = (0.5, 1.5)
CCL_DIM = 16


def nearest_labels(label: jt.Var, size: Sequence[int]) -> jt.Var:
    """``label [B, H, W]`` resized to ``size`` by nearest neighbour (pixel ``o`` takes ``floor(o * H / h)``)."""
    H, W = label.shape[1:]
    h, w = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return label
    iy = jt.array(np.minimum((np.arange(h) * (H / h)).astype(np.int64), H - 1).astype(np.int32))
    ix = jt.array(np.minimum((np.arange(w) * (W / w)).astype(np.int64), W - 1).astype(np.int32))
    return label[:, iy][:, :, ix]


def _const(value: float, like: jt.Var) -> jt.Var:
    """``value`` as a 1-element Var of ``like``'s dtype (a Python float would be rounded to float32 by Jittor)."""
    return jt.array(np.array([value], dtype=str(like.dtype)))


def _norm(x: jt.Var, dim: int) -> jt.Var:
    """Euclidean norm over ``dim``, exact, with a zero (not NaN) gradient where it is 0."""
    squares = x.sqr().sum(dim)
    positive = squares > 0
    return jt.ternary(positive, jt.ternary(positive, squares, jt.ones_like(squares)).sqrt(), jt.zeros_like(squares))


def category_consistent_loss(features: jt.Var, label: jt.Var, num_classes: int, ignore_index: int = 255,
                             deltas: Sequence[float] = CCL_DELTAS) -> tuple[jt.Var, jt.Var, jt.Var]:
    """The category consistent loss of CCNet's TPAMI version: ``(l_var, l_dis, l_reg)``, means over the batch.

    ``features [B, D, h, w]`` (the projected RCCA feature), ``label [B, H, W]``
    (resized to ``h x w`` by nearest neighbour; ignored pixels take no part).
    Per image, with ``C`` the classes present, ``mu_c`` the mean feature of
    class ``c`` over its ``N_c`` pixels and ``d = ||mu_c - h_i||``:

    * ``l_var = 1/|C| sum_c 1/N_c sum_{i in c} phi_var(d)``, ``phi_var`` 0 up to
      ``delta_v``, ``(d - delta_v)^2`` up to ``delta_d``, then the linear tail
      ``d - delta_d + (delta_d - delta_v)^2``;
    * ``l_dis = 1/(|C|(|C|-1)) sum_{a != b} (2 delta_d - ||mu_a - mu_b||)^2`` over
      the pairs closer than ``2 delta_d`` (0 with fewer than two classes);
    * ``l_reg = 1/|C| sum_c ||mu_c||``.

    Class means come from one-hot matrix products (no loop over classes or
    pixels); an image with no valid pixel contributes 0. The batch's loss is
    the mean of its images' losses.
    """
    delta_v, delta_d = (float(d) for d in deltas)
    B, D, h, w = features.shape
    label = nearest_labels(label, (h, w)).reshape(B, h * w).stop_grad()
    classes = jt.arange(num_classes).reshape(1, num_classes, 1)
    valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
    onehot = ((label.unsqueeze(1) == classes) & valid.unsqueeze(1)).cast(features.dtype)   # [B, K, P]
    feats = features.reshape(B, D, h * w).transpose(0, 2, 1)                                # [B, P, D]
    counts = onehot.sum(2)                                                                   # [B, K]
    present = (counts > 0).cast(features.dtype)
    n_present = present.sum(1)                                                               # [B]
    means = matmul_per_image(onehot, feats) / jt.maximum(counts, jt.ones_like(counts)).unsqueeze(2)  # [B, K, D]
    # variance: each pixel's distance to its class mean
    own_mean = matmul_per_image(onehot.transpose(0, 2, 1), means)                            # [B, P, D]
    d = _norm(own_mean - feats, 2)                                                           # [B, P]
    dv, dd, tail = (_const(v, d) for v in (delta_v, delta_d, (delta_d - delta_v) ** 2))
    phi = jt.ternary(d <= delta_v, jt.zeros_like(d), jt.ternary(d <= delta_d, (d - dv).sqr(), d - dd + tail))
    per_class = (onehot * phi.unsqueeze(1)).sum(2) / jt.maximum(counts, jt.ones_like(counts))   # [B, K]
    l_var = (per_class * present).sum(1) / jt.maximum(n_present, jt.ones_like(n_present))
    # distance: pairs of class means closer than 2 delta_d
    dist = _norm(means.unsqueeze(2) - means.unsqueeze(1), 3)                                 # [B, K, K]
    pairs = present.unsqueeze(2) * present.unsqueeze(1) * (1 - jt.init.eye(num_classes, features.dtype))
    push = jt.maximum(_const(2 * delta_d, dist) - dist, jt.zeros_like(dist)).sqr()
    n_pairs = n_present * (n_present - 1)
    l_dis = (push * pairs).sum([1, 2]) / jt.maximum(n_pairs, jt.ones_like(n_pairs))
    # regularisation: small class means
    l_reg = (_norm(means, 2) * present).sum(1) / jt.maximum(n_present, jt.ones_like(n_present))
    return l_var.mean(), l_dis.mean(), l_reg.mean()
