"""visualize_attention.py's run: for chosen pixels, the criss-cross attention after each pass, over the image.

A video model's figure shows the attention over every frame of the pixel's clip
(frames as predict.py finds them: the images of a folder in name order).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from apis.model_files import load_model_from_options
from apis.predict import clip_paths, find_images, read_frames
from cli.config import clip_settings
from datasets.base import read_image
from engine.launch import set_device
from evaluation.inference import preprocess
from utils.fileio import check_output_dir, check_output_file
from utils.clips import labelled_frame
from visualization.attention import (composed_attention, composed_attention_3d, feature_pixel, render_clip_panels,
                                     render_panels)

__all__ = ["run"]


def run(options: dict) -> int:
    """visualize_attention.py: a figure per image and pixel of the attention after each pass."""
    alpha = 0.6 if options.get("alpha") is None else float(options["alpha"])
    power = 1.0 if options.get("power") is None else float(options["power"])
    if power <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"--power must be positive and --alpha in [0, 1], got {power} and {alpha}")
    output = options.get("output") or "attention"
    single_file = output.lower().endswith(".png")
    images = find_images(options["inputs"], exclude=None if single_file else output)
    pixels = options.get("pixel") or [None]
    if single_file and (len(images) > 1 or len(pixels) > 1):
        raise ValueError(f"-o {output} is one file, but there are {len(images)} image(s) x "
                         f"{len(pixels)} pixel(s): give a folder")
    if single_file:
        check_output_file(output, "-o/--output")
    else:
        check_output_dir(output, "-o/--output")
    set_device(no_cuda=bool(options.get("no_cuda")))
    model, info = load_model_from_options(options)
    if model.recurrence < 1:
        raise ValueError("the model runs no criss-cross attention (recurrence 0)")
    clip_length, clip_stride = clip_settings(options, info.model, model.video, info.settings)
    clips = clip_paths(images, clip_length, clip_stride) if clip_length else [[path] for path, _ in images]
    written, recent = 0, {}
    for (path, stem), clip in zip(images, clips):
        frames = read_frames(clip, recent) if clip_length else [read_image(path)]
        labelled = labelled_frame(len(frames))
        image = frames[labelled]
        chw = np.stack([preprocess(f, model.input_norm, info.preset, options.get("test_size")) for f in frames])
        with jt.no_grad():
            maps = [m.numpy()[0] for m in model.attention_maps(jt.array(chw if clip_length else chw[0])[None])]
        h, w = maps[0].shape[-2:]
        for pixel in pixels:
            px, py = pixel if pixel is not None else ((image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2)
            fy, fx = feature_pixel(px, py, image.shape[:2], (h, w))
            if clip_length:
                composed = composed_attention_3d(maps, labelled, fy, fx)
                canvas = render_clip_panels(frames, composed, (int(px), int(py)), labelled, alpha, power)
            else:
                composed = composed_attention(maps, fy, fx)
                canvas = render_panels(image, composed, (int(px), int(py)), alpha, power)
            out = output if single_file else os.path.join(output, f"{stem}_attention_x{int(px)}_y{int(py)}.png")
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            Image.fromarray(canvas).save(out)
            if options.get("save_npy"):
                np.save(os.path.splitext(out)[0] + ".npy", np.stack(composed).astype(np.float32))
            print(f"{out}: pixel ({int(px)}, {int(py)}) -> feature cell ({fx}, {fy}) of {w}x{h}"
                  + (f", clip {os.path.basename(clip[0])} .. {os.path.basename(clip[-1])}" if clip_length else ""))
            written += 1
    print(f"wrote {written} attention figure(s)")
    return 0
