"""The CPU pointwise and depthwise convolution kernels against a float64 numpy reference and finite differences."""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

from models.ops.conv import depthwise_conv, kernel_path, pointwise_conv
from models.layers import Conv2d


@pytest.fixture(autouse=True)
def keep_float64(float64):
    """Every test here may use float64 inputs (conftest's float64 fixture)."""


def reference(x, w, b, padding, dilation, groups):
    """Stride-1 grouped convolution of x [B, C, H, W] with w [Co, C/groups, K, K] and its backward, float64."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    B, C, H, W = x.shape
    Co, Cg, K, _ = w.shape
    p, d = padding, dilation
    Ho, Wo = H + 2 * p - d * (K - 1), W + 2 * p - d * (K - 1)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    # taps[b, g, cg, u, v, i, j]: the input under tap (u, v) of output (i, j), channels split into groups
    taps = np.stack([np.stack([xp[:, :, d * u:d * u + Ho, d * v:d * v + Wo] for v in range(K)], 2) for u in range(K)], 2)
    taps = taps.reshape(B, groups, Cg, K, K, Ho, Wo)
    wg = w.reshape(groups, Co // groups, Cg, K, K)
    y = np.einsum("bgcuvij,gocuv->bgoij", taps, wg).reshape(B, Co, Ho, Wo)
    if b is not None:
        y = y + b.astype(np.float64).reshape(1, -1, 1, 1)

    def backward(dy):
        dyg = dy.reshape(B, groups, Co // groups, Ho, Wo)
        dw = np.einsum("bgoij,bgcuvij->gocuv", dyg, taps).reshape(w.shape)
        dxp = np.zeros_like(xp)
        for u in range(K):
            for v in range(K):
                contrib = np.einsum("bgoij,goc->bgcij", dyg, wg[:, :, :, u, v]).reshape(B, C, Ho, Wo)
                dxp[:, :, d * u:d * u + Ho, d * v:d * v + Wo] += contrib
        dx = dxp[:, :, p:p + H, p:p + W]
        return dx, dw, dy.sum((0, 2, 3))
    return y, backward


def run(fn, x, w, b, dy, dtype):
    xv, wv = jt.array(x.astype(dtype)), jt.array(w.astype(dtype))
    bv = None if b is None else jt.array(b.astype(dtype))
    y = fn(xv, wv, bv)
    grads = jt.grad((y * jt.array(dy.astype(dtype))).sum(), [xv, wv] + ([] if bv is None else [bv]))
    return [y.numpy()] + [g.numpy() for g in grads]


def check(got, want, tol):
    for g, r in zip(got, want):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * np.abs(r).max())


POINTWISE = [  # B, Ci, Co, H, W, bias
    (1, 5, 7, 9, 11, True),
    (2, 16, 3, 4, 33, False),
    (2, 33, 40, 13, 1, True),
]


@pytest.mark.parametrize("B,Ci,Co,H,W,bias", POINTWISE)
def test_pointwise_matches_float64(B, Ci, Co, H, W, bias):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, Ci, H, W))
    w = rng.normal(size=(Co, Ci, 1, 1))
    b = rng.normal(size=Co) if bias else None
    y_ref, backward = reference(x, w, b, 0, 1, 1)
    dy = rng.normal(size=y_ref.shape)
    dx, dw, db = backward(dy)
    got = run(pointwise_conv, x, w, b, dy, np.float32)
    check(got, [y_ref, dx, dw] + ([db] if bias else []), 1e-5)


DEPTHWISE = [  # B, C, H, W, K, padding, dilation
    (1, 3, 9, 11, 3, 1, 1),      # VAN's MLP 3x3
    (2, 4, 12, 7, 5, 2, 1),      # VAN's 5x5
    (1, 2, 23, 20, 7, 9, 3),     # VAN's dilated 7x7
    (2, 3, 6, 8, 7, 9, 3),       # the dilated kernel wider than the image
    (1, 2, 8, 9, 3, 0, 1),       # no padding: a smaller output
    (2, 2, 5, 6, 3, 2, 2),       # more padding than "same"
    (1, 3, 1, 17, 3, 1, 1),      # one row
]


@pytest.mark.parametrize("B,C,H,W,K,p,d", DEPTHWISE)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_depthwise_matches_float64(B, C, H, W, K, p, d, dtype, tol):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, C, H, W))
    w = rng.normal(size=(C, 1, K, K))
    b = rng.normal(size=C)
    y_ref, backward = reference(x, w, b, p, d, C)
    dy = rng.normal(size=y_ref.shape)
    dx, dw, db = backward(dy)
    got = run(lambda xv, wv, bv: depthwise_conv(xv, wv, bv, p, d), x, w, b, dy, dtype)
    check(got, [y_ref, dx, dw, db], tol)


def test_depthwise_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 2, 5, 6))
    w = rng.normal(size=(2, 1, 3, 3))
    dy = rng.normal(size=(2, 2, 5, 6))

    def loss(xa, wa):
        return float((depthwise_conv(jt.array(xa), jt.array(wa), None, 2, 2) * jt.array(dy)).sum())

    xv, wv = jt.array(x), jt.array(w)
    dx, dw = [g.numpy() for g in jt.grad((depthwise_conv(xv, wv, None, 2, 2) * jt.array(dy)).sum(), [xv, wv])]
    h = 1e-6
    for idx in [(0, 0, 0, 0), (1, 1, 2, 3), (0, 1, 4, 5)]:
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        assert dx[idx] == pytest.approx((loss(plus, w) - loss(minus, w)) / (2 * h), rel=1e-6, abs=1e-8)
    for idx in [(0, 0, 0, 0), (1, 0, 2, 1), (0, 0, 1, 2)]:
        plus, minus = w.copy(), w.copy()
        plus[idx] += h
        minus[idx] -= h
        assert dw[idx] == pytest.approx((loss(x, plus) - loss(x, minus)) / (2 * h), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("args,dtype,path", [
    (dict(in_channels=8, out_channels=4, kernel_size=1), "float32", "pointwise"),
    (dict(in_channels=8, out_channels=4, kernel_size=1), "float64", None),           # sgemm is float32 only
    (dict(in_channels=8, out_channels=4, kernel_size=1, stride=2), "float32", None),
    (dict(in_channels=8, out_channels=4, kernel_size=1, padding=1), "float32", None),
    (dict(in_channels=8, out_channels=4, kernel_size=3, padding=1), "float32", None),
    (dict(in_channels=8, out_channels=8, kernel_size=7, padding=9, dilation=3, groups=8), "float32", "depthwise"),
    (dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=8), "float64", "depthwise"),
    (dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, stride=2, groups=8), "float32", None),
    (dict(in_channels=8, out_channels=8, kernel_size=(3, 5), padding=1, groups=8), "float32", None),
    (dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=4), "float32", None),
    (dict(in_channels=8, out_channels=16, kernel_size=3, padding=1, groups=8), "float32", None),
])
def test_conv2d_routes_to_kernels_and_matches_jittor(args, dtype, path):
    conv = Conv2d(**args)
    x = jt.array(np.random.default_rng(3).normal(size=(2, 8, 9, 10)).astype(dtype))
    conv.weight.assign(conv.weight.cast(dtype))
    if conv.bias is not None:
        conv.bias.assign(conv.bias.cast(dtype))
    assert kernel_path(x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups) == path
    y = conv(x)
    y_jittor = nn.Conv2d.execute(conv, x)     # Jittor's own convolution, same weights
    tol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(y.numpy(), y_jittor.numpy(), rtol=tol, atol=tol)
    grads = jt.grad((y * y).sum(), [x, conv.weight])
    grads_jittor = jt.grad((y_jittor * y_jittor).sum(), [x, conv.weight])
    for g, r in zip(grads, grads_jittor):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4 if dtype == "float32" else 1e-9,
                                   atol=1e-4 * float(np.abs(r.numpy()).max()))
