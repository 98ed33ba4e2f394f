"""CamVid (11 and 32 classes), LIP and the left/right flip swap, on tiny fixture trees with real file names."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import jittor as jt
from jittor import nn

from datasets import CamVid32Dataset, CamVidDataset, DatasetError, LIPDataset, build_dataset, get_preset
from datasets.presets import DatasetPreset
from datasets.transforms import RandomHorizontalFlip, build_train_transform
from evaluation.evaluator import evaluate
from evaluation.inference import inference, predict_image
from utils.input_norm import IMAGENET_RGB

H, W = 12, 16

# Written out here, independently of the code under test.
LIP_PAIRS = ((14, 15), (16, 17), (18, 19))
LIP_SWAP = {14: 15, 15: 14, 16: 17, 17: 16, 18: 19, 19: 18}

# The common CamVid class_dict.csv, spaces and all (Semantic-Segmentation-Suite / Kaggle copy).
CLASS_DICT = """name,r,g,b
Animal,64,128,64
Archway,192,0,128
Bicyclist,0,128, 192
Bridge,0, 128, 64
Building,128, 0, 0
Car,64, 0, 128
CartLuggagePram,64, 0, 192
Child,192, 128, 64
Column_Pole,192, 192, 128
Fence,64, 64, 128
LaneMkgsDriv,128, 0, 192
LaneMkgsNonDriv,192, 0, 64
Misc_Text,128, 128, 64
MotorcycleScooter,192, 0, 192
OtherMoving,128, 64, 64
ParkingBlock,64, 192, 128
Pedestrian,64, 64, 0
Road,128, 64, 128
RoadShoulder,128, 128, 192
Sidewalk,0, 0, 192
SignSymbol,192, 128, 128
Sky,128, 128, 128
SUVPickupTruck,64, 128,192
TrafficCone,0, 0, 64
TrafficLight,0, 64, 64
Train,192, 64, 128
Tree,128, 128, 0
Truck_Bus,192, 128, 192
Tunnel,64, 0, 64
VegetationMisc,192, 192, 0
Void,0, 0, 0
Wall,64, 192, 0
"""
CSV_ROWS = [(line.split(",")[0], tuple(int(v) for v in line.split(",")[1:]))
            for line in CLASS_DICT.strip().splitlines()[1:]]
# colour -> expected train id: CSV order with Void (row 30) left out
CSV_IDS = {}
for _name, _rgb in CSV_ROWS:
    CSV_IDS[_rgb] = 255 if _name == "Void" else len([v for v in CSV_IDS.values() if v != 255])


# ----------------------------------------------------------------------------- fixture helpers

def write_rgb(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]))


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(str(path))


def rand_image(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


CAMVID_FILES = {"train": ["0001TP_006690", "0001TP_006720", "0006R0_f01890"],
                "val": ["0016E5_07959", "0016E5_07961"],
                "test": ["0001TP_008550", "Seq05VD_f00000"]}


def camvid11_label():
    """Every value 0..11 in the first row, class 3 (road) elsewhere."""
    label = np.full((H, W), 3, np.uint8)
    label[0, :12] = np.arange(12)
    return label


def make_camvid11(root):
    base = os.path.join(root, "CamVid")
    for split, names in CAMVID_FILES.items():
        for i, name in enumerate(names):
            write_rgb(os.path.join(base, split, name + ".png"), rand_image(seed=i))
            write_png(os.path.join(base, split + "annot", name + ".png"), camvid11_label())
        with open(os.path.join(base, f"{split}.txt"), "w") as f:  # SegNet's list files, not needed
            f.writelines(f"/SegNet/CamVid/{split}/{n}.png /SegNet/CamVid/{split}annot/{n}.png\n" for n in names)
    return base


CAMVID32_FILES = {"train": ["0001TP_006690", "0001TP_006720", "Seq05VD_f00030"],
                  "val": ["0016E5_07959"],
                  "test": ["0001TP_008550", "Seq05VD_f00000"]}


def camvid32_label():
    """The 32 CSV colours in the first two rows, Road elsewhere (HxWx3 RGB)."""
    label = np.zeros((H, W, 3), np.uint8)
    label[:] = (128, 64, 128)
    colours = np.array([rgb for _, rgb in CSV_ROWS], np.uint8)
    label[:2] = colours.reshape(2, 16, 3)
    return label


def make_camvid32(root, csv_text=CLASS_DICT):
    base = os.path.join(root, "CamVid")
    for split, names in CAMVID32_FILES.items():
        for i, name in enumerate(names):
            write_rgb(os.path.join(base, split, name + ".png"), rand_image(seed=i))
            write_png(os.path.join(base, split + "_labels", name + "_L.png"), camvid32_label())
    with open(os.path.join(base, "class_dict.csv"), "w") as f:
        f.write(csv_text)
    return base


LIP_FILES = {"train": [("77_471474", 12, 16), ("100034_483681", 10, 8), ("10005_205677", 14, 9)],
             "val": [("100142_449784", 12, 16), ("10014_1211482", 9, 13)]}


# Column order of the LIP fixture labels: paired classes and 255 early, so that narrow images have them too.
LIP_COLUMNS = np.array([14, 0, 16, 255, 18, 13, 15, 5, 17, 2, 19, 1, 3, 4, 6, 7, 8, 9, 10, 11, 12], np.uint8)


def lip_label(h, w):
    """Column pattern with LIP classes and 255 (column 3), so that a mirror is visible."""
    return np.tile(LIP_COLUMNS[np.arange(w) % len(LIP_COLUMNS)], (h, 1))


def make_lip(root, ids_at_root=False):
    for split, items in LIP_FILES.items():
        for i, (sid, h, w) in enumerate(items):
            write_rgb(os.path.join(root, "TrainVal_images", f"{split}_images", sid + ".jpg"), rand_image(h, w, i))
            write_png(os.path.join(root, "TrainVal_parsing_annotations", f"{split}_segmentations", sid + ".png"),
                      lip_label(h, w))
        id_dir = root if ids_at_root else os.path.join(root, "TrainVal_images")
        with open(os.path.join(id_dir, f"{split}_id.txt"), "w") as f:
            f.writelines(sid + "\n" for sid, _, _ in items)
    return root


def swap_numpy(label):
    """The LIP left/right swap done pixel by pixel (the reference for the vectorised one)."""
    out = label.copy()
    for a, b in LIP_SWAP.items():
        out[label == a] = b
    return out


# ----------------------------------------------------------------------------- presets

def test_tpami_presets():
    cv = get_preset("camvid")
    assert (cv.num_classes, cv.crop_size, cv.scale_range, cv.test_mode, cv.test_size) == \
        (11, (360, 480), (0.5, 2.0), "whole", None)
    assert (cv.train_split, cv.val_split, cv.batch_size, cv.lr, cv.weight_decay, cv.iters) == \
        ("train", "val", 8, 1e-2, 5e-4, 10000)
    assert cv.class_names == ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence",
                              "car", "pedestrian", "bicyclist")
    assert cv.palette[0] == (128, 128, 128) and cv.palette[4] == (60, 40, 222) and cv.palette[10] == (0, 128, 192)
    assert cv.flip_pairs == ()
    c32 = get_preset("camvid32")
    assert c32.num_classes == 31 and "Void" not in c32.class_names
    assert list(c32.class_names) == [n for n, _ in CSV_ROWS if n != "Void"]
    assert list(c32.palette) == [rgb for n, rgb in CSV_ROWS if n != "Void"]
    assert (c32.crop_size, c32.test_mode, c32.flip_pairs) == ((360, 480), "whole", ())
    lip = get_preset("lip")
    assert (lip.num_classes, lip.crop_size, lip.test_mode, lip.test_size) == (20, (473, 473), "whole", None)
    assert lip.class_names[0] == "background" and lip.class_names[14:] == (
        "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe", "right-shoe")
    assert lip.flip_pairs == LIP_PAIRS and len(set(lip.palette)) == 20
    for name in ("cityscapes", "ade20k", "voc", "demo"):
        assert get_preset(name).flip_pairs == ()
    base = dict(name="x", num_classes=3, class_names=("a", "b", "c"), palette=((0, 0, 0),) * 3,
                train_split="t", val_split="v", crop_size=(4, 4), scale_range=(1.0, 1.0))
    for bad in (((0, 3),), ((1, 1),), ((0, 1), (1, 2))):
        with pytest.raises(ValueError, match="flip pair|two flip pairs"):
            DatasetPreset(**base, flip_pairs=bad)


# ----------------------------------------------------------------------------- CamVid, 11 classes

@pytest.mark.parametrize("inner", [False, True])
def test_camvid11_counts_and_mapping(tmp_path, inner):
    base = make_camvid11(str(tmp_path))
    root = base if inner else str(tmp_path)  # the CamVid folder or the folder holding it
    counts = {s: CamVidDataset(root, s).num_samples for s in ("train", "val", "test")}
    assert counts == {"train": 3, "val": 2, "test": 2}
    ds = CamVidDataset(root, "val")
    assert [s.name for s in ds.samples] == ["0016E5_07959", "0016E5_07961"]
    _, label, meta = ds[0]
    assert meta["ori_size"] == (H, W) and meta["has_label"] is True
    np.testing.assert_array_equal(label[0, :12], list(range(11)) + [255])  # 11 (void) -> ignore
    assert (label[1:] == 3).all()


def test_camvid11_bad_value_names_the_file(tmp_path):
    base = make_camvid11(str(tmp_path))
    bad = camvid11_label()
    bad[5, :3] = [12, 200, 255]
    write_png(os.path.join(base, "trainannot", "0001TP_006720.png"), bad)
    ds = CamVidDataset(str(tmp_path), "train")
    assert ds[0][1].max() == 255  # the other files are fine
    with pytest.raises(DatasetError, match=r"0001TP_006720\.png.*\[12, 200, 255\]"):
        ds[1]


# ----------------------------------------------------------------------------- CamVid, 32 classes

def test_camvid32_counts_and_colour_mapping(tmp_path):
    make_camvid32(str(tmp_path))
    counts = {s: CamVid32Dataset(str(tmp_path), s).num_samples for s in ("train", "val", "test")}
    assert counts == {"train": 3, "val": 1, "test": 2}
    ds = CamVid32Dataset(str(tmp_path / "CamVid"), "train")
    assert ds.num_classes == 31 and ds.class_names[30] == "Wall"
    assert [s.name for s in ds.samples] == ["0001TP_006690", "0001TP_006720", "Seq05VD_f00030"]
    assert ds.samples[0].label.endswith(os.path.join("train_labels", "0001TP_006690_L.png"))
    _, label, _ = ds[0]
    expected = np.array([CSV_IDS[rgb] for _, rgb in CSV_ROWS]).reshape(2, 16)
    np.testing.assert_array_equal(label[:2], expected)
    assert label[1, 14] == 255 and label[1, 15] == 30 and label[0, 0] == 0  # Void, Wall, Animal
    assert (label[2:] == 17).all()  # Road is the 18th row
    np.testing.assert_array_equal(np.unique(label), list(range(31)) + [255])


def test_camvid32_unknown_colour_names_file_and_colour(tmp_path):
    base = make_camvid32(str(tmp_path))
    bad = camvid32_label()
    bad[7, 3] = (1, 2, 3)
    write_png(os.path.join(base, "val_labels", "0016E5_07959_L.png"), bad)
    with pytest.raises(DatasetError, match=r"0016E5_07959_L\.png.*\(1, 2, 3\).*class_dict\.csv"):
        CamVid32Dataset(str(tmp_path), "val")[0]
    write_png(os.path.join(base, "val_labels", "0016E5_07959_L.png"), camvid32_label()[..., 0])  # grey
    with pytest.raises(DatasetError, match=r"0016E5_07959_L\.png.*mode 'L'"):
        CamVid32Dataset(str(tmp_path), "val")[0]


def test_camvid32_class_dict_must_match_the_preset(tmp_path):
    lines = CLASS_DICT.splitlines(keepends=True)
    swapped = [lines[0], lines[2], lines[1]] + lines[3:]  # Archway before Animal
    make_camvid32(str(tmp_path), "".join(swapped))
    with pytest.raises(DatasetError, match=r"(?s)class_dict\.csv does not match.*class 0 is 'Archway'.*'Animal'"):
        CamVid32Dataset(str(tmp_path), "train")
    with pytest.raises(DatasetError, match="does not match"):
        build_dataset("camvid32", str(tmp_path), input_norm=IMAGENET_RGB)
    no_wall = "".join(line for line in lines if not line.startswith("Wall"))
    (tmp_path / "CamVid" / "class_dict.csv").write_text(no_wall)
    with pytest.raises(DatasetError, match=r"lists 30 classes besides Void, the preset 31; class 30 is nothing"):
        CamVid32Dataset(str(tmp_path), "train")
    (tmp_path / "CamVid" / "class_dict.csv").write_text("name,red,green,blue\n" + "".join(lines[1:]))
    with pytest.raises(DatasetError, match=r"class_dict\.csv: expected the header 'name,r,g,b'"):
        CamVid32Dataset(str(tmp_path), "train")
    (tmp_path / "CamVid" / "class_dict.csv").write_text(CLASS_DICT + "Extra,64, 192\n")
    with pytest.raises(DatasetError, match=r"class_dict\.csv:34: expected 'name,r,g,b'"):
        CamVid32Dataset(str(tmp_path), "train")
    (tmp_path / "CamVid" / "class_dict.csv").write_text(CLASS_DICT.replace("Wall,64, 192, 0", "Wall,0, 0, 0"))
    with pytest.raises(DatasetError, match=r"class_dict\.csv:33: colour \(0, 0, 0\) of 'Wall' repeats line 32"):
        CamVid32Dataset(str(tmp_path), "train")
    # a renamed class list of the right length can be read when it is what the caller expects
    (tmp_path / "CamVid" / "class_dict.csv").write_text(CLASS_DICT)
    names = [n for n, _ in CSV_ROWS if n != "Void"]
    assert CamVid32Dataset(str(tmp_path), "train", class_names=[n.lower() for n in names]).num_classes == 31


# ----------------------------------------------------------------------------- LIP

@pytest.mark.parametrize("ids_at_root", [False, True])
def test_lip_counts_and_values(tmp_path, ids_at_root):
    make_lip(str(tmp_path), ids_at_root=ids_at_root)
    counts = {s: LIPDataset(str(tmp_path), s).num_samples for s in ("train", "val")}
    assert counts == {"train": 3, "val": 2}
    ds = LIPDataset(str(tmp_path), "val")
    assert [s.name for s in ds.samples] == ["100142_449784", "10014_1211482"]  # id-file order
    for i, (_, h, w) in enumerate(LIP_FILES["val"]):
        image, label, meta = ds[i]
        assert meta["ori_size"] == (h, w) and image.shape == (3, h, w)
        np.testing.assert_array_equal(label, lip_label(h, w))  # 0..19 kept, 255 kept
    with pytest.raises(ValueError, match="valid: train, val"):
        LIPDataset(str(tmp_path), "test")


def test_lip_bad_value_and_bad_id_file(tmp_path):
    make_lip(str(tmp_path))
    write_png(tmp_path / "TrainVal_parsing_annotations/val_segmentations/10014_1211482.png", np.full((9, 13), 20))
    with pytest.raises(DatasetError, match=r"10014_1211482\.png.*\[20\]"):
        LIPDataset(str(tmp_path), "val")[1]
    with open(tmp_path / "TrainVal_images/val_id.txt", "a") as f:
        f.write("100142_449784\n")
    with pytest.raises(ValueError, match=r"val_id\.txt:3: id '100142_449784' repeats line 1"):
        LIPDataset(str(tmp_path), "val")
    os.remove(tmp_path / "TrainVal_images/val_id.txt")
    with pytest.raises(FileNotFoundError, match=r"(?s)LIP id file of split 'val' not found.*Expected layout"):
        LIPDataset(str(tmp_path), "val")


# ----------------------------------------------------------------------------- missing files

def test_image_without_label_names_the_file(tmp_path):
    make_camvid11(str(tmp_path / "a"))
    os.remove(tmp_path / "a/CamVid/testannot/Seq05VD_f00000.png")
    with pytest.raises(FileNotFoundError, match=r"have no label.*CamVid/test/Seq05VD_f00000\.png"):
        CamVidDataset(str(tmp_path / "a"), "test")
    make_camvid32(str(tmp_path / "b"))
    os.remove(tmp_path / "b/CamVid/train_labels/0001TP_006720_L.png")
    with pytest.raises(FileNotFoundError, match=r"have no label.*CamVid/train/0001TP_006720\.png"):
        CamVid32Dataset(str(tmp_path / "b"), "train")
    make_lip(str(tmp_path / "c"))
    os.remove(tmp_path / "c/TrainVal_parsing_annotations/train_segmentations/100034_483681.png")
    with pytest.raises(FileNotFoundError, match=r"train_id\.txt:2: image .*100034_483681\.jpg' has no label "
                                                r".*train_segmentations/100034_483681\.png"):
        LIPDataset(str(tmp_path / "c"), "train")


def test_missing_folders_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)CamVid root.*Expected layout.*test}annot"):
        CamVidDataset(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "CamVid" / "train")
    with pytest.raises(FileNotFoundError, match=r"(?s)CamVid annotations of split 'train'.*layout.*test}annot"):
        CamVidDataset(str(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match=r"(?s)class_dict\.csv not found.*Expected layout.*_labels"):
        CamVid32Dataset(str(tmp_path), "train")
    (tmp_path / "CamVid" / "class_dict.csv").write_text(CLASS_DICT)
    with pytest.raises(FileNotFoundError, match=r"(?s)CamVid labels of split 'train'.*_labels/<name>_L\.png"):
        CamVid32Dataset(str(tmp_path), "train")
    with pytest.raises(ValueError, match="valid: train, val, test"):
        CamVidDataset(str(tmp_path), "trainval")
    with pytest.raises(FileNotFoundError, match=r"(?s)LIP images of split 'train'.*TrainVal_images/\{train,val\}"):
        LIPDataset(str(tmp_path), "train")


# ----------------------------------------------------------------------------- flip with left/right classes

def test_lip_flip_swaps_left_and_right():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array(list(range(20)) + [255], np.uint8), size=(6, 9))
    image = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    flip = RandomHorizontalFlip(p=1.0, flip_pairs=LIP_PAIRS)
    img1, lb1 = flip(image, label, rng)
    np.testing.assert_array_equal(img1, image[:, ::-1])
    np.testing.assert_array_equal(lb1, swap_numpy(label[:, ::-1]))  # swapped classes at mirrored positions
    assert lb1.dtype == label.dtype
    mirrored = label[:, ::-1]
    others = ~np.isin(mirrored, list(LIP_SWAP))
    assert others.any() and (~others).any()
    np.testing.assert_array_equal(lb1[others], mirrored[others])  # background, face, 255, ... unchanged
    assert set(np.unique(lb1[~others])) <= set(LIP_SWAP) and (lb1[~others] != mirrored[~others]).all()
    img2, lb2 = flip(img1, lb1, rng)
    np.testing.assert_array_equal(img2, image)  # twice is the identity
    np.testing.assert_array_equal(lb2, label)
    # without pairs the classes are only mirrored
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(image, label, rng)[1], mirrored)
    with pytest.raises(ValueError, match="flip pairs"):
        RandomHorizontalFlip(flip_pairs=((14, 15), (15, 16)))


def test_lip_training_transform_swaps_on_flip():
    preset = get_preset("lip")
    label = lip_label(5, 21)
    image = np.zeros((5, 21, 3), np.uint8)
    t = build_train_transform(preset, IMAGENET_RGB, crop_size=(5, 21), scale_range=(1.0, 1.0))
    steps = [s for s in t.transforms if isinstance(s, RandomHorizontalFlip)]
    assert len(steps) == 1 and steps[0].flip_pairs == LIP_PAIRS
    outcomes = set()
    for seed in range(10):
        _, lb = t(image, label, np.random.default_rng(seed))
        if np.array_equal(lb, label):
            outcomes.add("kept")
        else:
            np.testing.assert_array_equal(lb, swap_numpy(label[:, ::-1]))
            outcomes.add("flipped")
    assert outcomes == {"kept", "flipped"}
    cv = build_train_transform(get_preset("camvid"), IMAGENET_RGB)
    assert [s.flip_pairs for s in cv.transforms if isinstance(s, RandomHorizontalFlip)] == [()]


class MirrorPairModel(nn.Module):
    """One 3x3 conv whose output on a mirrored image is the mirrored output with the pairs' channels swapped.

    Channel b of a pair (a, b) has the mirrored kernel and the bias of channel a; every
    other channel has a horizontally symmetric kernel.
    """

    def __init__(self, num_classes=20, pairs=LIP_PAIRS, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        w = rng.normal(size=(num_classes, 3, 3, 3)).astype(np.float32)
        b = rng.normal(size=num_classes).astype(np.float32)
        paired = {c for p in pairs for c in p}
        for c in range(num_classes):
            if c not in paired:
                w[c] = (w[c] + w[c][..., ::-1]) / 2
        for a, c in pairs:
            w[c], b[c] = w[a][..., ::-1], b[a]
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)
        self.conv.weight.update(jt.array(np.ascontiguousarray(w)))
        self.conv.bias.update(jt.array(b))
        self.align_corners = True
        self.input_norm = IMAGENET_RGB

    def execute(self, x):
        return self.conv(x)

    def predict(self, x, size=None):
        return self(x)


def test_flip_tta_swaps_the_pairs_back():
    model = MirrorPairModel()
    x = jt.array(np.random.default_rng(1).normal(size=(2, 3, H, W)).astype(np.float32))
    perm = np.arange(20)
    for a, b in LIP_PAIRS:
        perm[a], perm[b] = b, a
    plain = model.predict(x).numpy()
    mirrored = model.predict(x[:, :, :, ::-1]).numpy()
    np.testing.assert_allclose(mirrored, plain[:, perm][..., ::-1], atol=1e-5)  # the model's property

    single = nn.softmax(inference(model, x, 20), dim=1).numpy()
    with_pairs = inference(model, x, 20, flip=True, flip_pairs=LIP_PAIRS).numpy()
    np.testing.assert_allclose(with_pairs, single, atol=1e-5)
    without = inference(model, x, 20, flip=True).numpy()
    assert np.abs(without - single).max() > 1e-2
    np.testing.assert_allclose(without[:, 14], without[:, 15], atol=1e-5)  # the pair's evidence is mixed
    ms = inference(model, x, 20, scales=[1.0, 1.0], flip=True, flip_pairs=LIP_PAIRS).numpy()
    np.testing.assert_allclose(ms, single, atol=1e-5)
    with pytest.raises(ValueError, match="flip_pairs"):
        inference(model, x, 20, flip=True, flip_pairs=((14, 20),))

    rgb = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    preset = get_preset("lip")
    one_view = predict_image(model, rgb, 20, preset)
    np.testing.assert_array_equal(predict_image(model, rgb, 20, preset, flip=True), one_view)  # preset's pairs
    np.testing.assert_array_equal(predict_image(model, rgb, 20, flip=True, flip_pairs=LIP_PAIRS), one_view)


def test_evaluate_flip_uses_the_pairs(tmp_path):
    make_lip(str(tmp_path))
    model = MirrorPairModel()
    ds = build_dataset("lip", str(tmp_path), train=False, input_norm=IMAGENET_RGB, num_workers=0)
    plain = evaluate(model, ds, 20, progress=False)
    flipped = evaluate(model, ds, 20, flip=True, flip_pairs=get_preset("lip").flip_pairs,
                                  progress=False)
    assert plain["images"] == flipped["images"] == 2
    # every pixel but column 3 (255) is scored
    assert np.array(plain["matrix"]).sum() == sum(h * (w - 1) for _, h, w in LIP_FILES["val"])
    assert flipped["matrix"] == plain["matrix"]


# ----------------------------------------------------------------------------- build_dataset

def test_build_dataset_camvid_train_and_eval(tmp_path):
    make_camvid11(str(tmp_path / "11"))
    make_camvid32(str(tmp_path / "32"))
    for name, root, values in (("camvid", tmp_path / "11", set(range(11)) | {255}),
                               ("camvid32", tmp_path / "32", set(range(31)) | {255})):
        train = build_dataset(name, str(root), train=True, input_norm=IMAGENET_RGB, batch_size=2,
                              crop_size=(H, W), num_workers=0)
        assert (train.num_samples, len(train)) == (3, 1)
        image, label, meta = next(iter(train))
        assert tuple(image.shape) == (2, 3, H, W) and tuple(label.shape) == (2, H, W)
        assert set(np.unique(label.numpy())) <= values and len(meta["name"]) == 2
        val = build_dataset(name, str(root), train=False, input_norm=IMAGENET_RGB, num_workers=0)
        assert val.split == "val" and val.batch_size == 1
        image, label, meta = next(iter(val))
        assert tuple(image.shape) == (1, 3, H, W) and meta["ori_size"] == [(H, W)]
        assert set(np.unique(label.numpy())) == values
        test = build_dataset(name, str(root), split="test", input_norm=IMAGENET_RGB)
        assert test.num_samples == 2


def test_build_dataset_lip_train_and_eval(tmp_path):
    make_lip(str(tmp_path))
    train = build_dataset("lip", str(tmp_path), train=True, input_norm=IMAGENET_RGB, batch_size=2, num_workers=0)
    assert train.num_samples == 3
    image, label, _ = next(iter(train))
    assert tuple(image.shape) == (2, 3, 473, 473) and tuple(label.shape) == (2, 473, 473)  # the preset's crop
    assert set(np.unique(label.numpy())) <= set(range(20)) | {255}
    assert (label.numpy()[:, 20:] == 255).all()  # padding: the images are smaller than the crop
    val = build_dataset("lip", str(tmp_path), train=False, input_norm=IMAGENET_RGB, num_workers=0)
    sizes = []
    for image, label, meta in val:  # images of different sizes, one per batch, each at its own size
        sizes.append(meta["ori_size"][0])
        assert tuple(image.shape[2:]) == meta["ori_size"][0] == tuple(label.shape[1:])
    assert sizes == [(h, w) for _, h, w in LIP_FILES["val"]]
