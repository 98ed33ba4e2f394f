"""predict.py on generated images with a tiny model: outputs, sizes, modes and errors."""

import numpy as np
import pytest
from PIL import Image

import jittor as jt
import predict
from datasets import get_preset
from apis.model_files import load_model
from engine.checkpoint import model_state, save_checkpoint
from visualization.palette import colorize, overlay
from models import build_model

NUM_CLASSES = 5  # the "demo" preset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A train.py-style checkpoint of an untrained ccnet_demo, gamma non-zero."""
    jt.set_global_seed(0)
    model = build_model("ccnet_demo", NUM_CLASSES)
    model.head.cca.gamma.assign(jt.array([0.5], dtype="float32"))
    folder = tmp_path_factory.mktemp("ckpt")
    path = str(folder / "checkpoint_last.pkl")
    state = model_state(model)
    save_checkpoint(path, {"model": state, "config": {"model": "ccnet_demo", "dataset": "demo",
                                                      "num_classes": NUM_CLASSES}})
    weights = str(folder / "weights.pkl")  # a converted-weights style file: no config
    jt.save({"state_dict": state, "meta": {}}, weights)
    converted = str(folder / "ccnet_demo_5cls.pkl")  # convert_weights.py's whole-CCNet format
    jt.save({"state_dict": state, "meta": {"arch": "ccnet_demo", "num_classes": NUM_CLASSES, "recurrence": 2,
                                           "overrides": {}}}, converted)
    backbone_only = str(folder / "backbone.pkl")
    jt.save({"state_dict": {k: v for k, v in state.items() if k.startswith("backbone.")}, "meta": {}}, backbone_only)
    return {"train": path, "folder": str(folder), "weights": weights, "converted": converted, "backbone": backbone_only}


def _image(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_writes_prediction_overlay_and_label(checkpoint, tmp_path):
    img = _image(tmp_path / "street.png", 45, 70)
    out = tmp_path / "out"
    assert predict.main([checkpoint["train"], str(img), "-o", str(out), "--save-label", "--no-progress"]) == 0
    pred = np.asarray(Image.open(out / "street_pred.png"))
    overlay = np.asarray(Image.open(out / "street_overlay.png"))
    label = np.asarray(Image.open(out / "street_label.png"))
    assert pred.shape == overlay.shape == (45, 70, 3)
    assert label.shape == (45, 70) and label.dtype == np.uint8 and label.max() < NUM_CLASSES
    palette = np.asarray(get_preset("demo").palette, np.uint8)
    np.testing.assert_array_equal(pred, palette[label])
    expected = np.clip(0.5 * np.asarray(Image.open(img), np.float32) + 0.5 * pred + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(overlay, expected)


def test_slide_mode_and_run_folder(checkpoint, tmp_path):
    img = _image(tmp_path / "wide.png", 40, 90)
    out = tmp_path / "out"
    # the run folder stands for its checkpoint_last.pkl; the window is cropped to the image height
    assert predict.main([checkpoint["folder"], str(img), "-o", str(out), "--mode", "slide",
                         "--crop-size", "48", "--stride", "32", "--no-progress"]) == 0
    assert Image.open(out / "wide_pred.png").size == (90, 40)
    assert not (out / "wide_label.png").exists()


def test_folder_with_an_unreadable_image(checkpoint, tmp_path, capsys):
    src = tmp_path / "images"
    (src / "sub").mkdir(parents=True)
    _image(src / "a.png", 33, 41)
    _image(src / "sub" / "b.jpg", 24, 32, seed=1)
    (src / "broken.png").write_bytes(b"not a png")
    (src / "notes.txt").write_text("ignored")
    out = src / "pred"  # inside the input folder: not searched
    assert predict.main([checkpoint["train"], str(src), "-o", str(out)]) == 1
    assert "cannot read image" in capsys.readouterr().err
    assert Image.open(out / "a_pred.png").size == (41, 33)
    assert Image.open(out / "sub" / "b_overlay.png").size == (32, 24)
    assert not (out / "broken_pred.png").exists()
    assert predict.main([checkpoint["train"], str(src), "-o", str(out), "--no-progress"]) == 1  # out/ skipped


def test_weights_file_needs_model_and_dataset(checkpoint, tmp_path, capsys):
    img = _image(tmp_path / "x.png", 32, 32)
    assert predict.main([checkpoint["weights"], str(img), "-o", str(tmp_path / "o")]) == 2
    assert "pass --model" in capsys.readouterr().err
    assert predict.main([checkpoint["weights"], str(img), "-o", str(tmp_path / "o"),
                         "--model", "ccnet_demo", "--dataset", "demo"]) == 0
    assert (tmp_path / "o" / "x_pred.png").exists()
    # a converted whole CCNet records its preset and classes; without a dataset the VOC palette is used
    assert predict.main([checkpoint["converted"], str(img), "-o", str(tmp_path / "c")]) == 0
    assert Image.open(tmp_path / "c" / "x_pred.png").size == (32, 32)


@pytest.mark.parametrize("case,message", [
    ("not_a_checkpoint", "cannot read"),
    ("missing", "checkpoint not found"),
    ("backbone_only", "looks like backbone weights"),
    ("wrong_classes", "trained for 5 classes, not 7"),
    ("wrong_dataset", "trained for 5 classes but the dataset 'cityscapes' has 19"),
    ("wrong_model", "does not fit"),
    ("unknown_model", "ccnet_nope"),
    ("no_images", "no such file or folder"),
])
def test_clear_errors(checkpoint, tmp_path, capsys, case, message):
    img = str(_image(tmp_path / "x.png", 16, 16))
    args = {
        "not_a_checkpoint": [img, img],
        "missing": [str(tmp_path / "nope.pkl"), img],
        "backbone_only": [checkpoint["backbone"], img, "--model", "ccnet_demo", "--dataset", "demo"],
        "wrong_classes": [checkpoint["weights"], img, "--model", "ccnet_demo", "--num-classes", "7"],
        "wrong_dataset": [checkpoint["train"], img, "--dataset", "cityscapes"],
        "wrong_model": [checkpoint["weights"], img, "--model", "ccnet_van_b0", "--dataset", "demo"],
        "unknown_model": [checkpoint["train"], img, "--model", "ccnet_nope"],
        "no_images": [checkpoint["train"], str(tmp_path / "nothing_here")],
    }[case]
    assert predict.main(args + ["-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_colour_and_overlay_helpers():
    pred = np.array([[0, 1], [2, 255]], np.uint8)
    colours = colorize(pred, [(10, 20, 30), (40, 50, 60), (70, 80, 90)])
    assert colours[1, 1].tolist() == [0, 0, 0] and colours[0, 1].tolist() == [40, 50, 60]
    image = np.full((2, 2, 3), 100, np.uint8)
    assert overlay(image, colours, 0.0).tolist() == image.tolist()
    assert overlay(image, colours, 1.0).tolist() == colours.tolist()


def test_converted_weights_with_build_options(tmp_path):
    """convert_weights.py records build_model overrides (e.g. an mmseg aux width) in meta."""
    model = build_model("ccnet_demo", 3, aux_channels=8, recurrence=1)
    path = str(tmp_path / "converted.pkl")
    jt.save({"state_dict": model_state(model), "meta": {"arch": "ccnet_demo", "num_classes": 3, "recurrence": 1,
                                                         "overrides": {"aux_channels": 8}}}, path)
    net, info = load_model(path)
    assert (info.model, info.num_classes, info.recurrence, info.dataset) == ("ccnet_demo", 3, 1, None)
    assert not net.is_training()
    img = _image(tmp_path / "y.png", 20, 28)
    assert predict.main([path, str(img), "-o", str(tmp_path / "o"), "--save-label"]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "y_label.png")).max() < 3


def test_photos_are_segmented_upright_as_viewers_show_them(checkpoint, tmp_path):
    # a camera's portrait photo: pixels stored landscape (30 high, 50 wide), EXIF orientation 6 (rotate 90)
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = tmp_path / "photo.jpg"
    stored.save(photo, exif=exif)
    out = tmp_path / "out"
    assert predict.main([checkpoint["train"], str(photo), "-o", str(out), "--no-progress"]) == 0
    assert np.asarray(Image.open(out / "photo_pred.png")).shape == (50, 30, 3)  # before: (30, 50, 3)
    upright = np.asarray(Image.open(photo).transpose(Image.Transpose.ROTATE_270))
    overlay = np.asarray(Image.open(out / "photo_overlay.png"), np.float32)
    pred = np.asarray(Image.open(out / "photo_pred.png"), np.float32)
    np.testing.assert_array_equal(overlay, np.clip(0.5 * upright + 0.5 * pred + 0.5, 0, 255).astype(np.uint8))


def test_images_with_one_name_get_outputs_of_their_own(checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "a.png", 20, 30, seed=1)
    _image(folder / "a.jpg", 20, 30, seed=2)
    _image(folder / "b.png", 20, 30, seed=3)
    out = tmp_path / "out"
    assert predict.main([checkpoint["train"], str(folder), "-o", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*_pred.png")) == ["a_jpg_pred.png", "a_png_pred.png", "b_pred.png"]
    assert "wrote 3 prediction(s)" in capsys.readouterr().out


def test_an_image_too_large_for_one_piece_is_refused_before_any_work(checkpoint, tmp_path, capsys):
    small = _image(tmp_path / "small.png", 20, 30)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (8000, 7000)).save(huge)  # energies [1874, 875, 1000] in float32: 6.1 GiB
    out = tmp_path / "out"
    status = predict.main([checkpoint["train"], str(small), str(huge), "-o", str(out), "--no-progress"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2 and line.startswith(f"error: {huge}: 8000x7000 is too large to segment in one piece")
    assert "--mode slide" in line and not list(out.glob("*.png"))  # not even the small one was written
