"""Segment images with a trained (train.py) or converted CCNet.

For each image it writes, under ``--output-dir``:

* ``<name>_pred.png``: the prediction coloured with the dataset's palette;
* ``<name>_overlay.png``: that colour blended over the image (``--alpha``);
* ``<name>_label.png`` with ``--save-label``: the raw class indices (8-bit grey).

Images are given as files and/or folders (searched recursively for .png,
.jpg, .jpeg, .bmp, .tif, .tiff, .webp; the folder's sub-paths are kept).

The model comes from the checkpoint: a train.py checkpoint records the model
preset, its options, the number of classes and the dataset in its ``config``;
a whole CCNet converted by ``convert_weights.py`` records the preset, options
and classes in its ``meta`` (add ``--dataset`` for the palette); any other
weights file (``{"state_dict", "meta"}`` .pkl, a PyTorch .pth whose keys
match) needs ``--model`` and ``--dataset`` (or ``--num-classes``). Flags override the checkpoint's config. The dataset
preset gives the palette, the test resize and whole / sliding-window mode;
``--mode``, ``--test-size``, ``--crop-size`` and ``--stride`` override them.

    python predict.py work_dirs/demo data/demo_cityscapes/leftImg8bit/val -o work_dirs/demo/predict
    python predict.py ccnet_r101_cityscapes.pkl --model ccnet_resnet101 --dataset cityscapes \\
        frankfurt_000000_000294_leftImg8bit.png --mode slide --crop-size 769 --stride 513 --save-label
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jittor_env  # noqa: E402,F401  (before jittor)

__all__ = ["IMAGE_EXTENSIONS", "ModelInfo", "PredictError", "load_model", "find_images", "read_image",
           "preprocess", "predict_image", "overlay", "main"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PredictError(RuntimeError):
    """A bad input: unreadable image, unusable checkpoint, missing setting."""


@dataclass
class ModelInfo:
    """What the model was built from."""

    model: str
    num_classes: int
    dataset: Optional[str]        # preset name, None when unknown
    preset: object = None         # datasets.DatasetPreset or None
    checkpoint: str = ""          # the file read
    checkpoint_kind: str = ""     # "train.py checkpoint" or "weights file"
    recurrence: Optional[int] = None


# --------------------------------------------------------------------------- model

def _inspect(path: str) -> tuple[dict, str, Optional[int], bool, Optional[dict]]:
    """``(settings, kind, classes of the classifier, has head weights, train.py checkpoint or None)``.

    ``settings`` is a train.py checkpoint's ``config`` or a weights file's ``meta``.
    """
    from engine import CheckpointError, load_checkpoint  # noqa: PLC0415
    from models.weights import read_weights  # noqa: PLC0415
    try:
        ckpt = load_checkpoint(path)
        state, settings, kind = ckpt["model"], dict(ckpt.get("config") or {}), "train.py checkpoint"
    except CheckpointError as first:
        ckpt = None  # not a train.py checkpoint: maybe a weights file
        try:
            state, meta = read_weights(path)
        except Exception as exc:  # noqa: BLE001  (any reader error means "not a checkpoint we know")
            raise PredictError(f"cannot read {path!r} as a train.py checkpoint ({first}) "
                               f"or a weights file ({exc})") from None
        settings, kind = dict(meta or {}) if isinstance(meta, dict) else {}, "weights file"
    bias = state.get("head.bottleneck.3.bias")
    classes = int(np.asarray(bias).shape[0]) if bias is not None else None
    return settings, kind, classes, any(k.startswith("head.") for k in state), ckpt


def load_model(checkpoint: str, model: Optional[str] = None, dataset: Optional[str] = None,
               num_classes: Optional[int] = None, recurrence: Optional[int] = None,
               model_opts: Optional[Sequence[str]] = None):
    """Builds the model a checkpoint holds and loads its weights strictly (``evaluate.load_model``).

    ``checkpoint`` is a file or a train.py run folder. Settings come from the
    arguments first, then from the checkpoint's ``config`` (train.py) or
    ``meta`` (convert_weights.py); the class count, when recorded nowhere, from
    the classifier. Returns ``(model in eval mode, ModelInfo)``. Raises
    :class:`PredictError` with the reason when the file cannot be read, a
    setting is missing, or the weights do not fit (a backbone-only file, the
    wrong preset or class count).
    """
    import engine  # noqa: PLC0415
    import evaluate  # noqa: PLC0415
    from datasets import get_preset  # noqa: PLC0415

    try:
        path = engine.find_checkpoint(checkpoint)
    except engine.CheckpointError as exc:
        raise PredictError(str(exc)) from None
    settings, kind, head_classes, has_head, ckpt = _inspect(path)
    if not has_head:
        raise PredictError(f"{path!r} has no 'head.*' weights: it looks like backbone weights "
                           f"(convert_weights.py output for ImageNet), not a trained segmentation model")
    dataset = dataset or settings.get("dataset")
    preset = None
    if dataset is not None:
        try:
            preset = get_preset(dataset)
        except ValueError as exc:
            raise PredictError(str(exc)) from None
    source = "--num-classes"
    if num_classes is None:
        num_classes, source = settings.get("num_classes"), f"the {kind} of {path!r}"
    if num_classes is None:
        num_classes, source = head_classes, f"the classifier in {path!r}"
    if num_classes is None:
        raise PredictError(f"{path!r} does not say how many classes its model has; pass --num-classes")
    if preset is not None and int(num_classes) != preset.num_classes:
        raise PredictError(f"{num_classes} classes (from {source}) do not match dataset "
                           f"{preset.name!r} ({preset.num_classes} classes)")
    try:  # the preset, options and recurrence come from the config / meta there
        net, _ = evaluate.load_model(path, int(num_classes), model, recurrence, model_opts, checkpoint=ckpt)
    except (engine.CheckpointError, ValueError) as exc:
        raise PredictError(str(exc)) from None
    net.eval()
    info = ModelInfo(model=net.arch, num_classes=int(num_classes), dataset=preset.name if preset else None,
                     preset=preset, checkpoint=path, checkpoint_kind=kind, recurrence=int(net.recurrence))
    return net, info


# --------------------------------------------------------------------------- images

def find_images(inputs: Sequence[str], exclude: Optional[str] = None) -> list[tuple[str, str]]:
    """``(path, output stem)`` for every image file given or found under a given folder.

    Folders are searched recursively, skipping ``exclude`` (the output folder).
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
            raise PredictError(f"no such file or folder: {item!r}")
    if not found:
        raise PredictError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {list(inputs)}")
    return found


def read_image(path: str) -> np.ndarray:
    """An HxWx3 uint8 RGB image (grey and RGBA are converted); PredictError if unreadable."""
    import cv2  # noqa: PLC0415
    image = cv2.imread(path, cv2.IMREAD_COLOR)  # None for unreadable / non-image files
    if image is None:
        raise PredictError(f"cannot read image {path!r} (missing, truncated or not an image)")
    return np.ascontiguousarray(image[:, :, ::-1])


def preprocess(image_rgb: np.ndarray, input_norm, preset=None, test_size=None) -> np.ndarray:
    """The evaluation transform (keep-ratio resize to ``test_size`` or the preset's, normalisation): CxHxW."""
    from datasets.transforms import Compose, Normalize, Resize, ToCHW, build_eval_transform  # noqa: PLC0415
    if preset is not None:
        transform = build_eval_transform(preset, input_norm, test_size=test_size)
    else:
        transform = Compose(([Resize(test_size)] if test_size else []) + [Normalize(input_norm), ToCHW()])
    chw, _ = transform(image_rgb, None, np.random.default_rng(0))
    return chw


def predict_image(model, image_rgb: np.ndarray, num_classes: int, preset=None, mode: str = "whole",
                  test_size=None, crop_size=None, stride=None) -> np.ndarray:
    """Class indices (HxW uint8/int32) at the image's own size."""
    import jittor as jt  # noqa: PLC0415
    from engine import inference  # noqa: PLC0415
    chw = preprocess(image_rgb, model.input_norm, preset, test_size)
    with jt.no_grad():
        scores = inference(model, jt.array(chw[None]), num_classes, out_size=image_rgb.shape[:2],
                           mode=mode, crop_size=crop_size, stride=stride)
        pred = scores.argmax(dim=1)[0][0].numpy()
    return pred.astype(np.uint8 if num_classes <= 256 else np.int32)


def colour(pred: np.ndarray, palette) -> np.ndarray:
    """HxWx3 uint8 RGB colours of class indices (indices without a colour are black)."""
    lut = np.zeros((max(256, int(pred.max()) + 1), 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    return lut[pred]


def overlay(image_rgb: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours``, uint8."""
    out = (1.0 - alpha) * image_rgb.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _palette(info: ModelInfo):
    if info.preset is not None:
        return info.preset.palette
    from datasets.presets import voc_palette  # noqa: PLC0415
    return voc_palette(256)


def _write_png(path: str, array: np.ndarray, mode: str) -> None:
    from PIL import Image  # noqa: PLC0415
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


# --------------------------------------------------------------------------- command line

def _pair(values, name):
    if values is None:
        return None
    if len(values) not in (1, 2) or min(values) <= 0:
        raise PredictError(f"{name} takes one or two positive numbers, got {values}")
    return (values[0], values[0]) if len(values) == 1 else tuple(values)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="train.py checkpoint (or its run folder) or a converted weights file")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders")
    parser.add_argument("-o", "--output-dir", default="predictions", help="where to write (default: predictions)")
    parser.add_argument("--model", help="model preset (default: the checkpoint's)")
    parser.add_argument("--dataset", help="dataset preset: palette, classes, test mode (default: the checkpoint's)")
    parser.add_argument("--num-classes", type=int, help="default: the checkpoint's, else its classifier's")
    parser.add_argument("--recurrence", type=int, help="criss-cross recurrences R (default: the checkpoint's)")
    parser.add_argument("--model-opt", action="append", default=None, metavar="KEY=VALUE",
                        help="extra build_model keyword, as in evaluate.py (default: the checkpoint's); repeatable")
    parser.add_argument("--mode", choices=("whole", "slide"), help="default: the dataset preset's, else whole")
    parser.add_argument("--test-size", type=int, nargs="+", metavar="LONG SHORT",
                        help="keep-ratio resize before inference (default: the preset's)")
    parser.add_argument("--crop-size", type=int, nargs="+", metavar="H W", help="sliding window size")
    parser.add_argument("--stride", type=int, nargs="+", metavar="H W", help="sliding window stride")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours (default 0.5)")
    parser.add_argument("--save-label", action="store_true", help="also write the raw class-index PNG")
    parser.add_argument("--no-cuda", action="store_true", help="run on the CPU even when a GPU is present")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return _run(args)
    except PredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from engine import set_device  # noqa: PLC0415
    if not 0.0 <= args.alpha <= 1.0:
        raise PredictError(f"--alpha must be in [0, 1], got {args.alpha}")
    images = find_images(args.inputs, exclude=args.output_dir)
    device = set_device(no_cuda=args.no_cuda)
    model, info = load_model(args.checkpoint, args.model, args.dataset, args.num_classes, args.recurrence,
                             args.model_opt)
    preset = info.preset
    mode = args.mode or (preset.test_mode if preset else "whole")
    crop_size = _pair(args.crop_size, "--crop-size") or (preset.test_crop if preset else None)
    stride = _pair(args.stride, "--stride") or (preset.test_stride if preset else None)
    if mode == "slide" and (crop_size is None or stride is None):
        raise PredictError("--mode slide needs --crop-size and --stride (the dataset preset has none)")
    test_size = _pair(args.test_size, "--test-size")
    print(f"{info.model} ({info.num_classes} classes, R={info.recurrence}, dataset {info.dataset or '-'}) "
          f"from {info.checkpoint_kind} {info.checkpoint}; {device}, {mode}"
          + (f" crop {crop_size} stride {stride}" if mode == "slide" else "")
          + f"; {len(images)} image(s) -> {args.output_dir}", flush=True)

    palette = _palette(info)
    failed = []
    progress = None
    if len(images) > 1 and not args.no_progress:
        from tqdm import tqdm  # noqa: PLC0415
        progress = tqdm(total=len(images), desc="predict", unit="img", dynamic_ncols=True)
    for path, stem in images:
        try:
            image = read_image(path)
            pred = predict_image(model, image, info.num_classes, preset, mode, test_size, crop_size, stride)
        except PredictError as exc:
            failed.append(str(exc))
            (progress.write if progress else print)(f"skipped: {exc}", file=sys.stderr)
        else:
            base = os.path.join(args.output_dir, stem)
            colours = colour(pred, palette)
            _write_png(base + "_pred.png", colours, "RGB")
            _write_png(base + "_overlay.png", overlay(image, colours, args.alpha), "RGB")
            if args.save_label:
                if info.num_classes > 256:
                    raise PredictError("--save-label writes 8-bit PNGs: more than 256 classes do not fit")
                _write_png(base + "_label.png", pred.astype(np.uint8), "L")
        if progress:
            progress.update(1)
    if progress:
        progress.close()
    done = len(images) - len(failed)
    print(f"wrote {done} prediction(s) to {args.output_dir}" + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
