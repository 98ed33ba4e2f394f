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
* ``video`` (:func:`write_video_clips`, the ``demo_video`` preset): a
  different scene for the video (TPAMI) CCNet, short sequences of shapes
  moving over a brick background in the CamVid SegNet layout plus every
  frame in ``CamVid/frames/<seq>/``. Each labelled frame has a grey noise
  rectangle over 25-40% of it while its neighbours are clean, and its label
  is the scene under the rectangle: one frame cannot tell what is hidden
  there, the frames around it can.

Run ``python -m datasets.demo --root data/demo_cityscapes`` or
``python -m datasets.demo --layout video --root data/demo_video`` (see ``--help``).
"""
from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
from PIL import Image

from .camvid import frame_name

__all__ = ["render_scene", "write_cityscapes", "write_ade20k", "write_voc", "main",
           "SKY", "BUILDING", "VEGETATION", "ROAD", "CAR", "POLE", "EGO",
           "render_video_sequence", "write_video_clips", "video_frame_name", "VIDEO_NUM_CLASSES"]

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


# --------------------------------------------------------------------------- video demo

# Classes of the video demo, in the ``demo_video`` preset's order; CamVid's void (11) is not used.
VIDEO_BACKGROUND, VIDEO_DISC, VIDEO_SQUARE, VIDEO_TRIANGLE = range(4)
VIDEO_NUM_CLASSES = 4
# Saturated base colours (RGB) of the moving shapes, far from the muted background tones.
SHAPE_COLORS = {VIDEO_DISC: (205, 55, 45), VIDEO_SQUARE: (45, 90, 210), VIDEO_TRIANGLE: (225, 195, 40)}
BACKGROUND_TONES = np.array([(112, 122, 100), (138, 128, 104), (102, 106, 118), (124, 112, 110)], np.float32)
VIDEO_SPLITS = ("train", "val", "test")


def _shape(cls: int, cy: float, cx: float, size: float, ys: np.ndarray, xs: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """(mask, shade) of one shape centred at (cy, cx): shade is the class's brightness pattern."""
    dy, dx = ys - cy, xs - cx
    if cls == VIDEO_DISC:  # disc with a darker ring
        r = np.sqrt(dy ** 2 + dx ** 2) / (size / 2)
        return r <= 1, np.where((r > 0.45) & (r < 0.7), 0.65, 1.0)
    if cls == VIDEO_SQUARE:  # square with a darker inner square
        d = np.maximum(np.abs(dy), np.abs(dx)) / (size / 2)
        return d <= 1, np.where(d < 0.45, 0.7, 1.0)
    # triangle, apex up, base 1.15x its height; the bottom quarter darker
    t = (dy + size / 2) / size  # 0 at the apex, 1 at the base
    mask = (t >= 0) & (t <= 1) & (np.abs(dx) <= t * 0.575 * size)
    return mask, np.broadcast_to(np.where(t > 0.75, 0.7, 1.0), mask.shape)


def render_video_sequence(rng: np.random.Generator, num_frames: int = 33,
                          labelled: tuple[int, ...] = (4, 12, 20, 28), height: int = 96, width: int = 128,
                          occluded_fraction: tuple[float, float] = (0.25, 0.40)
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One video: (NxHxWx3 uint8 RGB frames, NxHxW uint8 classes, NxHxW bool occluders).

    A static textured background (class 0) with 2-4 shapes (disc 1, square 2,
    triangle 3; each class has its own colour and pattern) that glide 1-2.5
    pixels per frame and bounce off the borders. Each frame in ``labelled``
    gets a grey noise rectangle over ``occluded_fraction`` of its area, placed
    so that it hides one whole shape where the shape fits inside it; the
    classes stay those of the scene underneath. The other frames are clean,
    so only the neighbouring frames tell what the rectangle hides.
    """
    h, w = height, width
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]

    # Background: bricks of a muted tone, each brick a little lighter or
    # darker, with darker joints (flat areas, so that the PNGs stay small).
    tone = BACKGROUND_TONES[rng.integers(len(BACKGROUND_TONES))] + rng.uniform(-8, 8, 3).astype(np.float32)
    bh, bw = int(rng.integers(10, 16)), int(rng.integers(18, 30))
    yy = np.arange(h)[:, None] + int(rng.integers(bh))
    row = yy // bh
    xx = np.arange(w)[None, :] + int(rng.integers(bw)) + (row % 2) * (bw // 2)  # odd rows half a brick on
    shades = rng.uniform(-16, 16, (int(row.max()) + 1, int(xx.max()) // bw + 1)).astype(np.float32)
    background = tone + shades[row, xx // bw][..., None]
    joints = (yy % bh == 0) | (xx % bw == 0)
    background = np.round(background * np.where(joints, 0.75, 1.0)[..., None])

    # Shapes: class, size, colour, start position and velocity.
    n = int(rng.integers(2, 5))
    classes = rng.integers(VIDEO_DISC, VIDEO_TRIANGLE + 1, n)
    sizes = rng.uniform(0.21, 0.29, n) * min(h, w) * np.where(classes == VIDEO_TRIANGLE, 1.2, 1.0)
    colors = [np.array(SHAPE_COLORS[int(c)], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
              for c in classes]
    half = np.stack([sizes / 2, sizes * np.where(classes == VIDEO_TRIANGLE, 0.575, 0.5)], 1)  # (n, 2) y, x
    lo, hi = half, np.array([h, w], np.float64) - half      # where the centres may go: shapes stay whole
    pos = rng.uniform(lo, hi)                               # (n, 2) centres (y, x)
    angle, speed = rng.uniform(0, 2 * np.pi, n), rng.uniform(1.0, 2.5, n)
    vel = np.stack([np.sin(angle), np.cos(angle)], 1) * speed[:, None]

    frames = np.empty((num_frames, h, w, 3), np.uint8)
    labels = np.empty((num_frames, h, w), np.uint8)
    occluders = np.zeros((num_frames, h, w), bool)
    for t in range(num_frames):
        img = background.copy()
        cls = np.full((h, w), VIDEO_BACKGROUND, np.uint8)
        boxes = []
        for k in range(n):  # later shapes are drawn on top
            mask, shade = _shape(int(classes[k]), pos[k, 0], pos[k, 1], sizes[k], ys, xs)
            img[mask] = (colors[k] * shade[..., None])[mask]
            cls[mask] = classes[k]
            my, mx = np.nonzero(mask)
            boxes.append((my.min(), my.max() + 1, mx.min(), mx.max() + 1))
        if t in labelled:
            # The occluder: a grey noise rectangle; its top-left is drawn among
            # the positions that contain the bounding box of one shape.
            area = rng.uniform(*occluded_fraction) * h * w
            aspect = rng.uniform(0.8, 1.6)  # width / height
            oh = int(min(h, round(np.sqrt(area / aspect))))
            ow = int(min(w, round(area / oh)))
            y0, y1, x0, x1 = boxes[int(rng.integers(n))]
            top = int(rng.integers(*sorted((max(0, y1 - oh), min(h - oh, y0) + 1))))
            left = int(rng.integers(*sorted((max(0, x1 - ow), min(w - ow, x0) + 1))))
            grey = rng.uniform(60, 190) + np.round(rng.normal(0, 35, (oh, ow, 1)) / 16) * 16
            img[top:top + oh, left:left + ow] = grey
            occluders[t, top:top + oh, left:left + ow] = True
        frames[t] = img.clip(0, 255).astype(np.uint8)
        labels[t] = cls
        # Move; a shape that would leave the frame bounces off the border.
        pos += vel
        for axis in (0, 1):
            below, above = pos[:, axis] < lo[:, axis], pos[:, axis] > hi[:, axis]
            pos[below, axis] = 2 * lo[below, axis] - pos[below, axis]
            pos[above, axis] = 2 * hi[above, axis] - pos[above, axis]
            vel[below | above, axis] *= -1
    return frames, labels, occluders


def video_frame_name(seq: str, frame: int) -> str:
    """File stem of frame ``frame`` of sequence ``seq``, as CamVid names them: ``Demo01_f00012``."""
    return frame_name(seq, "f", 5, frame)


def _write_png(paths: list[str], image: np.ndarray) -> None:
    """Encode ``image`` (RGB or a 2-D label) once and write the same bytes to every path."""
    # Level 3: about 2.5x smaller than OpenCV's default for these frames, still fast.
    bgr = image[..., ::-1] if image.ndim == 3 else image
    ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"cannot encode {paths[0]!r}")
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.tobytes())


def write_video_clips(root: str, num_train_seqs: int = 24, num_val_seqs: int = 8, num_test_seqs: int = 4,
                      labelled_per_seq: int = 4, label_every: int = 8, height: int = 96, width: int = 128,
                      seed: int = 0) -> dict[str, int]:
    """Write the video demo (see :func:`render_video_sequence`) in the CamVid SegNet layout with frames.

    Layout (what the CamVid clip loader reads)::

        <root>/CamVid/{train,val,test}/<seq>_f<frame:05d>.png       labelled frames (RGB, occluded)
        <root>/CamVid/{train,val,test}annot/<seq>_f<frame:05d>.png  their classes (grayscale 0..3)
        <root>/CamVid/frames/<seq>/<seq>_f<frame:05d>.png           every frame of every sequence

    Sequences are ``Demo01``, ``Demo02``, ... numbered across the splits
    (train first, then val, then test). Each has ``labelled_per_seq``
    labelled frames, ``label_every`` frames apart, with ``label_every // 2``
    clean frames before the first and after the last: a clip reaching at
    most ``label_every // 2`` frames either side of its labelled frame (the
    defaults: T = 5 with a stride of 1 or 2) stays inside its sequence and
    meets no other occluded frame. A labelled frame's file in ``frames/`` is
    the same file as in its split folder, occluder included. Each sequence comes from its own
    generator, seeded by ``(seed, split, index)``: the same files on every
    machine, and a split's sequences do not change with the other splits'
    counts. Returns the number of labelled frames per split and of all frames.
    """
    margin = label_every // 2
    labelled = tuple(margin + i * label_every for i in range(labelled_per_seq))
    num_frames = labelled[-1] + margin + 1
    base = os.path.join(root, "CamVid")
    counts = {}
    number = 0
    splits = zip(VIDEO_SPLITS, (num_train_seqs, num_val_seqs, num_test_seqs))
    for split_index, (split, num_seqs) in enumerate(splits):
        for i in range(num_seqs):
            number += 1
            seq = f"Demo{number:02d}"
            rng = np.random.default_rng([seed, split_index, i])
            frames, labels, _ = render_video_sequence(rng, num_frames, labelled, height, width)
            for t in range(num_frames):
                name = video_frame_name(seq, t) + ".png"
                paths = [os.path.join(base, "frames", seq, name)]
                if t in labelled:
                    paths.append(os.path.join(base, split, name))
                    _write_png([os.path.join(base, split + "annot", name)], labels[t])
                _write_png(paths, frames[t])
        counts[split] = num_seqs * labelled_per_seq
    counts["frames"] = number * num_frames
    return counts


WRITERS = {"cityscapes": write_cityscapes, "ade20k": write_ade20k, "voc": write_voc,
           "video": write_video_clips}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None,
                        help="output folder (default data/demo_cityscapes; data/demo_video for --layout video)")
    parser.add_argument("--layout", choices=sorted(WRITERS), default="cityscapes")
    parser.add_argument("--num-train", type=int, default=None, help="training images (video: sequences)")
    parser.add_argument("--num-val", type=int, default=None, help="validation images (video: sequences)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in (("num_train", args.num_train), ("num_val", args.num_val),
                                ("height", args.height), ("width", args.width)) if v is not None}
    if args.layout == "video":  # its counts are sequences
        kwargs = {{"num_train": "num_train_seqs", "num_val": "num_val_seqs"}.get(k, k): v for k, v in kwargs.items()}
    root = args.root or ("data/demo_video" if args.layout == "video" else "data/demo_cityscapes")
    counts = WRITERS[args.layout](root, seed=args.seed, **kwargs)
    print(f"wrote {args.layout} demo dataset to {root}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
