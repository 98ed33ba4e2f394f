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


def _slots_3d(T, H, W, t, y, x):
    """The (slot, (s, j, i)) pairs of position (t, y, x): row, column without self, time line without self."""
    pairs = [(i, (t, y, i)) for i in range(W)]
    pairs += [(W + u, (t, u if u < y else u + 1, x)) for u in range(H - 1)]
    pairs += [(W + H - 1 + v, (v if v < t else v + 1, y, x)) for v in range(T - 1)]
    return pairs


def np_ca_weight_3d(q, k):
    """Energies [B, T+H+W-2, T, H, W] of the 3-D criss-cross attention, from its definition."""
    B, C, T, H, W = q.shape
    e = np.zeros((B, T + H + W - 2, T, H, W))
    for t in range(T):
        for y in range(H):
            for x in range(W):
                for slot, (s, j, i) in _slots_3d(T, H, W, t, y, x):
                    e[:, slot, t, y, x] = (q[:, :, t, y, x] * k[:, :, s, j, i]).sum(1)
    return e


def np_ca_map_3d(a, v):
    """sum over the slots of attention x value, from the definition."""
    B, C, T, H, W = v.shape
    out = np.zeros_like(v)
    for t in range(T):
        for y in range(H):
            for x in range(W):
                for slot, (s, j, i) in _slots_3d(T, H, W, t, y, x):
                    out[:, :, t, y, x] += v[:, :, s, j, i] * a[:, slot, t, y, x][:, None]
    return out


def np_ca_weight_3d_grad(q, k, g):
    """d(sum(g * np_ca_weight_3d(q, k))) / d(q, k), from the same slots."""
    B, C, T, H, W = q.shape
    dq, dk = np.zeros_like(q), np.zeros_like(k)
    for t in range(T):
        for y in range(H):
            for x in range(W):
                for slot, (s, j, i) in _slots_3d(T, H, W, t, y, x):
                    dq[:, :, t, y, x] += k[:, :, s, j, i] * g[:, slot, t, y, x][:, None]
                    dk[:, :, s, j, i] += q[:, :, t, y, x] * g[:, slot, t, y, x][:, None]
    return dq, dk


def np_ca_map_3d_grad(a, v, g):
    """d(sum(g * np_ca_map_3d(a, v))) / d(a, v), from the same slots."""
    B, C, T, H, W = v.shape
    da, dv = np.zeros_like(a), np.zeros_like(v)
    for t in range(T):
        for y in range(H):
            for x in range(W):
                for slot, (s, j, i) in _slots_3d(T, H, W, t, y, x):
                    da[:, slot, t, y, x] += (v[:, :, s, j, i] * g[:, :, t, y, x]).sum(1)
                    dv[:, :, s, j, i] += g[:, :, t, y, x] * a[:, slot, t, y, x][:, None]
    return da, dv
