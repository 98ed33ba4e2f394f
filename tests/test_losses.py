"""SegmentationLoss: hand-computed cross-entropy with ignored pixels, auxiliary weight, bad labels, OHEM.

OHEM is checked against a float64 numpy transcription of the official
``OhemCrossEntropy2d`` (speedinghzl/CCNet ``loss/loss.py``). The official code
subsamples with ``scipy.ndimage.zoom`` (order 1 for the probabilities, order 0
for the labels); scipy is not a dependency, so ``zoom`` below reimplements it
for these cases (``grid_mode=False``: output size ``round(n * 1/8)``, output
pixel ``o`` at input coordinate ``o * (n - 1) / (out - 1)``; order 1 linear,
order 0 ``floor(c + 0.5)``), and, when scipy is installed, is checked against it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import jittor as jt

from jittor import nn

from models.losses import SegmentationLoss
from models.losses.cross_entropy import log_softmax
from models.losses.ohem import zoom_nearest_index, zoom_size
from models.ops.upsample_nll import upsample_nll_sum

IGNORE = 255


# ----------------------------------------------------------------------------- float64 oracle


def _zoom_axis(x: np.ndarray, axis: int, factor: float, order: int) -> np.ndarray:
    n = x.shape[axis]
    out = int(round(n * factor))
    scale = (n - 1) / (out - 1) if out > 1 else 1.0
    coords = np.arange(out) * scale
    if order == 0:
        return np.take(x, np.minimum(np.floor(coords + 0.5).astype(int), n - 1), axis=axis)
    lo = np.clip(np.floor(coords).astype(int), 0, n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = (coords - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def zoom(x: np.ndarray, factors, order: int) -> np.ndarray:
    """``scipy.ndimage.zoom(x, factors, order)`` for order 0/1 (see the module docstring)."""
    for axis, f in enumerate(factors):
        if f != 1.0:
            x = _zoom_axis(x, axis, f, order)
    return x


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def bilinear_align_corners(x: np.ndarray, size) -> np.ndarray:
    """F.interpolate(bilinear, align_corners=True) in float64 (= linear zoom to an explicit size)."""
    for axis, out in ((2, size[0]), (3, size[1])):
        n = x.shape[axis]
        scale = (n - 1) / (out - 1) if out > 1 else 0.0
        coords = np.arange(out) * scale
        lo = np.clip(np.floor(coords).astype(int), 0, n - 1)
        hi = np.minimum(lo + 1, n - 1)
        w = (coords - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        x = np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w
    return x


def official_find_threshold(np_predict, np_target, thresh, min_kept, factor=8, ignore_label=IGNORE):
    predict = zoom(np_predict, (1.0, 1.0, 1.0 / factor, 1.0 / factor), order=1)
    target = zoom(np_target, (1.0, 1.0 / factor, 1.0 / factor), order=0)
    n, c, h, w = predict.shape
    min_kept = min_kept // (factor * factor)
    input_label = target.ravel().astype(np.int32)
    input_prob = np.rollaxis(predict, 1).reshape((c, -1))
    valid_flag = input_label != ignore_label
    label = input_label[valid_flag]
    num_valid = valid_flag.sum()
    threshold = None
    if min_kept >= num_valid:
        threshold = 1.0
    elif num_valid > 0:
        prob = input_prob[:, valid_flag]
        pred = prob[label, np.arange(len(label), dtype=np.int32)]
        threshold = thresh
        if min_kept > 0:
            k_th = min(len(pred), min_kept) - 1
            new_threshold = np.partition(pred, k_th)[k_th]
            if new_threshold > thresh:
                threshold = new_threshold
    return threshold


def official_ohem_loss(logits, target, thresh, min_kept, ignore_label=IGNORE):
    """CriterionOhemDSN's main term: upsample (align_corners) -> OHEM target -> CE over kept pixels."""
    h, w = target.shape[1:]
    scale_pred = bilinear_align_corners(logits.astype(np.float64), (h, w))
    prob = softmax(scale_pred)
    threshold = official_find_threshold(prob, target, thresh, min_kept)
    n, c = prob.shape[:2]
    input_label = target.ravel().astype(np.int32)
    input_prob = np.rollaxis(prob, 1).reshape((c, -1))
    valid_flag = input_label != ignore_label
    valid_inds = np.where(valid_flag)[0]
    label = input_label[valid_flag]
    if valid_flag.sum() > 0:
        pred = input_prob[:, valid_flag][label, np.arange(len(label))]
        valid_inds = valid_inds[pred <= threshold]
    new_label = np.full_like(input_label, ignore_label)
    new_label[valid_inds] = input_label[valid_inds]
    new_label = new_label.reshape(target.shape)
    logp = scale_pred - scale_pred.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    keep = new_label != ignore_label
    nll = -np.take_along_axis(logp, np.where(keep, new_label, 0)[:, None], 1)[:, 0]
    return nll[keep].mean(), float(threshold), int(keep.sum())


def plain_ce(logits, target, ignore_label=IGNORE):
    up = bilinear_align_corners(logits.astype(np.float64), target.shape[1:])
    logp = up - up.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    keep = target != ignore_label
    nll = -np.take_along_axis(logp, np.where(keep, target, 0)[:, None], 1)[:, 0]
    return nll[keep].mean()


# ----------------------------------------------------------------------------- zoom emulation


def test_zoom_geometry():
    assert [zoom_size(n) for n in (65, 769, 1024, 20, 28, 4, 3)] == [8, 96, 128, 2, 4, 0 + 1, 0 + 1]
    assert zoom_nearest_index(65, 8).tolist() == [0, 9, 18, 27, 37, 46, 55, 64]
    assert zoom_nearest_index(9, 3).tolist() == [0, 4, 8]
    assert zoom_nearest_index(5, 1).tolist() == [0]
    x = np.arange(65, dtype=np.float64)
    np.testing.assert_array_equal(zoom(x[None], (1.0, 1 / 8), order=0)[0], zoom_nearest_index(65, 8))
    np.testing.assert_allclose(zoom(x[None], (1.0, 1 / 8), order=1)[0], np.arange(8) * 64 / 7)


def test_zoom_matches_scipy_when_available():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.RandomState(0)
    for shape in ((2, 3, 65, 57), (1, 2, 100, 33)):
        p = rng.rand(*shape)
        np.testing.assert_allclose(zoom(p, (1, 1, 1 / 8, 1 / 8), 1), ndimage.zoom(p, (1, 1, 1 / 8, 1 / 8), order=1),
                                   atol=1e-12)
        lab = rng.randint(0, 5, shape[:1] + shape[2:])
        np.testing.assert_array_equal(zoom(lab, (1, 1 / 8, 1 / 8), 0), ndimage.zoom(lab, (1, 1 / 8, 1 / 8), order=0))


# ----------------------------------------------------------------------------- plain cross-entropy


def test_cross_entropy_hand_computed_with_ignored_pixels():
    # One image, 3 classes, 1x3 pixels; the middle pixel is ignored.
    logits = np.array([[1.0, 0.0, 2.0], [0.0, 5.0, 0.0], [0.0, 0.0, -1.0]], dtype=np.float32)  # [C, W]
    logits = logits.reshape(1, 3, 1, 3)
    label = np.array([[[0, IGNORE, 2]]], dtype=np.int32)
    # pixel 0: logits (1, 0, 0), target 0; pixel 2: logits (2, 0, -1), target 2
    nll0 = -(1 - math.log(math.e + 2))
    nll2 = -(-1 - math.log(math.e ** 2 + 1 + math.e ** -1))
    expected = (nll0 + nll2) / 2
    loss, stats = SegmentationLoss(3)(jt.array(logits), jt.array(label))
    assert abs(float(loss.item()) - expected) < 1e-6
    assert abs(stats["loss_main"] - expected) < 1e-6 and stats["valid_pixels"] == 2
    assert "loss_aux" not in stats and abs(stats["loss"] - expected) < 1e-6

    # aux weighted 0.4; aux logits = main logits with classes 0/2 swapped
    aux = logits[:, ::-1].copy()
    aux_nll0 = -(0 - math.log(math.e + 2))
    aux_nll2 = -(2 - math.log(math.e ** 2 + 1 + math.e ** -1))
    expected_aux = (aux_nll0 + aux_nll2) / 2
    loss, stats = SegmentationLoss(3, aux_weight=0.4)((jt.array(logits), jt.array(aux)), jt.array(label))
    assert abs(stats["loss_aux"] - expected_aux) < 1e-6
    assert abs(float(loss.item()) - (expected + 0.4 * expected_aux)) < 1e-6
    # (main, None) is the same as main alone
    loss_none, _ = SegmentationLoss(3)((jt.array(logits), None), jt.array(label))
    assert abs(float(loss_none.item()) - expected) < 1e-6


def test_cross_entropy_upsamples_logits_to_the_label():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 4, 5, 6).astype(np.float32)
    aux = rng.randn(2, 4, 5, 6).astype(np.float32)
    label = rng.randint(0, 4, (2, 33, 41)).astype(np.int32)
    label[0, :7] = IGNORE
    label[1, :, 30:] = IGNORE
    loss, stats = SegmentationLoss(4)((jt.array(logits), jt.array(aux)), jt.array(label))
    main_ref, aux_ref = plain_ce(logits, label), plain_ce(aux, label)
    np.testing.assert_allclose(stats["loss_main"], main_ref, rtol=1e-5)
    np.testing.assert_allclose(stats["loss_aux"], aux_ref, rtol=1e-5)
    np.testing.assert_allclose(float(loss.item()), main_ref + 0.4 * aux_ref, rtol=1e-5)
    assert stats["valid_pixels"] == (label != IGNORE).sum()


def test_all_ignored_gives_zero_and_gradient_flows():
    logits = jt.array(np.random.RandomState(1).randn(1, 3, 4, 4).astype(np.float32))
    loss, stats = SegmentationLoss(3)(logits, jt.full((1, 4, 4), IGNORE, dtype="int32"))
    assert float(loss.item()) == 0.0 and stats["valid_pixels"] == 0
    label = jt.array(np.random.RandomState(2).randint(0, 3, (1, 4, 4)).astype(np.int32))
    loss, _ = SegmentationLoss(3)(logits, label)
    grad = jt.grad(loss, logits).numpy()
    np.testing.assert_allclose(grad.sum(1), 0.0, atol=1e-6)  # softmax - onehot sums to 0 per pixel
    assert np.abs(grad).max() > 0


def bilinear_half_pixel(x: np.ndarray, size) -> np.ndarray:
    """F.interpolate(bilinear, align_corners=False) for upsampling, float64 (source clamped to [0, n - 1])."""
    for axis, out in ((2, size[0]), (3, size[1])):
        n = x.shape[axis]
        coords = np.clip((np.arange(out) + 0.5) * (n / out) - 0.5, 0, n - 1)
        lo = np.floor(coords).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = (coords - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        x = np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w
    return x


def _nll_sum_reference(logits: np.ndarray, target: np.ndarray, align_corners: bool) -> float:
    up = (bilinear_align_corners if align_corners else bilinear_half_pixel)(logits, target.shape[1:])
    logp = up - up.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    keep = target >= 0
    return float(-np.take_along_axis(logp, np.where(keep, target, 0)[:, None], 1)[:, 0][keep].sum())


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape,size", [((2, 5, 7, 9), (17, 23)), ((1, 3, 4, 4), (4, 4)), ((1, 19, 3, 5), (33, 65))])
def test_fused_upsampled_cross_entropy_float64(float64, align_corners, shape, size):
    rng = np.random.default_rng(sum(shape) + size[0])
    logits = rng.standard_normal(shape) * 3
    target = rng.integers(-1, shape[1], (shape[0], *size)).astype(np.int32)   # -1: no part
    x = jt.array(logits)
    total = upsample_nll_sum(x, jt.array(target), align_corners)
    assert str(total.dtype) == "float64"
    np.testing.assert_allclose(total.item(), _nll_sum_reference(logits, target, align_corners), rtol=1e-12)
    grad = jt.grad(total * 1.5, x).numpy()
    eps = 1e-5  # central differences: truncation ~ eps^2, rounding ~ 1e-16 * |sum| / eps
    for index in [tuple(rng.integers(0, n) for n in shape) for _ in range(6)] + [(0, 0, 0, 0), (0, 1, -1, -1)]:
        up, down = logits.copy(), logits.copy()
        up[index] += eps
        down[index] -= eps
        numeric = 1.5 * (_nll_sum_reference(up, target, align_corners)
                         - _nll_sum_reference(down, target, align_corners)) / (2 * eps)
        assert abs(grad[index] - numeric) <= 1e-6 * max(1.0, abs(numeric)), index


@pytest.mark.parametrize("align_corners", [True, False])
def test_fused_cross_entropy_equals_jittor_upsample_and_log_softmax(align_corners):
    rng = np.random.default_rng(3)
    x = jt.array(rng.standard_normal((2, 6, 9, 11)).astype(np.float32) * 4)
    target = jt.array(rng.integers(-1, 6, (2, 65, 81)).astype(np.int32))
    fused = upsample_nll_sum(x, target, align_corners)
    keep = target >= 0
    up = nn.interpolate(x, size=(65, 81), mode="bilinear", align_corners=align_corners)
    nll = -jt.gather(log_softmax(up), 1, jt.ternary(keep, target, jt.zeros_like(target)).unsqueeze(1)).squeeze(1)
    graph = (nll * keep.cast("float32")).sum()
    np.testing.assert_allclose(fused.item(), graph.item(), rtol=1e-5)
    np.testing.assert_allclose(jt.grad(fused, x).numpy(), jt.grad(graph, x).numpy(), rtol=1e-4, atol=1e-5)


def test_fused_cross_entropy_refusals():
    x = jt.zeros((1, 3, 8, 8))
    with pytest.raises(ValueError, match="only upsamples"):
        upsample_nll_sum(x, jt.zeros((1, 4, 8), dtype="int32"))
    with pytest.raises(ValueError, match=r"logits \[B, C, h, w\] and target \[B, H, W\]"):
        upsample_nll_sum(x, jt.zeros((2, 8, 8), dtype="int32"))


@pytest.mark.parametrize("bad", [3, 7, -1, 254])
def test_labels_outside_the_classes_are_refused(bad):
    label = np.zeros((1, 4, 4), dtype=np.int32)
    label[0, 1, 2] = bad
    label[0, 0, 0] = IGNORE
    loss, parts = SegmentationLoss(3)(jt.array(np.zeros((1, 3, 4, 4), np.float32)), jt.array(label))
    with pytest.raises(ValueError, match=rf"\[0, 3\) or the ignore index 255.*\[{bad}, {bad}\]"):
        parts["loss"]  # the values, and so the check, are read once, after the step's one execution


def test_constructor_and_shape_errors():
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationLoss(300, ignore_index=255)
    crit = SegmentationLoss(3)
    with pytest.raises(ValueError, match="label must be"):
        crit(jt.zeros((1, 3, 4, 4)), jt.zeros((1, 1, 4, 4), dtype="int32"))
    with pytest.raises(ValueError, match="logits must be"):
        crit(jt.zeros((1, 4, 4, 4)), jt.zeros((1, 4, 4), dtype="int32"))


# ----------------------------------------------------------------------------- OHEM


def _ohem_case(seed, shape=(2, 5, 9, 9), label_size=(65, 57), ignore_rows=10, sharp=3.0):
    rng = np.random.RandomState(seed)
    logits = (rng.randn(*shape) * sharp).astype(np.float32)
    label = rng.randint(0, shape[1], (shape[0],) + label_size).astype(np.int32)
    label[0, :ignore_rows] = IGNORE
    label[-1, :, -ignore_rows:] = IGNORE
    return logits, label


@pytest.mark.parametrize("thresh,min_kept,case", [
    (0.05, 64 * 40, "k-th above thresh"),   # mk = 40 < valid: threshold = the 40th smallest p
    (0.7, 64 * 40, "thresh above k-th"),    # mk = 40: threshold = max(0.7, 40th smallest p) = 0.7
    (0.7, 1000, "mk = 15"),
    (0.3, 200, "threshold = thresh"),       # mk = 3: the 3rd smallest p is below 0.3
    (0.7, 63, "mk = 0"),                    # min_kept // 64 == 0: threshold = thresh
    (0.7, 100000, "keep all"),              # mk >= valid: threshold 1.0
])
def test_ohem_matches_the_official_algorithm(thresh, min_kept, case):
    logits, label = _ohem_case(0)
    ref_loss, ref_thr, ref_kept = official_ohem_loss(logits, label, thresh, min_kept)
    crit = SegmentationLoss(5, ohem=True, ohem_thresh=thresh, ohem_min_kept=min_kept)
    loss, stats = crit(jt.array(logits), jt.array(label))
    np.testing.assert_allclose(stats["ohem_threshold"], ref_thr, rtol=1e-5, atol=1e-6)
    assert stats["ohem_kept"] == ref_kept, (case, stats, ref_kept)
    np.testing.assert_allclose(float(loss.item()), ref_loss, rtol=1e-5)
    if case == "keep all":
        assert ref_thr == 1.0 and ref_kept == (label != IGNORE).sum()
    if case == "k-th above thresh":
        assert ref_thr > thresh and ref_kept < (label != IGNORE).sum()
    if case == "thresh above k-th":
        assert ref_thr == thresh


def test_ohem_varied_shapes_and_seeds():
    for seed, shape, size in ((1, (1, 3, 6, 7), (41, 50)), (2, (3, 4, 10, 8), (80, 64)), (3, (2, 2, 4, 4), (28, 20))):
        logits, label = _ohem_case(seed, shape, size, ignore_rows=5, sharp=2.0)
        for thresh, min_kept in ((0.6, 500), (0.9, 2000), (0.7, 64)):
            ref_loss, ref_thr, ref_kept = official_ohem_loss(logits, label, thresh, min_kept)
            loss, stats = SegmentationLoss(shape[1], ohem=True, ohem_thresh=thresh, ohem_min_kept=min_kept)(
                jt.array(logits), jt.array(label))
            np.testing.assert_allclose(stats["ohem_threshold"], ref_thr, rtol=1e-5, atol=1e-6)
            assert stats["ohem_kept"] == ref_kept
            np.testing.assert_allclose(float(loss.item()), ref_loss, rtol=1e-5)


def test_ohem_applies_to_the_main_head_only():
    logits, label = _ohem_case(4)
    aux = np.random.RandomState(5).randn(*logits.shape).astype(np.float32)
    crit = SegmentationLoss(5, ohem=True, ohem_thresh=0.7, ohem_min_kept=1000)
    loss, stats = crit((jt.array(logits), jt.array(aux)), jt.array(label))
    ref_main, _, _ = official_ohem_loss(logits, label, 0.7, 1000)
    np.testing.assert_allclose(stats["loss_main"], ref_main, rtol=1e-5)
    np.testing.assert_allclose(stats["loss_aux"], plain_ce(aux, label), rtol=1e-5)
    np.testing.assert_allclose(float(loss.item()), ref_main + 0.4 * plain_ce(aux, label), rtol=1e-5)
