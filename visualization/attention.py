"""Criss-cross attention maps: composing the passes and drawing them over the image.

The attention of one pass is ``[h+w-1, h, w]`` in the official layout (slot
``i < w`` of pixel (y, x) is (y, i); slot ``w + t`` is (t if t < y else t + 1,
x)). After R passes, what a pixel gathers from each pixel is the product of
the passes' sparse matrices, ``e_p^T A_R ... A_1`` (:func:`composed_attention`):
its row and column after one pass, the whole image after two.

A video model's attention is ``[T+h+w-2, T, h, w]`` (``models.ops.cca3d``):
each frame's slots as above, then the temporal line. Composed over the clip
(:func:`composed_attention_3d`) it reaches the pixel's row, column and time
line after one pass, the planes through them after two, the whole clip after
three; :func:`render_clip_panels` draws it frame by frame.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = ["propagate", "composed_attention", "criss_cross_matrix", "feature_pixel", "heat_overlay",
           "render_panels", "propagate_3d", "composed_attention_3d", "render_clip_panels"]


# --------------------------------------------------------------------------- composing the passes

def propagate(weights: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """``weights^T A``: pixel weights ``[h, w]`` carried one criss-cross pass back.

    ``attention`` is one image's ``[h+w-1, h, w]`` softmax attention in the
    official layout: slot ``i < w`` of pixel (y, x) is (y, i); slot ``w + t``
    is (t if t < y else t + 1, x). Returns ``out[s] = sum_u weights[u] A[u, s]``.
    """
    L, h, w = attention.shape
    if L != h + w - 1 or weights.shape != (h, w):
        raise ValueError(f"attention must be [h+w-1, h, w] and weights [h, w], got {attention.shape} "
                         f"and {weights.shape}")
    weights = weights.astype(np.float64)
    # row slots: out[y, i] += sum_x weights[y, x] * A[i, y, x]
    out = np.einsum("yx,iyx->yi", weights, attention[:w].astype(np.float64))
    # column slots: out[j, x] += weights[y, x] * A[w + t, y, x], j = t + (t >= y)
    col = attention[w:].astype(np.float64) * weights[None]  # [h-1, h(y), w]
    t = np.arange(h - 1)
    for y in range(h):
        out[t + (t >= y)] += col[:, y]
    return out


def composed_attention(maps: Sequence[np.ndarray], y: int, x: int) -> list[np.ndarray]:
    """Composed attention of pixel (y, x) after each pass: ``[e_p^T A_r ... A_1 for r = 1..R]``.

    ``maps`` are the R attention tensors ``[h+w-1, h, w]`` of one image,
    first pass first. Each returned map is ``[h, w]`` and sums to 1.
    """
    if not maps:
        raise ValueError("no attention maps (a model with recurrence 0 has none)")
    _, h, w = maps[0].shape
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"pixel (y={y}, x={x}) is outside the {h}x{w} feature map")
    result = []
    for r in range(len(maps)):
        weights = np.zeros((h, w))
        weights[y, x] = 1.0
        for attention in maps[r::-1]:  # pass r first (the last one applied), then back to pass 1
            weights = propagate(weights, attention)
        result.append(weights)
    return result


def propagate_3d(weights: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """``weights^T A`` for a clip: weights ``[T, h, w]`` carried one pass of 3-D attention
    ``[T+h+w-2, T, h, w]`` back (each frame's row and column slots, then the temporal line)."""
    L, T, h, w = attention.shape
    if L != T + h + w - 2 or weights.shape != (T, h, w):
        raise ValueError(f"attention must be [T+h+w-2, T, h, w] and weights [T, h, w], got {attention.shape} "
                         f"and {weights.shape}")
    out = np.stack([propagate(weights[t], attention[:h + w - 1, t]) for t in range(T)])
    # temporal slots: out[s, y, x] += weights[t, y, x] * A[h + w - 1 + v, t, y, x], s = v + (v >= t)
    line = attention[h + w - 1:].astype(np.float64) * weights[None]  # [T-1, T(t), h, w]
    v = np.arange(T - 1)
    for t in range(T):
        out[v + (v >= t)] += line[:, t]
    return out


def composed_attention_3d(maps: Sequence[np.ndarray], t: int, y: int, x: int) -> list[np.ndarray]:
    """Composed attention of position (t, y, x) of a clip after each pass, ``[T, h, w]`` each, sum 1.

    ``maps`` are the R attention tensors ``[T+h+w-2, T, h, w]`` of one clip, first pass first.
    """
    if not maps:
        raise ValueError("no attention maps (a model with recurrence 0 has none)")
    _, T, h, w = maps[0].shape
    if not (0 <= t < T and 0 <= y < h and 0 <= x < w):
        raise ValueError(f"position (t={t}, y={y}, x={x}) is outside the {T}x{h}x{w} clip of features")
    result = []
    for r in range(len(maps)):
        weights = np.zeros((T, h, w))
        weights[t, y, x] = 1.0
        for attention in maps[r::-1]:
            weights = propagate_3d(weights, attention)
        result.append(weights)
    return result


def criss_cross_matrix(attention: np.ndarray) -> np.ndarray:
    """The dense ``[h*w, h*w]`` matrix A[u, s] of one pass (for tests and small maps)."""
    L, h, w = attention.shape
    dense = np.zeros((h * w, h * w))
    for y in range(h):
        for x in range(w):
            u = y * w + x
            for i in range(w):
                dense[u, y * w + i] += attention[i, y, x]
            for t in range(h - 1):
                j = t if t < y else t + 1
                dense[u, j * w + x] += attention[w + t, y, x]
    return dense


def feature_pixel(x: float, y: float, image_size: tuple[int, int], feature_size: tuple[int, int]) -> tuple[int, int]:
    """The feature-map cell (fy, fx) that covers image pixel (x, y)."""
    (H, W), (h, w) = image_size, feature_size
    if not (0 <= x < W and 0 <= y < H):
        raise ValueError(f"--pixel {x:g} {y:g} is outside the {W}x{H} (width x height) image")
    return min(int(y * h / H), h - 1), min(int(x * w / W), w - 1)


# --------------------------------------------------------------------------- drawing

def heat_overlay(image_rgb: np.ndarray, amap: np.ndarray, alpha: float = 0.6,
                 pixel: Optional[tuple[int, int]] = None, power: float = 1.0,
                 peak: Optional[float] = None) -> np.ndarray:
    """``amap`` (any size) as a JET heat map over the image, (x, y) ``pixel`` marked.

    The map is divided by ``peak`` (default: its maximum) and raised to ``power``
    (display only: below 1 it brings out small weights).
    """
    H, W = image_rgb.shape[:2]
    peak = float(amap.max()) if peak is None else float(peak)
    norm = (amap / peak if peak > 0 else amap) ** power
    heat = cv2.resize(norm.astype(np.float32), (W, H), interpolation=cv2.INTER_NEAREST)
    heat = cv2.applyColorMap(np.clip(heat * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    out = np.clip((1 - alpha) * image_rgb + alpha * heat + 0.5, 0, 255).astype(np.uint8)
    if pixel is not None:
        _mark(out, pixel)
    return out


def _mark(image: np.ndarray, pixel: tuple[int, int]) -> None:
    r = max(3, min(image.shape[:2]) // 40)
    cv2.circle(image, (int(pixel[0]), int(pixel[1])), r + 1, (0, 0, 0), 2)
    cv2.circle(image, (int(pixel[0]), int(pixel[1])), r, (255, 255, 255), 1)


def render_panels(image_rgb: np.ndarray, composed: Sequence[np.ndarray], pixel: tuple[int, int],
                  alpha: float = 0.6, power: float = 1.0) -> np.ndarray:
    """Image | after R=1 | after R=2 | ..., side by side with a caption strip, uint8 RGB."""
    first = image_rgb.copy()
    _mark(first, pixel)
    panels = [(first, f"pixel ({pixel[0]}, {pixel[1]})")]
    scale = "" if power == 1 else f" (^{power:g})"
    panels += [(heat_overlay(image_rgb, m, alpha, pixel, power), f"after R={r}{scale}")
               for r, m in enumerate(composed, 1)]
    H, W = image_rgb.shape[:2]
    bar = 22
    gap = 4
    canvas = np.full((H + bar, len(panels) * (W + gap) - gap, 3), 255, np.uint8)
    for k, (panel, caption) in enumerate(panels):
        x0 = k * (W + gap)
        canvas[bar:, x0:x0 + W] = panel
        cv2.putText(canvas, caption, (x0 + 4, bar - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def render_clip_panels(frames: Sequence[np.ndarray], composed: Sequence[np.ndarray], pixel: tuple[int, int],
                       labelled: int, alpha: float = 0.6, power: float = 1.0) -> np.ndarray:
    """A grid, uint8 RGB: the clip's frames in the first row (the pixel marked on the labelled one),
    then one row per pass with the composed attention ``[T, h, w]`` over each frame.

    A row's maps share one scale (the pass's maximum over the clip), so the frames compare; each
    caption gives the frame's offset from the labelled frame and its share of the attention.
    """
    T = len(frames)
    H, W = frames[0].shape[:2]
    bar, gap = 22, 4
    canvas = np.full(((1 + len(composed)) * (H + bar + gap) - gap, T * (W + gap) - gap, 3), 255, np.uint8)

    def put(row: int, col: int, panel: np.ndarray, caption: str) -> None:
        y0, x0 = row * (H + bar + gap), col * (W + gap)
        canvas[y0 + bar:y0 + bar + H, x0:x0 + W] = panel
        cv2.putText(canvas, caption, (x0 + 3, y0 + bar - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)

    for k, frame in enumerate(frames):
        panel = frame.copy()
        if k == labelled:
            _mark(panel, pixel)
        put(0, k, panel, "labelled frame" if k == labelled else f"frame {k - labelled:+d}")
    scale = "" if power == 1 else f" ^{power:g}"
    for r, amap in enumerate(composed, 1):
        peak = float(amap.max())
        for k, frame in enumerate(frames):
            panel = heat_overlay(frame, amap[k], alpha, pixel if k == labelled else None, power,
                                 peak=peak if peak > 0 else 1.0)
            put(r, k, panel, f"R={r}{scale} {k - labelled:+d}: {100 * amap[k].sum():.0f}%")
    return canvas
