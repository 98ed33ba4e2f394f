"""Where a pixel gathers its context from: criss-cross attention after each recurrence.

For a chosen pixel p, the map after pass r is the weight with which every
pixel s contributes to p's output after r criss-cross passes, the attention
being composed through the passes as in the paper's figure::

    after R=1:  M1[s] = A1[p, s]                        (p's row and column)
    after R=2:  M2[s] = sum_u A2[p, u] * A1[u, s]       (u on p's cross, s on u's cross: every pixel)

where ``A_r[u, s]`` is the softmax attention of pass r (pixel u attending to
pixel s on its criss-cross, ``model.attention_maps``). In matrix form
``M_r = e_p^T A_r A_(r-1) ... A_1``: each map sums to 1. Value convolutions,
``gamma`` and the residual connections are not part of it: it shows the
attention alone, as the paper does.

The output PNG has one panel per pass (the map drawn as a heat map over the
image, normalised to its own maximum, the pixel marked) after the image:

    python visualize_attention.py work_dirs/demo image.png --pixel 60 100 -o attention.png
    python visualize_attention.py work_dirs/demo image.png --pixel 60 100 --power 0.5   # small weights visible
    python visualize_attention.py model.pkl --model ccnet_resnet101 --dataset cityscapes img1.png img2.png \\
        --pixel 1000 400 --pixel 300 700 -o attention_maps/

Checkpoints, flags and input preprocessing are those of ``predict.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jittor_env  # noqa: E402,F401  (before jittor)

from predict import PredictError, find_images, load_model, preprocess, read_image  # noqa: E402

__all__ = ["propagate", "composed_attention", "criss_cross_matrix", "feature_pixel", "heat_overlay",
           "render_panels", "main"]


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
        raise PredictError(f"--pixel {x:g} {y:g} is outside the {W}x{H} (width x height) image")
    return min(int(y * h / H), h - 1), min(int(x * w / W), w - 1)


# --------------------------------------------------------------------------- drawing

def heat_overlay(image_rgb: np.ndarray, amap: np.ndarray, alpha: float = 0.6,
                 pixel: Optional[tuple[int, int]] = None, power: float = 1.0) -> np.ndarray:
    """``amap`` (any size) as a JET heat map over the image, (x, y) ``pixel`` marked.

    The map is divided by its maximum and raised to ``power`` (display only:
    below 1 it brings out small weights).
    """
    import cv2  # noqa: PLC0415
    H, W = image_rgb.shape[:2]
    peak = float(amap.max())
    norm = (amap / peak if peak > 0 else amap) ** power
    heat = cv2.resize(norm.astype(np.float32), (W, H), interpolation=cv2.INTER_NEAREST)
    heat = cv2.applyColorMap(np.clip(heat * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    out = np.clip((1 - alpha) * image_rgb + alpha * heat + 0.5, 0, 255).astype(np.uint8)
    if pixel is not None:
        _mark(out, pixel)
    return out


def _mark(image: np.ndarray, pixel: tuple[int, int]) -> None:
    import cv2  # noqa: PLC0415
    r = max(3, min(image.shape[:2]) // 40)
    cv2.circle(image, (int(pixel[0]), int(pixel[1])), r + 1, (0, 0, 0), 2)
    cv2.circle(image, (int(pixel[0]), int(pixel[1])), r, (255, 255, 255), 1)


def render_panels(image_rgb: np.ndarray, composed: Sequence[np.ndarray], pixel: tuple[int, int],
                  alpha: float = 0.6, power: float = 1.0) -> np.ndarray:
    """Image | after R=1 | after R=2 | ..., side by side with a caption strip, uint8 RGB."""
    import cv2  # noqa: PLC0415
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


# --------------------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="train.py checkpoint (or its run folder) or a converted weights file")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders")
    parser.add_argument("--pixel", type=float, nargs=2, action="append", metavar=("X", "Y"),
                        help="image pixel to show, column then row (repeatable; default: the centre)")
    parser.add_argument("-o", "--output", default="attention",
                        help="output folder, or a .png file for one image and one pixel (default: attention)")
    parser.add_argument("--model", help="model preset (default: the checkpoint's)")
    parser.add_argument("--dataset", help="dataset preset (default: the checkpoint's)")
    parser.add_argument("--num-classes", type=int, help="default: the checkpoint's, else its classifier's")
    parser.add_argument("--recurrence", type=int, help="passes R (default: the checkpoint's, usually 2)")
    parser.add_argument("--model-opt", action="append", default=None, metavar="KEY=VALUE",
                        help="extra build_model keyword, as in evaluate.py (default: the checkpoint's)")
    parser.add_argument("--test-size", type=int, nargs=2, metavar=("LONG", "SHORT"),
                        help="keep-ratio resize before the model (default: the preset's)")
    parser.add_argument("--alpha", type=float, default=0.6, help="heat-map opacity (default 0.6)")
    parser.add_argument("--power", type=float, default=1.0,
                        help="display the maps as (map / max) ** POWER; 0.5 brings out small weights (default 1)")
    parser.add_argument("--save-npy", action="store_true", help="also save the composed maps [R, h, w] as .npy")
    parser.add_argument("--no-cuda", action="store_true", help="run on the CPU even when a GPU is present")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return _run(args)
    except PredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import jittor as jt  # noqa: PLC0415
    from engine import set_device  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415
    if args.power <= 0 or not 0 <= args.alpha <= 1:
        raise PredictError(f"--power must be positive and --alpha in [0, 1], got {args.power} and {args.alpha}")
    single_file = args.output.lower().endswith(".png")
    images = find_images(args.inputs, exclude=None if single_file else args.output)
    pixels = args.pixel or [None]
    if single_file and (len(images) > 1 or len(pixels) > 1):
        raise PredictError(f"-o {args.output} is one file, but there are {len(images)} image(s) x "
                           f"{len(pixels)} pixel(s): give a folder")
    set_device(no_cuda=args.no_cuda)
    model, info = load_model(args.checkpoint, args.model, args.dataset, args.num_classes, args.recurrence,
                             args.model_opt)
    if model.recurrence < 1:
        raise PredictError("the model runs no criss-cross attention (recurrence 0)")
    written = 0
    for path, stem in images:
        image = read_image(path)
        chw = preprocess(image, model.input_norm, info.preset, args.test_size)
        with jt.no_grad():
            maps = [m.numpy()[0] for m in model.attention_maps(jt.array(chw[None]))]
        h, w = maps[0].shape[1:]
        for pixel in pixels:
            px, py = pixel if pixel is not None else ((image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2)
            fy, fx = feature_pixel(px, py, image.shape[:2], (h, w))
            composed = composed_attention(maps, fy, fx)
            canvas = render_panels(image, composed, (int(px), int(py)), args.alpha, args.power)
            out = (args.output if single_file else
                   os.path.join(args.output, f"{stem}_attention_x{int(px)}_y{int(py)}.png"))
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            Image.fromarray(canvas).save(out)
            if args.save_npy:
                np.save(os.path.splitext(out)[0] + ".npy", np.stack(composed).astype(np.float32))
            print(f"{out}: pixel ({int(px)}, {int(py)}) -> feature cell ({fx}, {fy}) of {w}x{h}")
            written += 1
    print(f"wrote {written} attention figure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
