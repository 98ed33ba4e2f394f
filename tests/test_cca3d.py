"""3-D (video) criss-cross attention, the CPU kernels and the plain-Jittor reference: against a float64
numpy implementation of the definition, the 2-D op at T = 1, all-equal keys, finite differences, and each
other in float32 over the kernels' tile and channel-block edges."""
import numpy as np
import pytest

import jittor as jt

from cca_oracle import np_ca_map_3d, np_ca_weight_3d, np_softmax
from models.ops.cca import ca_map, ca_weight
from models.ops.cca3d import ca_map_3d, ca_weight_3d, criss_cross_attention_3d

# [B, C, T, H, W]: T != H != W, T = 1, H = 1, W = 1, T = H = W = 1, two images, odd sizes
SHAPES = [(2, 3, 3, 4, 5), (1, 2, 1, 4, 6), (1, 3, 4, 1, 5), (1, 2, 3, 5, 1), (1, 2, 1, 1, 1), (2, 2, 5, 3, 7)]


@pytest.fixture(autouse=True)
def keep_float64(float64):
    """float64 inputs stay float64 (conftest's float64 fixture)."""


def inputs(shape, seed=0):
    B, C, T, H, W = shape
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal(shape), rng.standard_normal(shape)
    v = rng.standard_normal((B, 2 * C + 1, T, H, W))
    return q, k, v


IMPLS = ("kernel", "reference")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_the_definition(shape, impl):
    q, k, v = inputs(shape)
    e = np_ca_weight_3d(q, k)
    a = np_softmax(e, axis=1)
    np.testing.assert_allclose(ca_weight_3d(jt.array(q), jt.array(k), impl=impl).numpy(), e, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(ca_map_3d(jt.array(a), jt.array(v), impl=impl).numpy(), np_ca_map_3d(a, v),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(criss_cross_attention_3d(jt.array(q), jt.array(k), jt.array(v), impl=impl).numpy(),
                               np_ca_map_3d(a, v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_one_frame_is_the_2d_op(impl):
    q, k, v = inputs((2, 3, 1, 5, 7), seed=1)
    e3 = ca_weight_3d(jt.array(q), jt.array(k), impl=impl).numpy()[:, :, 0]
    np.testing.assert_array_equal(e3, ca_weight(jt.array(q[:, :, 0]), jt.array(k[:, :, 0]), impl=impl).numpy())
    a = np_softmax(e3, axis=1)
    out3 = ca_map_3d(jt.array(a[:, :, None]), jt.array(v), impl=impl).numpy()[:, :, 0]
    np.testing.assert_array_equal(out3, ca_map(jt.array(a), jt.array(v[:, :, 0]), impl=impl).numpy())


# float32 kernel against the reference where the kernels' tiles and blocks have edges: W past one
# vector (8/16 lanes) and not a multiple of it (the overlapping last vector), more than one block of
# 64 channels in weight and of 18 channels in map, T above the temporal tile, two clips.
@pytest.mark.parametrize("shape", [(2, 70, 5, 6, 19), (1, 20, 7, 9, 37), (1, 130, 2, 3, 16)])
def test_float32_kernel_matches_reference_forward_and_backward(shape):
    B, C, T, H, W = shape
    rng = np.random.default_rng(7)
    q, k = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((B, 2 * C, T, H, W)).astype(np.float32)
    g = rng.standard_normal(v.shape).astype(np.float32)
    results = {}
    for impl in IMPLS:
        jq, jk, jv = jt.array(q), jt.array(k), jt.array(v)
        out = criss_cross_attention_3d(jq, jk, jv, impl=impl)
        results[impl] = [out.numpy()] + [x.numpy() for x in jt.grad((out * jt.array(g)).sum(), [jq, jk, jv])]
    for got, want in zip(results["kernel"], results["reference"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("impl", IMPLS)
def test_self_counted_once(impl):
    """All keys equal: T + H + W - 2 equal energies per position, each weight exactly 1/(T+H+W-2)."""
    B, C, T, H, W = 1, 3, 3, 4, 5
    q, _, v = inputs((B, C, T, H, W), seed=2)
    k = np.broadcast_to(np.arange(1.0, C + 1)[None, :, None, None, None], (B, C, T, H, W)).copy()
    attention = jt.nn.softmax(ca_weight_3d(jt.array(q), jt.array(k), impl=impl), dim=1).numpy()
    np.testing.assert_allclose(attention, 1.0 / (T + H + W - 2), rtol=1e-12)
    out = criss_cross_attention_3d(jt.array(q), jt.array(k), jt.array(v), impl=impl).numpy()
    expected = (v.sum(4, keepdims=True) + v.sum(3, keepdims=True) + v.sum(2, keepdims=True) - 2 * v) / (T + H + W - 2)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(1, 2, 3, 2, 4), (1, 2, 2, 3, 1)])
def test_gradients_match_finite_differences(shape, impl):
    q, k, v = inputs(shape, seed=3)
    g = np.random.default_rng(4).standard_normal(v.shape)

    def loss(q_, k_, v_):
        return float((criss_cross_attention_3d(jt.array(q_), jt.array(k_), jt.array(v_), impl=impl).numpy()
                      * g).sum())

    jq, jk, jv = jt.array(q), jt.array(k), jt.array(v)
    grads = jt.grad((criss_cross_attention_3d(jq, jk, jv, impl=impl) * jt.array(g)).sum(), [jq, jk, jv])
    rng = np.random.default_rng(5)
    for which, (array, grad) in enumerate(zip((q, k, v), grads)):
        for _ in range(4):
            index = tuple(int(rng.integers(0, n)) for n in array.shape)
            plus, minus = [x.copy() for x in (q, k, v)], [x.copy() for x in (q, k, v)]
            plus[which][index] += 1e-6
            minus[which][index] -= 1e-6
            numeric = (loss(*plus) - loss(*minus)) / 2e-6
            assert grad.numpy()[index] == pytest.approx(numeric, rel=1e-5, abs=1e-7)


def test_clear_errors():
    x = jt.zeros((1, 2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"5-D \[B, C, T, H, W\]"):
        ca_weight_3d(jt.zeros((1, 2, 4, 5)), jt.zeros((1, 2, 4, 5)))
    with pytest.raises(ValueError, match="same shape"):
        ca_weight_3d(x, jt.zeros((1, 2, 3, 4, 6)))
    with pytest.raises(ValueError, match=r"T\+H\+W-2"):
        ca_map_3d(jt.zeros((1, 9, 3, 4, 5)), x)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        ca_weight_3d(x.int32(), x.int32())
    with pytest.raises(TypeError, match="CPU kernel supports float32 and float64"):
        ca_weight_3d(x.float16(), x.float16(), impl="kernel")
    with pytest.raises(ValueError, match="impl must be one of"):
        criss_cross_attention_3d(x, x, x, impl="fast")


def test_module_starts_as_identity_and_equals_the_2d_module_on_one_frame():
    from models.ccnet import CrissCrossAttention, CrissCrossAttention3D
    jt.set_global_seed(0)
    two, three = CrissCrossAttention(16, impl="reference"), CrissCrossAttention3D(16)
    three.load_state_dict(two.state_dict())  # the same parameters, so 2-D weights load unchanged
    assert set(three.state_dict()) == set(two.state_dict())
    clip = jt.array(np.random.default_rng(6).standard_normal((2, 16, 3, 5, 6)).astype(np.float32))
    np.testing.assert_array_equal(three(clip).numpy(), clip.numpy())  # gamma = 0: the identity
    two.gamma.assign(jt.array([0.7], dtype="float32"))
    three.gamma.assign(jt.array([0.7], dtype="float32"))
    frame = clip[:, :, :1]
    np.testing.assert_allclose(three(frame).numpy()[:, :, 0], two(frame[:, :, 0]).numpy(), rtol=1e-5, atol=1e-5)
    # with more frames the output differs from frame-by-frame 2-D attention: the time line takes part
    by_frame = np.stack([two(clip[:, :, t]).numpy() for t in range(3)], axis=2)
    assert np.abs(three(clip).numpy() - by_frame).max() > 1e-3
    with pytest.raises(ValueError, match=r"clip \[B, C, T, H, W\]"):
        three(clip[:, :, 0])
