"""A small generated street-scene dataset, written in real dataset layouts.

Each image is a synthetic street scene: sky on top, buildings with window
grids, trees, a road and cars, plus thin poles and a dark ego-vehicle strip at
the bottom. Each class has its own colour *and* texture (smooth gradient sky,
window grid on buildings, mottled green foliage, fine-grain grey road, striped
warm-coloured cars with black wheels), so a small CNN can learn it from local
appearance. Everything is drawn from a fixed seed, so the dataset is the same
on every machine.

Layouts:

* ``cityscapes`` (the demo default): ``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png``
  and ``gtFine/.../*_gtFine_labelIds.png`` with real Cityscapes label *ids*
  (road 7, building 11, vegetation 21, sky 23, car 26, pole 17, ego vehicle 1),
  plus official-style ``train.lst``/``val.lst``. Loading goes through the
  official id -> trainId table; the ``demo`` preset then keeps the five train
  ids present (road, building, vegetation, sky, car) as classes 0..4, and
  poles and the ego vehicle become ignore (255).
* ``ade20k``: ``ADEChallengeData2016`` with ADE class numbers (0 = other).
* ``voc``: ``VOCdevkit/VOC2012`` with palette PNGs, a 255 border around
  objects, ImageSets lists, and ``SegmentationClassAug`` + ``train_aug.txt``.

Run ``python -m datasets.demo --root data/demo_cityscapes`` (see ``--help``).
"""
from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
from PIL import Image

__all__ = ["render_scene", "write_cityscapes", "write_ade20k", "write_voc", "main",
           "SKY", "BUILDING", "VEGETATION", "ROAD", "CAR", "POLE", "EGO"]

# Abstract scene classes drawn by render_scene; each layout maps them to its ids.
SKY, BUILDING, VEGETATION, ROAD, CAR, POLE, EGO = range(7)

CITYSCAPES_IDS = {SKY: 23, BUILDING: 11, VEGETATION: 21, ROAD: 7, CAR: 26, POLE: 17, EGO: 1}
ADE20K_IDS = {SKY: 3, BUILDING: 2, VEGETATION: 5, ROAD: 7, CAR: 21, POLE: 94, EGO: 0}
VOC_IDS = {SKY: 0, BUILDING: 0, VEGETATION: 0, ROAD: 0, CAR: 7, POLE: 0, EGO: 0}

TRAIN_CITIES = ("aachen", "bremen", "zurich")
VAL_CITIES = ("frankfurt", "lindau")
CAR_COLORS = np.array([(200, 35, 30), (225, 120, 20), (215, 190, 30), (190, 30, 140)], np.float32)


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] with blobs about ``cell`` pixels wide."""
    coarse = rng.uniform(-1, 1, size=(h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def render_scene(rng: np.random.Generator, height: int = 128, width: int = 256
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (HxWx3 uint8 RGB image, HxW uint8 map of the abstract classes above)."""
    h, w = height, width
    img = np.zeros((h, w, 3), np.float32)
    cls = np.zeros((h, w), np.uint8)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]

    # Sky: smooth vertical gradient, light blue, very little noise.
    horizon = int(h * rng.uniform(0.45, 0.6))
    t = (ys / max(horizon, 1)).clip(0, 1)[..., None]
    top = np.array([70, 120, 200], np.float32) + rng.uniform(-10, 10, 3)
    bottom = np.array([170, 200, 235], np.float32) + rng.uniform(-10, 10, 3)
    img[:] = top * (1 - t) + bottom * t
    cls[:] = SKY

    # Buildings: brick-coloured blocks with a grid of dark windows.
    x = int(rng.integers(-20, 10))
    while x < w:
        bw = int(rng.integers(w // 8, w // 3))
        top_y = int(rng.integers(h // 10, max(h // 10 + 1, horizon - h // 10)))
        base = np.array([150, 95, 75], np.float32) + rng.uniform(-20, 20, 3)
        x0, x1 = max(x, 0), min(x + bw, w)
        if x1 > x0:
            block = np.broadcast_to(base, (horizon - top_y, x1 - x0, 3)).copy()
            by, bx = np.mgrid[top_y:horizon, x0:x1]
            pitch = int(rng.integers(6, 9))
            windows = ((by - top_y) % pitch >= 2) & ((by - top_y) % pitch < pitch - 1) & \
                      ((bx - x) % pitch >= 2) & ((bx - x) % pitch < pitch - 2)
            block[windows] = np.array([45, 50, 60], np.float32) + rng.uniform(-8, 8)
            img[top_y:horizon, x0:x1] = block
            cls[top_y:horizon, x0:x1] = BUILDING
        x += bw + int(rng.integers(0, w // 10))

    # Road: grey with fine grain, from the horizon down.
    road = np.array([105, 105, 110], np.float32) + rng.uniform(-10, 10)
    img[horizon:] = road + rng.normal(0, 7, (h - horizon, w, 1)).astype(np.float32)
    cls[horizon:] = ROAD

    # Trees: mottled green blobs around the horizon.
    foliage = _noise(rng, h, w, 4)[..., None]
    for _ in range(int(rng.integers(1, 4))):
        cy = horizon - int(rng.integers(0, h // 5))
        cx = int(rng.integers(0, w))
        ry, rx = int(rng.integers(h // 10, h // 5)), int(rng.integers(w // 16, w // 7))
        mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        green = np.array([60, 130, 40], np.float32) + foliage * np.array([25, 45, 20], np.float32)
        img[mask] = green[mask]
        cls[mask] = VEGETATION

    # Poles: thin grey bars (a class the demo does not train on: ignored).
    for _ in range(int(rng.integers(0, 3))):
        px = int(rng.integers(0, w - 3))
        py = int(rng.integers(h // 8, horizon))
        img[py:horizon + h // 10, px:px + 2] = 160
        cls[py:horizon + h // 10, px:px + 2] = POLE

    # Cars: warm-coloured striped bodies with black wheels, on the road.
    for _ in range(int(rng.integers(1, 4))):
        ch = int(rng.integers(h // 10, h // 5))
        cw = int(ch * rng.uniform(1.8, 2.6))
        cy1 = int(rng.integers(horizon + ch // 2, h - h // 12))
        cx0 = int(rng.integers(-cw // 3, w - cw // 2))
        y0, x0, x1 = max(cy1 - ch, 0), max(cx0, 0), min(cx0 + cw, w)
        if x1 <= x0:
            continue
        color = CAR_COLORS[rng.integers(len(CAR_COLORS))] + rng.uniform(-15, 15, 3)
        stripes = (((ys[y0:cy1] - y0) // 3) % 2 == 0).astype(np.float32)[..., None]
        img[y0:cy1, x0:x1] = color * (1 - 0.25 * stripes)
        cls[y0:cy1, x0:x1] = CAR
        for wx in (cx0 + cw // 5, cx0 + cw - cw // 5):
            wheel = ((ys - cy1) / (ch / 4)) ** 2 + ((xs - wx) / (ch / 4)) ** 2 <= 1
            img[wheel] = 20
            cls[wheel] = CAR

    # Ego vehicle: dark strip at the bottom (ignored).
    ego = max(2, h // 20)
    img[h - ego:] = 35
    cls[h - ego:] = EGO

    img += rng.uniform(-12, 12)  # global brightness
    return img.clip(0, 255).astype(np.uint8), cls


def _lut(ids: dict[int, int]) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    for k, v in ids.items():
        lut[k] = v
    return lut


def _save_rgb(path: str, image: np.ndarray, jpeg: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if jpeg else []
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"cannot write {path!r}")


def _save_label(path: str, label: np.ndarray, palette: list[int] | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))  # mode "L"
    if palette is not None:
        im.putpalette(palette)  # "L" -> "P", indices unchanged
    im.save(path)


def write_cityscapes(root: str, num_train: int = 150, num_val: int = 30, height: int = 128,
                     width: int = 256, seed: int = 0) -> dict[str, int]:
    """Write the demo in the Cityscapes layout with ``labelIds`` and ``{train,val}.lst``."""
    rng = np.random.default_rng(seed)
    lut = _lut(CITYSCAPES_IDS)
    counts = {}
    for split, n, cities in (("train", num_train, TRAIN_CITIES), ("val", num_val, VAL_CITIES)):
        lines = []
        for i in range(n):
            city = cities[i % len(cities)]
            stem = f"{city}_{i // len(cities):06d}_{19 + i:06d}"
            image, cls = render_scene(rng, height, width)
            img_rel = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
            lbl_rel = f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"
            _save_rgb(os.path.join(root, img_rel), image)
            _save_label(os.path.join(root, lbl_rel), lut[cls])
            lines.append(f"{img_rel} {lbl_rel}\n")
        with open(os.path.join(root, f"{split}.lst"), "w") as f:
            f.writelines(sorted(lines))  # sorted by city, like the official lists
        counts[split] = n
    return counts


def write_ade20k(root: str, num_train: int = 20, num_val: int = 10, height: int = 128,
                 width: int = 160, seed: int = 0) -> dict[str, int]:
    """Write the scenes in the ADEChallengeData2016 layout (jpg images, ADE class numbers)."""
    rng = np.random.default_rng(seed)
    lut = _lut(ADE20K_IDS)
    base = os.path.join(root, "ADEChallengeData2016")
    for split, prefix, n in (("training", "train", num_train), ("validation", "val", num_val)):
        for i in range(n):
            image, cls = render_scene(rng, height, width)
            name = f"ADE_{prefix}_{i + 1:08d}"
            _save_rgb(os.path.join(base, "images", split, name + ".jpg"), image, jpeg=True)
            _save_label(os.path.join(base, "annotations", split, name + ".png"), lut[cls])
    return {"training": num_train, "validation": num_val}


def write_voc(root: str, num_train: int = 12, num_val: int = 6, num_aug: int = 6, height: int = 120,
              width: int = 160, seed: int = 0) -> dict[str, int]:
    """Write the scenes in the VOC2012 layout: palette PNGs with a 255 object border.

    ``train_aug`` lists the train images plus ``num_aug`` extra ones, with
    grayscale labels in ``SegmentationClassAug`` (as the SBD conversion does).
    """
    from .presets import voc_palette

    rng = np.random.default_rng(seed)
    lut = _lut(VOC_IDS)
    palette = [c for rgb in voc_palette(256) for c in rgb]
    base = os.path.join(root, "VOCdevkit", "VOC2012")
    lists: dict[str, list[str]] = {"train": [], "val": [], "aug": []}
    for split, n in (("train", num_train), ("val", num_val), ("aug", num_aug)):
        for i in range(n):
            image, cls = render_scene(rng, height, width)
            label = lut[cls]
            border = cv2.dilate(label, np.ones((3, 3), np.uint8)) != cv2.erode(label, np.ones((3, 3), np.uint8))
            label[border] = 255
            year = 2007 if split != "aug" else 2008
            name = f"{year}_{len(lists['train']) + len(lists['val']) + len(lists['aug']):06d}"
            _save_rgb(os.path.join(base, "JPEGImages", name + ".jpg"), image, jpeg=True)
            if split != "aug":
                _save_label(os.path.join(base, "SegmentationClass", name + ".png"), label, palette)
            _save_label(os.path.join(base, "SegmentationClassAug", name + ".png"), label)
            lists[split].append(name)
    sets = os.path.join(base, "ImageSets", "Segmentation")
    os.makedirs(sets, exist_ok=True)
    files = {"train": lists["train"], "val": lists["val"], "trainval": lists["train"] + lists["val"],
             "train_aug": lists["train"] + lists["aug"]}
    for split, names in files.items():
        with open(os.path.join(sets, f"{split}.txt"), "w") as f:
            f.writelines(n + "\n" for n in names)
    return {k: len(v) for k, v in files.items()}


WRITERS = {"cityscapes": write_cityscapes, "ade20k": write_ade20k, "voc": write_voc}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/demo_cityscapes", help="output folder")
    parser.add_argument("--layout", choices=sorted(WRITERS), default="cityscapes")
    parser.add_argument("--num-train", type=int, default=None, help="training images")
    parser.add_argument("--num-val", type=int, default=None, help="validation images")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in (("num_train", args.num_train), ("num_val", args.num_val),
                                ("height", args.height), ("width", args.width)) if v is not None}
    counts = WRITERS[args.layout](args.root, seed=args.seed, **kwargs)
    print(f"wrote {args.layout} demo dataset to {args.root}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
