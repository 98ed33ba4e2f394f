"""Inference: whole image, sliding window, test-time augmentation, and single images.

* :func:`inference` -- scores for a batch: whole image or sliding windows
  (logits averaged over overlapping windows, as the official CCNet and
  mmsegmentation do), multi-scale and flip (softmax probabilities averaged
  over the views, as mmsegmentation does; the mirrored view's left/right
  classes swapped back with the preset's ``flip_pairs``);
* :func:`preprocess` / :func:`predict_image` -- one RGB image (or a video
  model's clip of frames) in, class indices at its own size out, with the
  dataset preset's evaluation transform.

Inputs are batches of images ``[B, 3, H, W]`` or, for a video model, of clips
``[B, T, 3, H, W]``: windows, scales and flips apply to every frame alike, and
the scores are the labelled frame's.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from datasets.presets import DatasetPreset
from datasets.transforms import Compose, Normalize, Resize, ToCHW, build_eval_transform
from models.layers import resize
from utils.input_norm import InputNorm
from utils.sizes import pair

__all__ = ["MAX_WHOLE_ENERGY_BYTES", "whole_image_problem", "whole_inference", "slide_inference", "flip_permutation",
           "inference", "preprocess", "predict_image"]

#: Whole-image inference is refused when one criss-cross attention's energies (float32, at 1/8 of the
#: input) would exceed this: 4 GiB is a 5000x5000 image; a 12000x12000 photo would need 27 GB.
MAX_WHOLE_ENERGY_BYTES = 4 << 30


def whole_image_problem(height: int, width: int, limit: int = MAX_WHOLE_ENERGY_BYTES,
                        frames: int = 1) -> Optional[str]:
    """Why a ``height`` x ``width`` input (a clip of ``frames`` of them) is too large for whole-image
    inference (None when it is not)."""
    h, w = -(-height // 8), -(-width // 8)
    energies = frames * h * w * (frames + h + w - 2) * 4   # [T+H+W-2, T, H, W] float32 at output stride 8
    if energies <= limit:
        return None
    return (f"{width}x{height} is too large to segment in one piece (its attention energies alone would need "
            f"{energies / 2 ** 30:.1f} GiB, the limit is {limit / 2 ** 30:.0f} GiB): use --mode slide "
            "--crop-size 769 --stride 513, or --test-size to scale it down")


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
    b, (h, w) = image.shape[0], image.shape[-2:]
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    logits = np.zeros((b, num_classes, h, w), dtype=np.float32)
    count = np.zeros((1, 1, h, w), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * sh + ch, h), min(c * sw + cw, w)
            y0, x0 = max(y1 - ch, 0), max(x1 - cw, 0)
            out = model.predict(image[..., y0:y1, x0:x1])
            logits[:, :, y0:y1, x0:x1] += out.numpy()
            count[:, :, y0:y1, x0:x1] += 1
    return jt.array(logits / count)


def _resize_frames(image: jt.Var, size: tuple[int, int]) -> jt.Var:
    """Images ``[B, 3, H, W]`` or clips ``[B, T, 3, H, W]`` rescaled bilinearly (``align_corners=False``)."""
    if image.ndim == 4:
        return resize(image, size, align_corners=False)
    B, T = image.shape[:2]
    return resize(image.reshape(B * T, *image.shape[2:]), size, align_corners=False).reshape(B, T, -1, *size)


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
    """Scores ``[B, C, *out_size]`` for a batch of images (or clips), with optional test-time augmentation.

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
    h, w = image.shape[-2:]
    out_size = (h, w) if out_size is None else tuple(int(s) for s in out_size)
    align = bool(getattr(model, "align_corners", True))
    tta = len(scales) > 1 or flip
    total = None
    for s in scales:
        size = (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5)))
        scaled = _resize_frames(image, size)
        for flipped in ([False, True] if flip else [False]):
            x = scaled[..., ::-1] if flipped else scaled
            out = (slide_inference(model, x, num_classes, crop_size, stride) if mode == "slide"
                   else whole_inference(model, x))
            if flipped:
                out = out[:, :, :, ::-1]
                if perm is not None:
                    out = out[:, jt.array(perm)]
            out = resize(out, out_size, align)
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


def predict_image(model: nn.Module, image_rgb: Union[np.ndarray, Sequence[np.ndarray]], num_classes: int,
                  preset: Optional[DatasetPreset] = None, mode: str = "whole", test_size=None,
                  crop_size=None, stride=None, scales: Sequence[float] = (1.0,), flip: bool = False,
                  flip_pairs: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
    """Class indices (HxW, uint8 for up to 256 classes) at the image's own size.

    ``image_rgb`` is one image, or for a video model a clip: a list of frames
    of one size, the labelled one at ``utils.clips.labelled_frame(len)``.
    ``flip_pairs`` (classes a mirror exchanges, for ``flip``) default to the
    preset's when a preset is given, else none; pass ``()`` for none.
    """
    if flip_pairs is None and preset is not None:
        flip_pairs = preset.flip_pairs
    if isinstance(image_rgb, np.ndarray):
        batch, size = preprocess(image_rgb, model.input_norm, preset, test_size)[None], image_rgb.shape[:2]
    else:
        if len({frame.shape for frame in image_rgb}) != 1:
            raise ValueError(f"the frames of a clip must have one size, got {[f.shape for f in image_rgb]}")
        batch = np.stack([preprocess(frame, model.input_norm, preset, test_size) for frame in image_rgb])[None]
        size = image_rgb[0].shape[:2]
    with jt.no_grad():
        scores = inference(model, jt.array(batch), num_classes, out_size=size, mode=mode,
                           crop_size=crop_size, stride=stride, scales=scales, flip=flip, flip_pairs=flip_pairs)
        pred = scores.argmax(dim=1)[0][0].numpy()
    return pred.astype(np.uint8 if num_classes <= 256 else np.int32)
