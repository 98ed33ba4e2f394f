"""Inference: whole image, sliding window, test-time augmentation, preprocessing and colourising.

* :func:`inference` -- scores for a batch: whole image or sliding windows
  (logits averaged over overlapping windows, as the official CCNet and
  mmsegmentation do), multi-scale and flip (softmax probabilities averaged
  over the views, as mmsegmentation does; the mirrored view's left/right
  classes swapped back with the preset's ``flip_pairs``);
* :func:`preprocess` / :func:`predict_image` -- one RGB image in, class
  indices at its own size out, with the dataset preset's evaluation transform;
* :func:`colorize`, :func:`save_label_png`, :func:`overlay` -- class indices
  as colours (one palette table for every output), and the input images of a
  prediction run (:func:`find_images`);
* :func:`run` -- predict.py: coloured predictions and overlays of images.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from datasets.base import DatasetError, read_image
from datasets.presets import DatasetPreset, voc_palette
from datasets.transforms import Compose, Normalize, Resize, ToCHW, build_eval_transform, pair
from engine.checkpoint import load_model
from engine.config import parse_model_opts
from engine.dist import set_device
from models.input_norm import InputNorm
from pretrained.io import check_output_dir

__all__ = ["whole_inference", "slide_inference", "flip_permutation", "inference", "preprocess", "predict_image",
           "palette_table", "colorize", "save_label_png", "overlay", "IMAGE_EXTENSIONS", "find_images",
           "load_model_from_options", "run"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------- scores

def whole_inference(model: nn.Module, image: jt.Var) -> jt.Var:
    """Logits of the whole image at the image's size."""
    return model.predict(image)


def slide_inference(model: nn.Module, image: jt.Var, num_classes: int, crop_size, stride) -> jt.Var:
    """Sliding-window logits at the image's size.

    Windows of ``crop_size=(h, w)`` start every ``stride`` pixels; the last
    window of a row or column is shifted inward to end at the border (so every
    pixel is covered), and an image smaller than the crop is one window of the
    image's own size. Each window's logits are upsampled to the window size by
    ``model.predict``; overlapping logits are summed and divided by the number
    of windows covering each pixel (official CCNet ``predict_sliding``,
    mmsegmentation ``slide_inference``).
    """
    ch, cw = pair(crop_size, "crop size")
    sh, sw = pair(stride, "stride")
    b, _, h, w = image.shape
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    logits = np.zeros((b, num_classes, h, w), dtype=np.float32)
    count = np.zeros((1, 1, h, w), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * sh + ch, h), min(c * sw + cw, w)
            y0, x0 = max(y1 - ch, 0), max(x1 - cw, 0)
            out = model.predict(image[:, :, y0:y1, x0:x1])
            logits[:, :, y0:y1, x0:x1] += out.numpy()
            count[:, :, y0:y1, x0:x1] += 1
    return jt.array(logits / count)


def _resize(x: jt.Var, size: tuple[int, int], align_corners: bool) -> jt.Var:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return nn.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def flip_permutation(num_classes: int, flip_pairs: Optional[Sequence[Sequence[int]]]) -> Optional[np.ndarray]:
    """Channel order that turns the scores of a mirrored image into those of the image; None without pairs.

    Channel ``a`` of the result is channel ``b`` of the input for each pair
    ``(a, b)`` (and the other way round); the other channels stay.
    """
    if not flip_pairs:
        return None
    perm = np.arange(num_classes)
    for two in flip_pairs:
        a, b = (int(c) for c in two)
        if a == b or not (0 <= a < num_classes and 0 <= b < num_classes) or perm[a] != a or perm[b] != b:
            raise ValueError(f"flip_pairs must be disjoint pairs of two different class ids in "
                             f"0..{num_classes - 1}, got {[tuple(p) for p in flip_pairs]}")
        perm[a], perm[b] = b, a
    return perm


def inference(model: nn.Module, image: jt.Var, num_classes: int, out_size: Optional[Sequence[int]] = None,
              mode: str = "whole", crop_size=None, stride=None,
              scales: Sequence[float] = (1.0,), flip: bool = False,
              flip_pairs: Optional[Sequence[Sequence[int]]] = None) -> jt.Var:
    """Scores ``[B, C, *out_size]`` for a batch of images, with optional test-time augmentation.

    With one scale and no flip the scores are the logits (whole image or
    sliding window); otherwise each view (scale x [flip]) gives softmax
    probabilities at ``out_size`` and the views are averaged. Images are
    rescaled bilinearly (``align_corners=False``, like OpenCV); scores are
    resized with the model's ``align_corners``. ``flip_pairs`` are classes that
    exchange under a mirror (the preset's, e.g. LIP's left/right arms): the
    mirrored view's channels of each pair are swapped back before averaging.
    """
    perm = flip_permutation(num_classes, flip_pairs)
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and (crop_size is None or stride is None):
        raise ValueError("slide inference needs crop_size and stride")
    scales = tuple(float(s) for s in scales) or (1.0,)
    if min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {scales}")
    h, w = image.shape[2:]
    out_size = (h, w) if out_size is None else tuple(int(s) for s in out_size)
    align = bool(getattr(model, "align_corners", True))
    tta = len(scales) > 1 or flip
    total = None
    for s in scales:
        size = (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5)))
        scaled = _resize(image, size, align_corners=False)
        for flipped in ([False, True] if flip else [False]):
            x = scaled[:, :, :, ::-1] if flipped else scaled
            out = (slide_inference(model, x, num_classes, crop_size, stride) if mode == "slide"
                   else whole_inference(model, x))
            if flipped:
                out = out[:, :, :, ::-1]
                if perm is not None:
                    out = out[:, jt.array(perm)]
            out = _resize(out, out_size, align)
            if tta:
                out = nn.softmax(out, dim=1)
            total = out if total is None else total + out
    n_views = len(scales) * (2 if flip else 1)
    return total / n_views if tta else total


# --------------------------------------------------------------------------- single images

def preprocess(image_rgb: np.ndarray, input_norm: InputNorm, preset: Optional[DatasetPreset] = None,
               test_size=None) -> np.ndarray:
    """The evaluation transform (keep-ratio resize to ``test_size`` or the preset's, normalisation): CxHxW."""
    if preset is not None:
        transform = build_eval_transform(preset, input_norm, test_size=test_size)
    else:
        transform = Compose(([Resize(test_size)] if test_size else []) + [Normalize(input_norm), ToCHW()])
    chw, _ = transform(image_rgb, None, np.random.default_rng(0))
    return chw


def predict_image(model: nn.Module, image_rgb: np.ndarray, num_classes: int,
                  preset: Optional[DatasetPreset] = None, mode: str = "whole", test_size=None,
                  crop_size=None, stride=None, scales: Sequence[float] = (1.0,), flip: bool = False,
                  flip_pairs: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
    """Class indices (HxW, uint8 for up to 256 classes) at the image's own size.

    ``flip_pairs`` (classes a mirror exchanges, for ``flip``) default to the
    preset's when a preset is given, else none; pass ``()`` for none.
    """
    if flip_pairs is None and preset is not None:
        flip_pairs = preset.flip_pairs
    chw = preprocess(image_rgb, model.input_norm, preset, test_size)
    with jt.no_grad():
        scores = inference(model, jt.array(chw[None]), num_classes, out_size=image_rgb.shape[:2], mode=mode,
                           crop_size=crop_size, stride=stride, scales=scales, flip=flip, flip_pairs=flip_pairs)
        pred = scores.argmax(dim=1)[0][0].numpy()
    return pred.astype(np.uint8 if num_classes <= 256 else np.int32)


# --------------------------------------------------------------------------- colours

def palette_table(palette: Optional[Sequence[Sequence[int]]]) -> np.ndarray:
    """A 256x3 uint8 colour table: the palette's colours first, black for every other index.

    ``None`` gives the Pascal VOC colour map (distinct colours for any index).
    """
    colours = voc_palette(256) if palette is None else palette
    table = np.zeros((256, 3), np.uint8)
    table[:min(len(colours), 256)] = np.asarray(colours, np.uint8)[:256]
    return table


def colorize(pred: np.ndarray, palette: Optional[Sequence[Sequence[int]]]) -> np.ndarray:
    """HxWx3 uint8 RGB colours of class indices (see :func:`palette_table`; 255 = ignore is black)."""
    pred = np.asarray(pred)
    if pred.size and (pred.min() < 0 or pred.max() > 255):
        raise ValueError(f"class indices must be in 0..255 to colourise, got [{pred.min()}, {pred.max()}]")
    return palette_table(palette)[pred]


def save_label_png(pred: np.ndarray, path: str, palette: Optional[Sequence[Sequence[int]]] = None,
                   lut: Optional[np.ndarray] = None) -> None:
    """One prediction as a PNG: palette ('P') image of the indices, or grey values ``lut[pred]`` with ``lut``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if lut is not None:
        Image.fromarray(lut[pred].astype(np.uint8), mode="L").save(path)
        return
    im = Image.fromarray(np.ascontiguousarray(pred, dtype=np.uint8), mode="P")
    im.putpalette(palette_table(palette).reshape(-1).tolist())
    im.save(path)


def overlay(image_rgb: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours``, uint8."""
    out = (1.0 - alpha) * image_rgb.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def find_images(inputs: Sequence[str], exclude: Optional[str] = None) -> list[tuple[str, str]]:
    """``(path, output stem)`` for every image file given or found under a given folder.

    Folders are searched recursively (sub-paths kept in the stem), skipping
    ``exclude`` (the output folder). Raises FileNotFoundError for a missing
    input or when no image is found.
    """
    found = []
    skip = os.path.realpath(exclude) if exclude else None
    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(folder, d)) != skip)
                for name in sorted(files):
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        path = os.path.join(folder, name)
                        found.append((path, os.path.splitext(os.path.relpath(path, item))[0]))
        elif os.path.isfile(item):
            found.append((item, os.path.splitext(os.path.basename(item))[0]))
        else:
            raise FileNotFoundError(f"no such file or folder: {item!r}")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {list(inputs)}")
    return found


# --------------------------------------------------------------------------- predict.py

def load_model_from_options(options: dict):
    """``load_model`` with the model arguments of predict.py and visualize_attention.py (``cli.add_model_args``)."""
    opts = None if options.get("model_opt") is None else parse_model_opts(options["model_opt"])
    return load_model(options["checkpoint"], model=options.get("model"), num_classes=options.get("num_classes"),
                      dataset=options.get("dataset"), recurrence=options.get("recurrence"), model_opts=opts)


def run(options: dict) -> int:
    """predict.py: segment the images of ``options["inputs"]``; returns 0, or 1 when some image failed."""
    alpha = 0.5 if options.get("alpha") is None else float(options["alpha"])
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {alpha}")
    output_dir = options.get("output_dir") or "predictions"
    images = find_images(options["inputs"], exclude=output_dir)
    check_output_dir(output_dir, "-o/--output-dir")
    device = set_device(no_cuda=bool(options.get("no_cuda")))
    model, info = load_model_from_options(options)
    preset = info.preset
    mode = options.get("mode") or (preset.test_mode if preset else "whole")
    crop_size = pair(options["crop_size"], "--crop-size") if options.get("crop_size") else (
        preset.test_crop if preset else None)
    stride = pair(options["stride"], "--stride") if options.get("stride") else (
        preset.test_stride if preset else None)
    if mode == "slide" and (crop_size is None or stride is None):
        raise ValueError("--mode slide needs --crop-size and --stride (the dataset preset has none)")
    test_size = pair(options["test_size"], "--test-size") if options.get("test_size") else None
    if options.get("save_label") and info.num_classes > 256:
        raise ValueError("--save-label writes 8-bit PNGs: more than 256 classes do not fit")
    print(f"{info.model} ({info.num_classes} classes, R={info.recurrence}, dataset {info.dataset or '-'}) "
          f"from {info.kind} {info.path}; {device}, {mode}"
          + (f" crop {crop_size} stride {stride}" if mode == "slide" else "")
          + f"; {len(images)} image(s) -> {output_dir}", flush=True)
    palette = preset.palette if preset else None
    failed = []
    bar = None
    if len(images) > 1 and not options.get("no_progress"):
        from tqdm import tqdm  # noqa: PLC0415  (only with a progress bar)
        bar = tqdm(total=len(images), desc="predict", unit="img", dynamic_ncols=True)
    for path, stem in images:
        try:
            image = read_image(path)
        except (DatasetError, FileNotFoundError) as exc:
            failed.append(str(exc))
            (bar.write if bar else print)(f"skipped: {exc}", file=sys.stderr)
        else:
            pred = predict_image(model, image, info.num_classes, preset, mode, test_size, crop_size, stride)
            base = os.path.join(output_dir, stem)
            colours = colorize(pred, palette)
            _save_rgb(base + "_pred.png", colours)
            _save_rgb(base + "_overlay.png", overlay(image, colours, alpha))
            if options.get("save_label"):
                os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
                Image.fromarray(pred.astype(np.uint8), mode="L").save(base + "_label.png")
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    print(f"wrote {len(images) - len(failed)} prediction(s) to {output_dir}"
          + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def _save_rgb(path: str, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path)
