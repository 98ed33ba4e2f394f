"""Float64 numpy oracle of criss-cross attention, written from the official kernel's index formulas."""
import numpy as np


def np_ca_weight(q, k):
    B, C, H, W = q.shape
    e = np.zeros((B, H + W - 1, H, W))
    for y in range(H):
        for x in range(W):
            for i in range(W):
                e[:, i, y, x] = (q[:, :, y, x] * k[:, :, y, i]).sum(1)
            for t in range(H - 1):
                j = t if t < y else t + 1
                e[:, W + t, y, x] = (q[:, :, y, x] * k[:, :, j, x]).sum(1)
    return e


def np_ca_map(a, v):
    B, C, H, W = v.shape
    out = np.zeros_like(v)
    for y in range(H):
        for x in range(W):
            for i in range(W):
                out[:, :, y, x] += v[:, :, y, i] * a[:, i, y, x][:, None]
            for t in range(H - 1):
                j = t if t < y else t + 1
                out[:, :, y, x] += v[:, :, j, x] * a[:, W + t, y, x][:, None]
    return out


def np_softmax(e, axis):
    e = e - e.max(axis=axis, keepdims=True)
    p = np.exp(e)
    return p / p.sum(axis=axis, keepdims=True)


def np_ca_weight_grad(q, k, g):
    """d(sum(g * np_ca_weight(q, k))) / d(q, k), from the same index formulas."""
    B, C, H, W = q.shape
    dq, dk = np.zeros_like(q), np.zeros_like(k)
    for y in range(H):
        for x in range(W):
            for i in range(W):
                dq[:, :, y, x] += k[:, :, y, i] * g[:, i, y, x][:, None]
                dk[:, :, y, i] += q[:, :, y, x] * g[:, i, y, x][:, None]
            for t in range(H - 1):
                j = t if t < y else t + 1
                dq[:, :, y, x] += k[:, :, j, x] * g[:, W + t, y, x][:, None]
                dk[:, :, j, x] += q[:, :, y, x] * g[:, W + t, y, x][:, None]
    return dq, dk


def np_ca_map_grad(a, v, g):
    """d(sum(g * np_ca_map(a, v))) / d(a, v), from the same index formulas."""
    B, C, H, W = v.shape
    da, dv = np.zeros_like(a), np.zeros_like(v)
    for y in range(H):
        for x in range(W):
            for i in range(W):
                da[:, i, y, x] += (v[:, :, y, i] * g[:, :, y, x]).sum(1)
                dv[:, :, y, i] += g[:, :, y, x] * a[:, i, y, x][:, None]
            for t in range(H - 1):
                j = t if t < y else t + 1
                da[:, W + t, y, x] += (v[:, :, j, x] * g[:, :, y, x]).sum(1)
                dv[:, :, j, x] += g[:, :, y, x] * a[:, W + t, y, x][:, None]
    return da, dv
