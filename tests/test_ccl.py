"""The category consistent loss (CCNet, TPAMI version) against a float64 numpy transcription of its formulas."""
import json

import numpy as np
import pytest

import jittor as jt
import train
import apis.train
from apis.model_files import load_model
from engine.checkpoint import load_checkpoint
from models import build_model
from models.losses import SegmentationLoss
from models.losses.ccl import category_consistent_loss, nearest_labels
from seg_fixtures import train_args, write_blocks_dataset

DV, DD = 0.5, 1.5


def np_ccl(features, label, num_classes, ignore=255, dv=DV, dd=DD):
    """The formulas, written out per image, class and pixel (float64); batch mean of the per-image terms."""
    B, D, h, w = features.shape
    H, W = label.shape[1:]
    rows = np.minimum((np.arange(h) * (H / h)).astype(int), H - 1)
    cols = np.minimum((np.arange(w) * (W / w)).astype(int), W - 1)
    out = np.zeros((B, 3))
    for b in range(B):
        lab = label[b][rows][:, cols]
        f = features[b].reshape(D, -1).T.astype(np.float64)     # [P, D]
        lab = lab.reshape(-1)
        classes = [c for c in range(num_classes) if ((lab == c) & (lab != ignore)).any()]
        if not classes:
            continue
        means = {c: f[lab == c].mean(0) for c in classes}
        var = 0.0
        for c in classes:
            total = 0.0
            for x in f[lab == c]:
                d = np.linalg.norm(means[c] - x)
                total += 0.0 if d <= dv else (d - dv) ** 2 if d <= dd else d - dd + (dd - dv) ** 2
            var += total / (lab == c).sum()
        dis = 0.0
        for a in classes:
            for c in classes:
                if a != c:
                    dist = np.linalg.norm(means[a] - means[c])
                    dis += (2 * dd - dist) ** 2 if dist <= 2 * dd else 0.0
        n = len(classes)
        out[b] = [var / n, dis / (n * (n - 1)) if n > 1 else 0.0, sum(np.linalg.norm(means[c]) for c in classes) / n]
    return out.mean(0)


def ours(features, label, num_classes, **kw):
    terms = category_consistent_loss(jt.array(features), jt.array(label.astype(np.int32)), num_classes, **kw)
    return np.array([float(t.item()) for t in terms])


def test_random_features_and_labels_each_term(float64):
    rng = np.random.default_rng(0)
    feats = rng.normal(scale=1.5, size=(3, 4, 5, 6))
    label = rng.integers(0, 4, (3, 10, 12))
    label[0, :3] = 255
    np.testing.assert_allclose(ours(feats, label, 4, deltas=(DV, DD)), np_ccl(feats, label, 4), rtol=1e-9, atol=1e-9)
    # other margins, and labels at the features' own size
    np.testing.assert_allclose(ours(feats, label[:, ::2, ::2], 4, deltas=(0.2, 0.7)),
                               np_ccl(feats, label[:, ::2, ::2], 4, dv=0.2, dd=0.7), rtol=1e-9, atol=1e-9)


def test_every_branch_of_the_variance_term(float64):
    """One class, pixels at distances 0.2, 1.0 and 2.5 from its mean (symmetric, so the mean is exact)."""
    mean = np.array([0.3, -0.2])
    offsets = [0.2, 1.0, 2.5]
    pixels = [mean + s * r * np.array([1.0, 0.0]) for r in offsets for s in (1, -1)]
    feats = np.array(pixels).T.reshape(1, 2, 1, 6)
    label = np.zeros((1, 1, 6), int)
    want_var = (0.0 + (1.0 - DV) ** 2 + (2.5 - DD + (DD - DV) ** 2)) * 2 / 6
    got = ours(feats, label, 3)
    np.testing.assert_allclose(got, [want_var, 0.0, np.linalg.norm(mean)], rtol=1e-9)
    np.testing.assert_allclose(got, np_ccl(feats, label, 3), rtol=1e-9)


def test_single_pixel_class_far_classes_and_nothing_valid(float64):
    # class 0: one pixel (variance 0); classes 0 and 1 farther apart than 2 * delta_d: no distance term
    feats = np.zeros((1, 2, 1, 3))
    feats[0, :, 0, 0] = [0.0, 0.0]
    feats[0, :, 0, 1:] = [[5.0, 5.0], [0.1, -0.1]]
    label = np.array([[[0, 1, 1]]])
    got = ours(feats, label, 2)
    assert got[0] == pytest.approx(0.5 * 0.0 + 0.5 * 0.0) and got[1] == 0.0
    np.testing.assert_allclose(got, np_ccl(feats, label, 2), rtol=1e-9, atol=1e-12)
    # closer than 2 * delta_d: a distance term
    feats[0, 0, 0, 1:] = [1.0, 1.0]
    assert ours(feats, label, 2)[1] == pytest.approx((2 * DD - 1.0) ** 2)
    # every pixel ignored: 0, not NaN, and a zero (finite) gradient
    x = jt.array(np.random.default_rng(1).normal(size=(2, 3, 4, 4)))
    y = jt.array(np.full((2, 4, 4), 255, np.int32))
    terms = category_consistent_loss(x, y, 5)
    assert [float(t.item()) for t in terms] == [0.0, 0.0, 0.0]
    grad = jt.grad(terms[0] + terms[1] + terms[2], x).numpy()
    assert np.isfinite(grad).all() and (grad == 0).all()


def test_gradients_match_finite_differences(float64):
    rng = np.random.default_rng(2)
    feats = rng.normal(scale=1.2, size=(2, 3, 3, 4))
    label = rng.integers(0, 3, (2, 3, 4))
    label[1, 0, :2] = 255
    weights = np.array([1.0, 0.7, 0.3])

    def total(f):
        return float(weights @ np_ccl(f, label, 3))

    x = jt.array(feats)
    terms = category_consistent_loss(x, jt.array(label.astype(np.int32)), 3)
    grad = jt.grad(sum(w * t for w, t in zip(weights, terms)), x).numpy()
    fd = np.zeros_like(feats)
    eps = 1e-6
    for idx in np.ndindex(feats.shape):
        up, down = feats.copy(), feats.copy()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (total(up) - total(down)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_nearest_labels():
    label = jt.array(np.arange(6 * 8).reshape(1, 6, 8).astype(np.int32))
    small = nearest_labels(label, (3, 2)).numpy()
    np.testing.assert_array_equal(small[0], np.arange(48).reshape(6, 8)[[0, 2, 4]][:, [0, 4]])


def test_segmentation_loss_adds_the_weighted_terms():
    rng = np.random.default_rng(3)
    main = jt.array(rng.normal(size=(2, 4, 5, 6)).astype(np.float32))
    feat = jt.array(rng.normal(size=(2, 3, 5, 6)).astype(np.float32))
    label = jt.array(rng.integers(0, 4, (2, 10, 12)).astype(np.int32))
    plain, parts0 = SegmentationLoss(4, aux_weight=0.0)((main, None), label)
    loss, parts = SegmentationLoss(4, aux_weight=0.0, ccl=True, ccl_weights=(1.0, 2.0, 0.5))((main, None, feat), label)
    extra = parts["loss_ccl_var"] + 2.0 * parts["loss_ccl_dis"] + 0.5 * parts["loss_ccl_reg"]
    assert float(loss.item()) == pytest.approx(float(plain.item()) + extra, rel=1e-5)
    assert parts["loss"] == pytest.approx(parts0["loss"] + extra, rel=1e-5)
    with pytest.raises(ValueError, match="ccl_dim"):
        SegmentationLoss(4, ccl=True)((main, None), label)


def test_training_with_ccl_lowers_the_loss_logs_each_term_and_evaluates(tmp_path):
    data = write_blocks_dataset(str(tmp_path / "data"), num_train=4, num_val=2)
    out = tmp_path / "run"
    args = train_args(data, out, "--iters", 8, "-b", 4, "--crop-size", 32, 64, "--no-random-scale",
                      "--no-random-mirror", "--model-opt", "dropout=0", "--ccl", "--ccl-dim", 8, "--lr", 0.02)
    apis.train.run(train.options_from_args(train.get_args_parser().parse_args([str(a) for a in args])))
    rows = [json.loads(x) for x in open(out / "log.jsonl") if "loss" in json.loads(x)]
    for key in ("loss_ccl_var", "loss_ccl_dis", "loss_ccl_reg"):
        assert all(key in r and np.isfinite(r[key]) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]  # the same batch every step: SGD lowers it
    ck = load_checkpoint(str(out / "checkpoint_last.pkl"))
    assert ck["config"]["model_opts"]["ccl_dim"] == 8 and ck["model"]["head_ccl.weight"].shape[0] == 8
    net, _ = load_model(str(out))                      # with the projection (as trained)
    opts = {k: v for k, v in ck["config"]["model_opts"].items() if k != "ccl_dim"}
    plain, _ = load_model(str(out), model_opts=opts)   # and without it
    assert net.head_ccl is not None and plain.head_ccl is None
    x = jt.array(np.random.default_rng(0).normal(size=(1, 3, 32, 64)).astype(np.float32))
    with jt.no_grad():
        np.testing.assert_allclose(net(x).numpy(), plain(x).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="ccl_dim must be a positive"):
        build_model("ccnet_demo", 5, ccl_dim=0)
