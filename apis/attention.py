"""visualize_attention.py's run: for chosen pixels, the criss-cross attention after each pass, over the image."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from apis.model_files import load_model_from_options
from apis.predict import find_images
from datasets.base import read_image
from engine.launch import set_device
from evaluation.inference import preprocess
from utils.fileio import check_output_dir, check_output_file
from visualization.attention import composed_attention, feature_pixel, render_panels

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
    written = 0
    for path, stem in images:
        image = read_image(path)
        chw = preprocess(image, model.input_norm, info.preset, options.get("test_size"))
        with jt.no_grad():
            maps = [m.numpy()[0] for m in model.attention_maps(jt.array(chw[None]))]
        h, w = maps[0].shape[1:]
        for pixel in pixels:
            px, py = pixel if pixel is not None else ((image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2)
            fy, fx = feature_pixel(px, py, image.shape[:2], (h, w))
            composed = composed_attention(maps, fy, fx)
            canvas = render_panels(image, composed, (int(px), int(py)), alpha, power)
            out = output if single_file else os.path.join(output, f"{stem}_attention_x{int(px)}_y{int(py)}.png")
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            Image.fromarray(canvas).save(out)
            if options.get("save_npy"):
                np.save(os.path.splitext(out)[0] + ".npy", np.stack(composed).astype(np.float32))
            print(f"{out}: pixel ({int(px)}, {int(py)}) -> feature cell ({fx}, {fy}) of {w}x{h}")
            written += 1
    print(f"wrote {written} attention figure(s)")
    return 0
