"""evaluate.py --split test --submission: each benchmark server's file names, values, sizes and palette."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import apis.evaluate
import evaluate
from datasets import get_preset
from datasets.presets import voc_palette
from evaluation.submission import submission_for
from models import build_model
from seg_fixtures import TINY_MODEL_ARGS
from utils.weight_files import save_weights
from visualization.palette import save_label_png

# The 19 regular Cityscapes label ids of the train ids 0..18 (cityscapesScripts helpers/labels.py).
CITYSCAPES_EVAL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def write(sub, name, pred):
    """What evaluate.py does with each prediction (apis.evaluate)."""
    save_label_png(pred, sub.path(name), palette=sub.palette, lut=sub.lut)


def prediction(num_classes, shape=(5, 7), seed=0):
    pred = np.random.default_rng(seed).integers(0, num_classes, shape)
    pred.flat[0], pred.flat[1] = 0, num_classes - 1  # both ends of the range
    return pred


def test_cityscapes_label_ids(tmp_path):
    sub = submission_for(get_preset("cityscapes"), str(tmp_path))
    pred = prediction(19)
    write(sub, "berlin_000123_000019", pred)
    path = tmp_path / "submission" / "berlin_000123_000019.png"
    im = Image.open(path)
    assert im.mode == "L" and im.size == (7, 5)
    np.testing.assert_array_equal(np.array(im), np.array(CITYSCAPES_EVAL_IDS)[pred])
    assert np.array(im).max() <= 33  # never a train id's 255


def test_ade20k_values_one_to_150(tmp_path):
    sub = submission_for(get_preset("ade20k"), str(tmp_path))
    pred = prediction(150)
    write(sub, "ADE_test_00000001", pred)
    im = Image.open(tmp_path / "submission" / "ADE_test_00000001.png")
    assert im.mode == "L" and im.size == (7, 5)
    np.testing.assert_array_equal(np.array(im), pred + 1)  # 0 is "other", never predicted
    assert np.array(im).min() == 1 and np.array(im).max() == 150


@pytest.mark.parametrize("split, comp", [("train_aug", "comp6"), ("trainaug", "comp6"), ("train", "comp5"),
                                         ("trainval", "comp5"), (None, "comp6")])  # None: the preset's train_aug
def test_voc_indexed_pngs_in_the_devkit_folders(tmp_path, split, comp):
    sub = submission_for(get_preset("voc"), str(tmp_path), split)
    pred = prediction(21)
    write(sub, "2008_000006", pred)
    path = tmp_path / "results" / "VOC2012" / "Segmentation" / f"{comp}_test_cls" / "2008_000006.png"
    im = Image.open(path)
    assert im.mode == "P" and im.size == (7, 5)
    np.testing.assert_array_equal(np.array(im), pred)
    assert im.getpalette()[:21 * 3] == [c for rgb in voc_palette(21) for c in rgb]
    assert "tar zcf results.tgz" in sub.what


def test_presets_without_a_server_are_refused(tmp_path):
    for name in ("camvid", "camvid32", "lip"):
        with pytest.raises(ValueError, match=f"'{name}' preset has no benchmark server format"):
            submission_for(get_preset(name), str(tmp_path))


# -- end to end: the test splits of ADE20K and VOC, unlabelled, at their images' own sizes ------------------------

def write_jpg(path, h, w, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def tiny_weights(tmp_path, num_classes):
    model = build_model("ccnet_demo", num_classes, backbone_kwargs={"embed_dims": [8, 16, 24, 32],
                                                                   "depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]},
                        channels=16, aux_channels=8, neck_channels=16)
    return save_weights(str(tmp_path / f"tiny{num_classes}.pkl"), {k: v.numpy() for k, v in model.state_dict().items()},
                        {"arch": "ccnet_demo", "num_classes": num_classes})


def run_eval(*args):
    return apis.evaluate.run(evaluate.options_from_args(evaluate.get_args_parser().parse_args([str(a) for a in args])))


def test_ade20k_test_split_end_to_end(tmp_path, capsys):
    sizes = {"ADE_test_00000001": (24, 40), "ADE_test_00000002": (30, 22)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        write_jpg(tmp_path / "data" / "release_test" / "testing" / f"{name}.jpg", h, w, i)
    out = tmp_path / "out"
    result = run_eval("--checkpoint", tiny_weights(tmp_path, 150), "--dataset", "ade20k", "--data-path",
                      tmp_path / "data", "--split", "test", "--submission", "--output-dir", out, "-j", 0,
                      "--no-progress", "--test-size", 64, 64, *TINY_MODEL_ARGS[2:])
    assert result["images"] == 2 and result["pixels"] == 0  # nothing scored: no labels
    assert sorted(os.listdir(out / "submission")) == [f"{n}.png" for n in sorted(sizes)]
    for name, (h, w) in sizes.items():
        png = np.array(Image.open(out / "submission" / f"{name}.png"))
        assert png.shape == (h, w) and png.min() >= 1 and png.max() <= 150
    assert "ADE20K PNGs (values 1..150)" in capsys.readouterr().out


def test_voc_test_split_end_to_end(tmp_path, capsys):
    base = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    ids = {"2008_000001": (20, 28), "2008_000017": (26, 18)}
    for i, (name, (h, w)) in enumerate(ids.items()):
        write_jpg(base / "JPEGImages" / f"{name}.jpg", h, w, i)
    os.makedirs(base / "ImageSets" / "Segmentation")
    (base / "ImageSets" / "Segmentation" / "test.txt").write_text("".join(f"{n}\n" for n in ids))
    out = tmp_path / "out"
    run_eval("--checkpoint", tiny_weights(tmp_path, 21), "--dataset", "voc", "--data-path", tmp_path / "data",
             "--split", "test", "--submission", "--output-dir", out, "-j", 0, "--no-progress", "--test-size", 64, 64,
             *TINY_MODEL_ARGS[2:])
    folder = out / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"  # the preset trains on train_aug
    assert sorted(os.listdir(folder)) == [f"{n}.png" for n in sorted(ids)]
    for name, (h, w) in ids.items():
        im = Image.open(folder / f"{name}.png")
        assert im.mode == "P" and im.size == (w, h) and np.array(im).max() <= 20
    assert "comp6: trained with SBD data" in capsys.readouterr().out
