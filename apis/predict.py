"""predict.py's run: segment image files and folders with a model from a file, write colourised results.

A video model (``ccnet3d_*``) segments each image from a clip: the image files
of its folder are the frames of a sequence in name order (given or not), and
an image's clip holds the frames ``--clip-stride`` apart around it
(``utils.clips``), clamped at the sequence's ends.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from apis.model_files import load_model_from_options
from cli.config import clip_settings, inference_settings
from datasets.base import DatasetError, read_image
from engine.launch import set_device
from evaluation.inference import predict_image, whole_image_problem
from utils.clips import clip_offsets, labelled_frame
from utils.fileio import check_output_dir
from utils.progress import progress_bar
from utils.sizes import pair
from visualization.palette import colorize, overlay, save_label_png, save_rgb

__all__ = ["IMAGE_EXTENSIONS", "find_images", "clip_paths", "read_frames", "run"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_GREY = np.arange(256, dtype=np.uint8)  # --save-label: the class indices themselves as grey values


def find_images(inputs: Sequence[str], exclude: Optional[str] = None) -> list[tuple[str, str]]:
    """``(path, output stem)`` for every image file given or found under a given folder.

    Folders are searched recursively (sub-paths kept in the stem), skipping
    ``exclude`` (the output folder). Files whose stems coincide (``a.png`` and
    ``a.jpg``) keep their extension in the stem (``a_png``, ``a_jpg``), so no
    output overwrites another. Raises FileNotFoundError for a missing input or
    when no image is found.
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
    return _unique_stems(found)


def _unique_stems(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The same files with stems that differ (compared case-insensitively, as some file systems do)."""
    counts: dict[str, int] = {}
    for _, stem in found:
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    out, taken = [], set()
    for path, stem in found:
        if counts[stem.lower()] > 1:
            stem = f"{stem}_{os.path.splitext(path)[1].lstrip('.')}"
        unique, n = stem, 1
        while unique.lower() in taken:
            n += 1
            unique = f"{stem}_{n}"
        taken.add(unique.lower())
        out.append((path, unique))
    return out


def clip_paths(images: Sequence[tuple[str, str]], clip_length: int, clip_stride: int = 1) -> list[list[str]]:
    """For each found image, the paths of its clip: the image files of its folder are the frames of a
    sequence in name order, and the clip holds those ``clip_offsets`` away, clamped at the ends."""
    sequences: dict[str, list[str]] = {}
    for path, _ in images:
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in sequences:
            sequences[folder] = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                                       if name.lower().endswith(IMAGE_EXTENSIONS))
    clips = []
    offsets = clip_offsets(clip_length, clip_stride)
    for path, _ in images:
        frames = sequences[os.path.dirname(os.path.abspath(path))]
        i = frames.index(os.path.abspath(path))
        clips.append([frames[min(max(i + o, 0), len(frames) - 1)] for o in offsets])
    return clips


def read_frames(paths: Sequence[str], recent: Optional[dict] = None) -> list[np.ndarray]:
    """The frames of a clip (RGB); DatasetError when they differ in size.

    ``recent`` (path -> image) holds the previous clip's frames: those read again come from it, and
    it is left holding this clip's, so that a sequence's frames are decoded once, not once per clip.
    """
    known = dict(recent or {})
    for p in paths:
        if p not in known:
            known[p] = read_image(p)
    frames = [known[p] for p in paths]
    if recent is not None:
        recent.clear()
        recent.update(zip(paths, frames))
    if len({f.shape for f in frames}) > 1:
        raise DatasetError("the frames of a clip differ in size: "
                           + ", ".join(f"{p} {f.shape[1]}x{f.shape[0]}" for p, f in zip(paths, frames)))
    return frames


def _image_size(path: str) -> Optional[tuple[int, int]]:
    """``(height, width)`` from the file's header (None if it cannot be read: reported when it is segmented)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001  (any unreadable file is reported later, with its reason)
        return None


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
    mode, crop_size, stride = inference_settings(options, preset)
    clip_length, clip_stride = clip_settings(options, info.model, model.video, info.settings)
    clips = clip_paths(images, clip_length, clip_stride) if clip_length else [[path] for path, _ in images]
    test_size = pair(options["test_size"], "--test-size") if options.get("test_size") else None
    if mode == "whole":  # every image checked before any is segmented
        for path, _ in images:
            size = test_size or (preset.test_size if preset else None) or _image_size(path)  # what is segmented
            problem = size and whole_image_problem(*size, frames=clip_length or 1)
            if problem:
                raise ValueError(f"{path}: {problem}")
    if options.get("save_label") and info.num_classes > 256:
        raise ValueError("--save-label writes 8-bit PNGs: more than 256 classes do not fit")
    print(f"{info.model} ({info.num_classes} classes, R={info.recurrence}, dataset {info.dataset or '-'}) "
          f"from {info.kind} {info.path}; {device}, {mode}"
          + (f" crop {crop_size} stride {stride}" if mode == "slide" else "")
          + (f", clips of {clip_length} frames {clip_stride} apart" if clip_length else "")
          + f"; {len(images)} image(s) -> {output_dir}", flush=True)
    palette = preset.palette if preset else None
    failed = []
    bar = progress_bar(len(images), "predict", "img") if len(images) > 1 and not options.get("no_progress") else None
    recent: dict = {}
    for (path, stem), clip in zip(images, clips):
        try:
            frames = read_frames(clip, recent)
        except (DatasetError, FileNotFoundError) as exc:
            failed.append(str(exc))
            (bar.write if bar else print)(f"skipped: {exc}", file=sys.stderr)
        else:
            image = frames[labelled_frame(clip_length)] if clip_length else frames[0]
            pred = predict_image(model, frames if clip_length else image, info.num_classes, preset, mode,
                                 test_size, crop_size, stride)
            base = os.path.join(output_dir, stem)
            colours = colorize(pred, palette)
            save_rgb(base + "_pred.png", colours)
            save_rgb(base + "_overlay.png", overlay(image, colours, alpha))
            if options.get("save_label"):
                save_label_png(pred, base + "_label.png", lut=_GREY)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    print(f"wrote {len(images) - len(failed)} prediction(s) to {output_dir}"
          + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0
