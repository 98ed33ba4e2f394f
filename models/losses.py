"""Segmentation losses of CCNet: cross-entropy with an ignore label, auxiliary loss, OHEM.

Upstream: speedinghzl/CCNet ``loss/criterion.py`` (``CriterionDSN``,
``CriterionOhemDSN``) and ``loss/loss.py`` (``OhemCrossEntropy2d``), MIT license.

* Both heads' logits are upsampled bilinearly to the label size
  (``align_corners=True`` in the official code).
* Cross-entropy is averaged over the valid pixels (label != ``ignore_index``),
  as ``torch.nn.CrossEntropyLoss(ignore_index=255)``. With no valid pixel at
  all the loss is 0 (PyTorch would return NaN).
* The auxiliary head gets plain cross-entropy, weighted ``aux_weight`` (0.4).
* OHEM (main head only), official semantics, but ``min_kept`` counts the
  pixels of the global batch (see :func:`ohem_keep_mask`). The threshold comes from a 1/8
  subsample: the class probabilities are zoomed (order 1) and the label is
  zoomed (order 0) separately, and each subsampled pixel's ground-truth
  probability ``p`` is picked from the zoomed probabilities. With
  ``mk = min_kept // 64`` and ``n`` valid subsampled pixels, the threshold is
  1.0 (keep everything) if ``mk >= n``; otherwise ``max(thresh, mk-th smallest
  p)`` (``thresh`` alone if ``mk == 0``). At full resolution the valid pixels
  whose ground-truth probability is ``<= threshold`` are kept, and
  cross-entropy is averaged over them.

  The official code zooms with ``scipy.ndimage.zoom(prob, 1/8, order=1)`` and
  ``zoom(label, 1/8, order=0)``. Both are reproduced on the device: the output
  size is ``round(size / 8)`` (Python rounding), output pixel ``o`` samples the
  input coordinate ``o * (size - 1) / (out - 1)`` (computed in float64 on the
  host, as scipy does); order 1 interpolates linearly there, order 0 takes the
  pixel ``floor(coordinate + 0.5)``. The threshold and the kept mask are
  computed in Jittor, without copying the probabilities to the host.
* The category consistent loss of the TPAMI version (:func:`category_consistent_loss`,
  enabled by ``ccl``): RCCA features of one class pulled to their class mean,
  class means pushed apart, means kept small.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from typing import Callable, Optional, Sequence, Union

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from engine.compat import ReleasingFunction, matmul_per_image
from engine.dist import all_gather, all_reduce_sum
from models.precision import float32

__all__ = ["SegmentationLoss", "LossParts", "AUX_WEIGHT", "OHEM_THRESH", "OHEM_MIN_KEPT", "CCL_WEIGHTS", "CCL_DELTAS", "CCL_DIM",
           "log_softmax", "pixel_nll", "ohem_keep_mask", "zoom_size", "zoom_nearest_index", "zoom_linear_weights",
           "nearest_labels", "category_consistent_loss", "bilinear_tables", "upsample_nll_sum"]

#: Subsampling factor of the OHEM threshold search (official ``factor=8``).
OHEM_FACTOR = 8

#: Defaults of the official recipe (README and ``train.py`` of speedinghzl/CCNet), used by train.py too.
AUX_WEIGHT = 0.4
OHEM_THRESH = 0.7
OHEM_MIN_KEPT = 100000

#: Defaults of the category consistent loss: weights (alpha, beta, gamma) of the variance, distance and
#: regularisation terms, margins (delta_v, delta_d) and the projected feature width D. They come from
#: secondary summaries of the TPAMI paper, not from released code; all are train.py flags.
CCL_WEIGHTS = (1.0, 1.0, 0.001)
CCL_DELTAS = (0.5, 1.5)
CCL_DIM = 16


def zoom_size(size: int, factor: int = OHEM_FACTOR) -> int:
    """Output length of ``scipy.ndimage.zoom`` by ``1/factor``: ``round(size / factor)``, at least 1."""
    return max(1, int(round(size * (1.0 / factor))))


def _zoom_coordinates(size: int, out: int) -> np.ndarray:
    """Input coordinate of each output pixel of ``scipy.ndimage.zoom`` (``grid_mode=False``), float64."""
    scale = (size - 1) / (out - 1) if out > 1 else 1.0
    return np.arange(out) * scale


def zoom_nearest_index(size: int, out: int) -> np.ndarray:
    """Input index of each output pixel of ``scipy.ndimage.zoom(order=0)``: ``floor(coordinate + 0.5)``."""
    return np.minimum(np.floor(_zoom_coordinates(size, out) + 0.5), size - 1).astype(np.int32)


def zoom_linear_weights(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, w)`` of ``scipy.ndimage.zoom(order=1)``: output = ``x[lo] * (1 - w) + x[hi] * w``."""
    coords = _zoom_coordinates(size, out)
    lo = np.clip(np.floor(coords), 0, size - 1).astype(np.int32)
    hi = np.minimum(lo + 1, size - 1).astype(np.int32)
    return lo, hi, coords - lo


def _upsample(logits: jt.Var, size: Sequence[int], align_corners: bool) -> jt.Var:
    if tuple(logits.shape[2:]) == tuple(size):
        return logits
    return nn.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


# The header text goes into jt.code (not an #include), so that editing it recompiles the kernels.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "upsample_nll_cpu.h")) as _f:
    _UPSAMPLE_NLL_HEADER = _f.read()


@functools.lru_cache(maxsize=64)  # the same few sizes every training step
def bilinear_tables(size: int, out: int, align_corners: bool, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, weight)`` of each output index of Jittor's bilinear ``nn.interpolate`` from ``size`` to ``out`` >= size.

    Output ``o`` samples ``(1 - weight) * x[lo] + weight * x[lo + 1]``. The
    coordinate is computed as Jittor computes it (in float32 for float32
    logits; in float64 for float64, the exact value).
    """
    t = np.dtype(dtype).type
    index = np.arange(out).astype(t)
    if align_corners:
        coord = index * t((size - 1) / max(1, out - 1))
    else:
        coord = np.clip(index * t(size / out) + t(size / out * 0.5 - 0.5), 0, size - 1)
    lo = np.floor(coord)
    tables = lo.astype(np.int32), (coord - lo).astype(t)
    for table in tables:
        table.flags.writeable = False  # shared by the cache
    return tables


# B, C, h, w of the logits (in0), H, W of the target (in1): from the shapes, so that one compiled
# kernel serves every size.
_NLL_SIZES = "in0_shape0, in0_shape1, in0_shape2, in0_shape3, in1_shape1, in1_shape2"


class _UpsampleNLLSum(ReleasingFunction):
    """Sum over labelled pixels of ``-log softmax(upsample(logits))[target]`` (``upsample_nll_cpu.h``)."""

    def execute(self, logits: jt.Var, target: jt.Var, align_corners: bool) -> jt.Var:
        h, w = logits.shape[2:]
        H, W = target.shape[1:]
        tables = []
        for size, out in ((h, H), (w, W)):
            lo, weight = bilinear_tables(size, out, align_corners, str(logits.dtype))
            tables += [jt.array(lo), jt.array(weight).cast(logits.dtype)]
        self.save(logits, target, tables)
        return jt.code((1,), logits.dtype, [logits, target, *tables], cpu_header=_UPSAMPLE_NLL_HEADER,
                       cpu_src=f"upsample_nll::forward<in0_type>(in0_p, in1_p, in2_p, in3_p, in4_p, in5_p, out0_p, "
                               f"{_NLL_SIZES});")

    def grad(self, grad_sum: jt.Var):
        logits, target, tables = self.saved()
        dlogits = jt.code(logits.shape, logits.dtype, [logits, target, *tables, grad_sum.cast(logits.dtype)],
                          cpu_header=_UPSAMPLE_NLL_HEADER,
                          cpu_src=f"upsample_nll::backward<in0_type>(in0_p, in1_p, in2_p, in3_p, in4_p, in5_p, "
                                  f"in6_p, out0_p, {_NLL_SIZES});")
        return dlogits, None, None


def upsample_nll_sum(logits: jt.Var, target: jt.Var, align_corners: bool = True) -> jt.Var:
    """``sum_p -log softmax(bilinear upsample of logits to target's size)[p, target_p]`` over ``target >= 0``.

    The CPU kernels of ``upsample_nll_cpu.h``: the same value as
    ``nn.interpolate`` + :func:`log_softmax` + gather, without the upsampled
    ``[B, C, H, W]`` tensors (whose elementwise kernels run on one thread in
    Jittor 1.3.11 on the CPU: 7% of a ResNet-50 CCNet training step). ``logits
    [B, C, h, w]`` float32 or float64, ``target [B, H, W]`` int32 with ``H >= h``,
    ``W >= w``; -1 marks a pixel that takes no part.
    """
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"logits [B, C, h, w] and target [B, H, W] expected, got {list(logits.shape)} and "
                         f"{list(target.shape)}")
    if target.shape[1] < logits.shape[2] or target.shape[2] < logits.shape[3]:
        raise ValueError(f"upsample_nll_sum only upsamples: target {list(target.shape[1:])} is smaller than "
                         f"the logits {list(logits.shape[2:])}")
    if str(logits.dtype) not in ("float32", "float64"):
        raise TypeError(f"upsample_nll_sum takes float32 or float64 logits, got {logits.dtype}")
    return _UpsampleNLLSum.apply(logits, target.cast("int32").stop_grad(), bool(align_corners))


def log_softmax(logits: jt.Var) -> jt.Var:
    """``log softmax`` over the class axis (dim 1)."""
    shifted = logits - logits.max(dim=1, keepdims=True).stop_grad()
    return shifted - shifted.exp().sum(dim=1, keepdims=True).log()


def pixel_nll(logits: jt.Var, target: jt.Var) -> jt.Var:
    """Per-pixel ``-log softmax(logits)[target]``, ``[B, H, W]``; ``target`` must be in [0, C)."""
    return -jt.gather(log_softmax(logits), 1, target.unsqueeze(1)).squeeze(1)


def _zoom_linear(x: jt.Var, h: int, w: int) -> jt.Var:
    """Order-1 zoom of the last two axes of ``x`` to ``(h, w)``; weights from float64 coordinates as in scipy."""
    for axis, out in ((x.ndim - 2, h), (x.ndim - 1, w)):
        lo, hi, frac = zoom_linear_weights(x.shape[axis], out)
        shape = [1] * x.ndim
        shape[axis] = out
        wt = jt.array(frac.astype(np.float32)).reshape(shape).cast(x.dtype)
        index = [slice(None)] * axis
        x = x[tuple(index + [jt.array(lo)])] * (1 - wt) + x[tuple(index + [jt.array(hi)])] * wt
    return x


def ohem_keep_mask(prob: jt.Var, target: jt.Var, valid: jt.Var, thresh: float, min_kept: int,
                   factor: int = OHEM_FACTOR) -> tuple[jt.Var, jt.Var]:
    """Official OHEM selection. Returns ``(keep mask [B, H, W] bool, threshold [1])``.

    Args:
        prob: softmax probabilities ``[B, C, H, W]`` (at the label's resolution).
        target: ``[B, H, W]`` class indices in ``[0, C)`` (any class where not ``valid``).
        valid: ``[B, H, W]`` bool, label != ignore.
        thresh: the probability threshold (official ``--ohem-thres``).
        min_kept: the minimum number of kept pixels at full resolution, counted over the *global*
            batch: under MPI the threshold is chosen from the pixels of all processes, so the
            same flags select the same pixels whatever the process count. (The official code
            applies ``--ohem-keep`` to each GPU's share: 4 GPUs x 2 images, 100000 each.)

    As the official code, the threshold search subsamples the class
    probabilities (order-1 zoom) and the label (order-0 zoom) separately and
    then picks each subsampled pixel's ground-truth probability.
    """
    prob, target, valid = prob.stop_grad(), target.stop_grad(), valid.stop_grad()
    B, _, H, W = prob.shape
    h, w = zoom_size(H, factor), zoom_size(W, factor)
    small_prob = _zoom_linear(prob, h, w)
    iy, ix = jt.array(zoom_nearest_index(H, h)), jt.array(zoom_nearest_index(W, w))
    small_target = target[:, iy][:, :, ix]
    small_valid = valid[:, iy][:, :, ix]
    small_p = jt.gather(small_prob, 1, small_target.unsqueeze(1)).squeeze(1)
    mk = min_kept // (factor * factor)
    # Under MPI the selection runs over the global batch: every rank sees every rank's values.
    local = jt.ternary(small_valid, small_p, jt.full_like(small_p, 2.0)).reshape(-1)  # invalid ones sort last
    values = all_gather(local).reshape(-1)
    num_valid = all_reduce_sum(small_valid.sum().cast("float32"))
    if mk > 0:
        sorted_values = jt.argsort(values)[1]
        k = min(mk, values.shape[0])
        threshold = jt.maximum(sorted_values[k - 1:k], jt.array([float(thresh)]).cast(prob.dtype))
    else:
        threshold = jt.array([float(thresh)]).cast(prob.dtype)
    threshold = jt.ternary(num_valid.reshape(1) <= float(mk), jt.ones_like(threshold), threshold)
    p_gt = jt.gather(prob, 1, target.unsqueeze(1)).squeeze(1)
    keep = valid & (p_gt <= threshold.reshape(1, 1, 1))
    return keep, threshold


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


class LossParts(Mapping):
    """The logged values of one loss evaluation (name -> float), read from Jittor on first access.

    The values stay one pending Jittor vector (:attr:`pending`) until a key is
    read, so that a training step can compute them in the same execution as
    its forward, backward and update (``engine.loop.train_step`` synchronises
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

    def _ce(self, logits: jt.Var, label: jt.Var, valid: jt.Var, safe: jt.Var, target: jt.Var,
            ohem: bool) -> tuple[jt.Var, Optional[jt.Var], Optional[jt.Var]]:
        """Cross-entropy of ``logits`` upsampled to ``label``; ``target`` is ``safe`` with -1 where not ``valid``."""
        if (not ohem and not jt.flags.use_cuda and str(logits.dtype) in ("float32", "float64")
                and label.shape[1] >= logits.shape[2] and label.shape[2] >= logits.shape[3]):
            # the fused CPU kernels; the same value as the lines below
            count = valid.cast(logits.dtype).sum()
            total = upsample_nll_sum(logits, target, self.align_corners)
            return total.sum() / jt.maximum(count, jt.ones_like(count)), count, None
        logits = _upsample(logits, label.shape[1:], self.align_corners)
        logp = log_softmax(logits)
        nll = -jt.gather(logp, 1, safe.unsqueeze(1)).squeeze(1)
        keep, threshold = valid, None
        if ohem:
            keep, threshold = ohem_keep_mask(logp.exp(), safe, valid, self.ohem_thresh, self.ohem_min_kept)
        weight = keep.cast(nll.dtype)
        count = weight.sum()
        if ohem and jt.in_mpi:
            # mean over the pixels kept in the global batch: the optimizer averages the ranks'
            # gradients, so each rank's sum is scaled by the process count
            total = all_reduce_sum(count.stop_grad())
            loss = (nll * weight).sum() * float(jt.world_size) / jt.maximum(total, jt.ones_like(total))
            return loss, total, threshold
        loss = (nll * weight).sum() / jt.maximum(count, jt.ones_like(count))
        return loss, count, threshold

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
        loss_main, valid_count, threshold = self._ce(main, label, valid, safe, target, self.ohem)
        loss = loss_main
        names = ["loss_main", "ohem_kept"] if self.ohem else ["loss_main"]
        values = [loss_main, valid_count] if self.ohem else [loss_main]
        if aux is not None:
            loss_aux, _, _ = self._ce(aux, label, valid, safe, target, False)
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
