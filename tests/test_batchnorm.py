"""The fused CPU BatchNorm (+ residual + activation) against a float64 numpy reference and Jittor's own."""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

from models.layers import BatchNorm, BNAct
from models.ops.batchnorm import batch_norm_train

EPS = 1e-5


def reference(x, w, b, residual=None, activation=None, slope=0.01):
    """Training-mode BatchNorm (biased variance) + residual + activation, and its backward, in float64."""
    x = x.astype(np.float64)
    axes = (0, 2, 3)
    mean = x.mean(axes, keepdims=True)
    var = x.var(axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + EPS)
    z = xhat * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1) + (0 if residual is None else residual)
    if activation == "relu":
        y, dact = np.maximum(z, 0), (z > 0).astype(np.float64)
    elif activation == "leaky_relu":
        y, dact = np.where(z > 0, z, z * slope), np.where(z > 0, 1.0, slope)
    else:
        y, dact = z, np.ones_like(z)

    def backward(dy):
        g = dy * dact
        dw = (g * xhat).sum(axes)
        db = g.sum(axes)
        k = x.shape[0] * x.shape[2] * x.shape[3]
        gw = g * w.reshape(1, -1, 1, 1)
        dx = (gw - gw.mean(axes, keepdims=True) - xhat * (gw * xhat).mean(axes, keepdims=True)) / np.sqrt(var + EPS)
        return dx, dw, db, g
    return y, mean.ravel(), var.ravel(), backward


@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("with_residual", [False, True])
def test_forward_and_backward_match_float64(activation, with_residual):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (3, 5, 7, 9)).astype(np.float32)   # a mean far from 0: the variance is not E[x^2]
    w = rng.normal(1.0, 0.5, 5).astype(np.float32)
    b = rng.normal(0.0, 0.5, 5).astype(np.float32)
    res = rng.normal(size=x.shape).astype(np.float32) if with_residual else None
    dy = rng.normal(size=x.shape).astype(np.float32)
    y_ref, mean_ref, var_ref, backward = reference(x, w, b, res, activation)
    dx_ref, dw_ref, db_ref, dres_ref = backward(dy.astype(np.float64))

    jx, jw, jb = jt.array(x), jt.array(w), jt.array(b)
    jres = None if res is None else jt.array(res)
    y, mean, var = batch_norm_train(jx, jw, jb, EPS, activation, 0.01, jres)
    wrt = [jx, jw, jb] + ([jres] if jres is not None else [])
    grads = jt.grad((y * jt.array(dy)).sum(), wrt)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), mean_ref, rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), var_ref, rtol=1e-5)
    for got, want, name in zip(grads, (dx_ref, dw_ref, db_ref, dres_ref), ("x", "weight", "bias", "residual")):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_gradient_matches_finite_differences_in_float64(float64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 5))
    w = jt.array(rng.normal(1.0, 0.3, 3).astype(np.float32))
    b = jt.array(rng.normal(size=3).astype(np.float32))
    r = rng.normal(size=x.shape)
    dy = jt.array(rng.normal(size=x.shape))

    def f(xv):
        y, _, _ = batch_norm_train(jt.array(xv), w, b, EPS, "leaky_relu", 0.1, jt.array(r))
        return float((y * dy).sum().item())
    jx = jt.array(x)
    y, _, _ = batch_norm_train(jx, w, b, EPS, "leaky_relu", 0.1, jt.array(r))
    grad = jt.grad((y * dy).sum(), jx).numpy()
    h = 1e-6
    for idx in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 3), (1, 0, 1, 0)]:
        e = np.zeros_like(x)
        e[idx] = h
        assert abs((f(x + e) - f(x - e)) / (2 * h) - grad[idx]) < 1e-6


def test_same_outputs_and_running_statistics_as_jittors_batchnorm():
    rng = np.random.default_rng(2)
    ours, theirs = BNAct(6, "relu", momentum=0.2), nn.BatchNorm(6, momentum=0.2)
    for m in (ours, theirs):
        m.weight.update(jt.array(np.linspace(0.5, 1.5, 6).astype(np.float32)))
        m.bias.update(jt.array(np.linspace(-1, 1, 6).astype(np.float32)))
    x = jt.array(rng.normal(1.0, 2.0, (4, 6, 8, 8)).astype(np.float32))
    for _ in range(2):
        y_ours, y_theirs = ours(x), nn.relu(theirs(x))
        np.testing.assert_allclose(y_ours.numpy(), y_theirs.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-5)
    assert str(ours.running_mean.dtype) == "float32"
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(x).numpy(), nn.relu(theirs(x)).numpy(), rtol=1e-6, atol=1e-6)


def test_float16_inputs_are_normalised_in_float32_and_bad_arguments_refused():
    bn = BatchNorm(4)
    y = bn(jt.array(np.random.default_rng(3).normal(size=(2, 4, 3, 3)).astype(np.float16)))
    assert str(y.dtype) == "float32"
    x = jt.zeros((2, 4, 3, 3))
    with pytest.raises(ValueError, match="activation"):
        batch_norm_train(x, bn.weight, bn.bias, activation="gelu")
    with pytest.raises(ValueError, match="residual must have the shape"):
        batch_norm_train(x, bn.weight, bn.bias, residual=jt.zeros((2, 4, 3, 2)))
    with pytest.raises(ValueError, match="activation must be one of"):
        BNAct(4, "tanh")
