"""Dataset presets: classes, ignore label, crop, test mode and default schedule.

One frozen :class:`DatasetPreset` per dataset, defined once here and read by
both ``train.py`` and ``evaluate.py`` (through :func:`get_preset`).

Sources of the numbers:

* Cityscapes follows the official CCNet recipe (speedinghzl/CCNet, pytorch-1.5
  ``run_local.sh`` and README): 769x769 crops, the discrete random-scale set
  {0.7, 0.8, ..., 2.1}, mirror, batch 8, lr 1e-2, weight decay 1e-4, 60k
  iterations, poly 0.9; evaluation slides a 769 window with stride 513 over
  the full 1024x2048 image.
* ADE20K and Pascal VOC follow the mmsegmentation CCNet configs: rescale to
  (2048, 512) times a ratio in [0.5, 2.0], 512x512 crops with the 0.75
  ``cat_max_ratio`` retry, flip, photometric distortion, batch 16, lr 1e-2,
  weight decay 5e-4; whole-image evaluation with the short side at 512.
* ``demo`` is the generated dataset of :mod:`datasets.demo`.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DatasetPreset",
    "PRESETS",
    "get_preset",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "voc_palette",
]

Color = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetPreset:
    """Everything train.py and evaluate.py need to know about one dataset.

    Sizes are ``(height, width)``. ``base_size`` is the mmseg-style rescale
    target ``(long side, short side)`` applied (keeping the aspect ratio)
    before the random ratio; ``None`` means the ratio applies to the original
    size (the official CCNet behaviour). The random scale is either the
    discrete set ``scales`` or, when that is empty, uniform in ``scale_range``.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[Color, ...]
    train_split: str
    val_split: str
    crop_size: tuple[int, int]
    scale_range: tuple[float, float] | None = None
    scales: tuple[float, ...] = ()
    base_size: tuple[int, int] | None = None
    cat_max_ratio: float = 1.0
    photometric: bool = False
    ignore_index: int = 255
    # Evaluation: "whole" runs the (optionally resized) image at once, "slide"
    # runs test_crop windows every test_stride pixels (done by evaluate.py).
    test_mode: str = "whole"
    test_size: tuple[int, int] | None = None
    test_crop: tuple[int, int] | None = None
    test_stride: tuple[int, int] | None = None
    # Default schedule (SGD with momentum, poly decay).
    iters: int = 40000
    batch_size: int = 8
    lr: float = 1e-2
    weight_decay: float = 5e-4
    momentum: float = 0.9
    power: float = 0.9
    # Cityscapes-layout datasets only: keep these Cityscapes train ids,
    # renumbered 0..k-1 in this order (the demo uses 5 of the 19 classes).
    cityscapes_train_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"preset {self.name!r}: {len(self.class_names)} class names "
                             f"for num_classes={self.num_classes}")
        if len(self.palette) != self.num_classes:
            raise ValueError(f"preset {self.name!r}: {len(self.palette)} palette colours "
                             f"for num_classes={self.num_classes}")
        if not self.scales and self.scale_range is None:
            raise ValueError(f"preset {self.name!r}: give the random scales or a scale_range")
        if self.test_mode not in ("whole", "slide"):
            raise ValueError(f"preset {self.name!r}: test_mode must be 'whole' or 'slide', "
                             f"got {self.test_mode!r}")
        if self.test_mode == "slide" and (self.test_crop is None or self.test_stride is None):
            raise ValueError(f"preset {self.name!r}: test_mode='slide' needs test_crop and test_stride")


# --------------------------------------------------------------------------- classes and palettes

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)
# The official cityscapesScripts colours of the 19 train ids.
CITYSCAPES_PALETTE: tuple[Color, ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# The 150 SceneParsing (ADEChallengeData2016) classes, in label order 1..150
# (label 0, "other", is ignored), with the mmsegmentation palette.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain",
    "plant", "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house",
    "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop",
    "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent",
    "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)
ADE20K_PALETTE: tuple[Color, ...] = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51),
    (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15),
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0),
    (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255),
    (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def voc_palette(n: int = 256) -> tuple[Color, ...]:
    """The Pascal VOC colour map (bit-interleaved index -> RGB) for ``n`` indices.

    It is the palette stored in ``SegmentationClass/*.png``; index 255 (the
    object border, ignored) is (224, 224, 192).
    """
    colors = []
    for index in range(n):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


VOC_PALETTE: tuple[Color, ...] = voc_palette(21)

# The generated demo dataset (datasets/demo.py) uses these five Cityscapes
# classes; its labels are written as Cityscapes labelIds, mapped through the
# official id -> trainId table and then renumbered 0..4.
DEMO_TRAIN_IDS = (0, 2, 8, 10, 13)  # road, building, vegetation, sky, car
DEMO_CLASSES = tuple(CITYSCAPES_CLASSES[i] for i in DEMO_TRAIN_IDS)
DEMO_PALETTE = tuple(CITYSCAPES_PALETTE[i] for i in DEMO_TRAIN_IDS)


# --------------------------------------------------------------------------- presets

PRESETS: dict[str, DatasetPreset] = {
    "cityscapes": DatasetPreset(
        name="cityscapes",
        num_classes=19,
        class_names=CITYSCAPES_CLASSES,
        palette=CITYSCAPES_PALETTE,
        train_split="train",
        val_split="val",
        crop_size=(769, 769),
        scales=tuple(round(0.7 + i / 10, 1) for i in range(15)),  # official {0.7, ..., 2.1}
        base_size=None,
        test_mode="slide",
        test_size=None,  # the full 1024x2048 image
        test_crop=(769, 769),
        test_stride=(513, 513),
        iters=60000,
        batch_size=8,
        lr=1e-2,
        weight_decay=1e-4,
    ),
    "ade20k": DatasetPreset(
        name="ade20k",
        num_classes=150,
        class_names=ADE20K_CLASSES,
        palette=ADE20K_PALETTE,
        train_split="training",
        val_split="validation",
        crop_size=(512, 512),
        scale_range=(0.5, 2.0),
        base_size=(2048, 512),
        cat_max_ratio=0.75,
        photometric=True,
        test_mode="whole",
        test_size=(2048, 512),  # keep ratio: in practice the short side becomes 512
        iters=80000,
        batch_size=16,
        lr=1e-2,
        weight_decay=5e-4,
    ),
    "voc": DatasetPreset(
        name="voc",
        num_classes=21,
        class_names=VOC_CLASSES,
        palette=VOC_PALETTE,
        train_split="train_aug",
        val_split="val",
        crop_size=(512, 512),
        scale_range=(0.5, 2.0),
        base_size=(2048, 512),
        cat_max_ratio=0.75,
        photometric=True,
        test_mode="whole",
        test_size=(2048, 512),
        iters=20000,
        batch_size=16,
        lr=1e-2,
        weight_decay=5e-4,
    ),
    "demo": DatasetPreset(
        name="demo",
        num_classes=len(DEMO_TRAIN_IDS),
        class_names=DEMO_CLASSES,
        palette=DEMO_PALETTE,
        train_split="train",
        val_split="val",
        crop_size=(128, 128),
        scale_range=(0.75, 1.5),
        base_size=None,
        test_mode="whole",
        test_size=None,  # the generated 128x256 images as they are
        iters=600,
        batch_size=8,
        lr=1e-2,
        weight_decay=1e-4,
        cityscapes_train_ids=DEMO_TRAIN_IDS,
    ),
}


def get_preset(name: str) -> DatasetPreset:
    """The preset called ``name``; a ValueError lists the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset preset {name!r}; valid names: "
                         f"{', '.join(sorted(PRESETS))}") from None
