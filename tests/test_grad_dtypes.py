"""Custom ops receive gradients in another float dtype than their output (Jittor hands them over as the
consumer made them): each op's backward must still compile and give the gradient of the plain-Jittor formula."""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

from models.ops import cca
from models.ops.batchnorm import batch_norm_train
from models.ops.conv import depthwise_conv, pointwise_conv


@pytest.fixture(autouse=True)
def keep_float64(float64):
    """float64 Vars stay float64 (conftest)."""


def grads(fn, arrays, scale_dtype):
    """d/d(arrays) of sum(fn(*arrays) * s), s a Var of ``scale_dtype`` (so the incoming gradient has that dtype)."""
    xs = [jt.array(a) for a in arrays]
    out = fn(*xs)
    s = jt.array(np.linspace(0.5, 1.5, int(np.prod(out.shape))).reshape(out.shape).astype(scale_dtype))
    return [g.numpy() for g in jt.grad((out * s).sum(), xs)]


def close(got, want, tol):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=tol, atol=tol)


rng = np.random.default_rng(0)
Q, K = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
A, V = rng.random((2, 8, 4, 5)), rng.standard_normal((2, 6, 4, 5))


@pytest.mark.parametrize("name,kernel,reference,arrays", [
    ("ca_weight", cca.ca_weight, lambda q, k: cca.ca_weight(q, k, impl="reference"), (Q, K)),
    ("ca_map", cca.ca_map, lambda a, v: cca.ca_map(a, v, impl="reference"), (A, V)),
    ("position_softmax", cca._PositionSoftmax.apply, lambda e: nn.softmax(e, dim=1), (A,)),
])
def test_cca_ops_take_a_float32_gradient_for_a_float64_output(name, kernel, reference, arrays):
    close(grads(kernel, arrays, np.float32), grads(reference, arrays, np.float32), 1e-6)


def test_cca_ops_take_a_float64_gradient_for_a_float32_output():
    q, k = Q.astype(np.float32), K.astype(np.float32)
    close(grads(cca.ca_weight, (q, k), np.float64), grads(lambda a, b: cca.ca_weight(a, b, impl="reference"),
                                                            (q, k), np.float64), 1e-5)


def test_convolution_and_batchnorm_ops_take_a_gradient_of_another_dtype():
    x = rng.standard_normal((2, 4, 6, 7))
    w_dw, w_pw = rng.standard_normal((4, 1, 3, 3)), rng.standard_normal((5, 4, 1, 1))
    close(grads(lambda a, w: depthwise_conv(a, w, padding=1), (x, w_dw), np.float32),
          grads(lambda a, w: nn.conv2d(a, w, padding=1, groups=4), (x, w_dw), np.float32), 1e-6)
    x32, w32 = x.astype(np.float32), w_pw.astype(np.float32)  # the pointwise kernel is float32 only
    close(grads(pointwise_conv, (x32, w32), np.float64), grads(nn.conv2d, (x32, w32), np.float64), 1e-4)
    gamma, beta = rng.random(4) + 0.5, rng.standard_normal(4)

    def reference_bn(a, g, b):
        mean = a.mean(dims=(0, 2, 3), keepdims=True)
        var = ((a - mean) ** 2).mean(dims=(0, 2, 3), keepdims=True)
        return nn.relu((a - mean) / jt.sqrt(var + 1e-5) * g.reshape(1, 4, 1, 1) + b.reshape(1, 4, 1, 1))
    close(grads(lambda a, g, b: batch_norm_train(a, g, b, activation="relu")[0], (x, gamma, beta), np.float32),
          grads(reference_bn, (x, gamma, beta), np.float32), 1e-6)


def test_float16_attention_gradient_is_computed_in_float32(monkeypatch):
    # float16 kernels exist only on CUDA: the kernels are replaced by recorders of the dtypes they get.
    calls = []

    def recorder(name):
        def run(*args):
            calls.append((name, str(args[0].dtype), str(args[1].dtype)))
            return jt.zeros((1,), dtype=args[0].dtype)
        return run
    monkeypatch.setattr(cca, "_weight", recorder("weight"))
    monkeypatch.setattr(cca, "_map", recorder("map"))
    op = cca._CAMap()
    op.save(jt.ones((1, 3, 2, 2)).float16(), jt.ones((1, 2, 2, 2)).float16())
    d_attention, d_value = op.grad(jt.ones((1, 2, 2, 2)))       # a float32 gradient for the float16 output
    # dA = sum over channels of grad * V: float32 (float16 overflows past 65504); dV stays float16 (|A| <= 1)
    assert calls == [("weight", "float32", "float32"), ("map", "float16", "float16")]
    assert str(d_attention.dtype) == "float32" and str(d_value.dtype) == "float16"
