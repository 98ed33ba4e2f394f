"""Class indices as colours: the palette table, colourised and palette PNGs, overlays."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from datasets.presets import voc_palette

__all__ = ["palette_table", "colorize", "save_label_png", "save_rgb", "overlay"]


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


def save_rgb(path: str, rgb: np.ndarray) -> None:
    """An HxWx3 uint8 image as a PNG (its folder created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path)


def overlay(image_rgb: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours``, uint8."""
    out = (1.0 - alpha) * image_rgb.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
