"""Inference (whole, sliding window, multi-scale, flip), the evaluation loop, evaluate.py and its errors."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import jittor as jt
from jittor import nn

import evaluate
import train
from datasets import get_preset
from datasets.loader import mpi_shard_positions
import apis.evaluate
import apis.train
from engine import checkpoint
from evaluation.submission import submission_lut
from evaluation.inference import inference, slide_inference
from seg_fixtures import train_args, write_blocks_dataset


class ConvModel(nn.Module):
    """A stand-in segmentor with CCNet's ``predict`` contract: one conv, logits at input size."""

    def __init__(self, num_classes=3, kernel=1, symmetric=False, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.conv = nn.Conv2d(3, num_classes, kernel, padding=kernel // 2)
        w = rng.normal(size=(num_classes, 3, kernel, kernel)).astype(np.float32)
        if symmetric:
            w = (w + w[..., ::-1]) / 2  # horizontally symmetric kernels: flip-equivariant
        self.conv.weight.update(jt.array(w))
        self.conv.bias.update(jt.array(rng.normal(size=num_classes).astype(np.float32)))
        self.align_corners = True

    def execute(self, x):
        return self.conv(x)

    def predict(self, x, size=None):
        out = self(x)
        if size is not None and tuple(out.shape[2:]) != tuple(size):
            out = nn.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)
        return out


def image(h=20, w=30, b=1, seed=1):
    return jt.array(np.random.default_rng(seed).normal(size=(b, 3, h, w)).astype(np.float32))


def test_slide_equals_whole_when_the_crop_covers_the_image():
    model = ConvModel(kernel=3)
    x = image(20, 30, b=2)
    whole = inference(model, x, 3, mode="whole").numpy()
    for crop in ((20, 30), (32, 40), (64, 64)):
        slide = inference(model, x, 3, mode="slide", crop_size=crop, stride=(8, 8)).numpy()
        np.testing.assert_allclose(slide, whole, atol=1e-6)


def test_overlapping_windows_average_logits():
    model = ConvModel(kernel=1)  # per-pixel: every window gives the same logits as the whole image
    x = image(20, 30)
    whole = inference(model, x, 3, mode="whole").numpy()
    slide = inference(model, x, 3, mode="slide", crop_size=(8, 12), stride=(5, 7)).numpy()
    np.testing.assert_allclose(slide, whole, atol=1e-5)


def test_slide_window_layout_counts_every_pixel():
    class Ones(ConvModel):
        def predict(self, x, size=None):
            return jt.ones((x.shape[0], 1) + tuple(x.shape[2:]))
    # windows 8 wide every 5 on 20 pixels: starts 0, 5, 10, 12 (last shifted inward)
    out = slide_inference(Ones(1), image(20, 20), 1, (8, 8), (5, 5)).numpy()
    np.testing.assert_allclose(out, 1.0)  # averaged, not summed


def test_flip_on_a_symmetric_model_changes_nothing():
    model = ConvModel(kernel=3, symmetric=True)
    x = image(16, 24)
    plain = nn.softmax(inference(model, x, 3), dim=1).numpy()
    flipped = inference(model, x, 3, flip=True).numpy()
    np.testing.assert_allclose(flipped, plain, atol=1e-6)


def test_flip_averages_the_mirrored_view():
    model = ConvModel(kernel=3, symmetric=False)
    x = image(16, 24)
    a = nn.softmax(model.predict(x), dim=1).numpy()
    b = nn.softmax(model.predict(x[:, :, :, ::-1]), dim=1).numpy()[..., ::-1]
    assert np.abs(a - b).max() > 1e-3  # the model is not symmetric
    out = inference(model, x, 3, flip=True).numpy()
    np.testing.assert_allclose(out, (a + b) / 2, atol=1e-6)


def test_multi_scale():
    model = ConvModel(kernel=1)
    x = image(16, 24)
    single = inference(model, x, 3, scales=[1.0]).numpy()
    np.testing.assert_allclose(single, model.predict(x).numpy(), atol=1e-6)
    ms = inference(model, x, 3, out_size=(32, 48), scales=[0.5, 1.0, 1.5], flip=True).numpy()
    assert ms.shape == (1, 3, 32, 48)
    np.testing.assert_allclose(ms.sum(1), 1.0, atol=1e-5)  # averaged probabilities
    with pytest.raises(ValueError, match="scales must be positive"):
        inference(model, x, 3, scales=[0.0])
    with pytest.raises(ValueError, match="needs crop_size and stride"):
        inference(model, x, 3, mode="slide")


@pytest.mark.parametrize("n,bs,world", [(5, 2, 2), (7, 4, 2), (4, 2, 2), (1, 2, 2), (10, 3, 3), (2, 4, 4),
                                        (9, 5, 2)])
def test_mpi_shards_are_the_positions_jittors_loader_gives_each_rank(n, bs, world, monkeypatch):
    # Jittor's own sharding (jittor/dataset/dataset.py: Dataset._get_index_list) run as rank r of world
    import jittor.dataset.dataset as jt_dataset

    class Positions(jt_dataset.Dataset):
        def __getitem__(self, index):
            return index

    monkeypatch.setattr(jt, "in_mpi", True)
    shards = []
    for r in range(world):
        monkeypatch.setattr(jt_dataset, "mpi", SimpleNamespace(world_size=lambda: world, world_rank=lambda r=r: r))
        dataset = Positions(batch_size=bs, shuffle=False, drop_last=False)
        dataset.set_attrs(total_len=n)
        want = np.asarray(dataset._get_index_list())
        got = mpi_shard_positions(n, bs, world, r)
        np.testing.assert_array_equal(got, want, err_msg=f"rank {r}")
        shards.append(got)
    assert sorted(set(np.concatenate(shards).tolist())) == list(range(n))  # every sample on some rank


# --------------------------------------------------------------------------- evaluate.py end to end

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_blocks_dataset(str(root / "data"), num_train=4, num_val=3)
    out = root / "run"
    apis.train.run(train.options_from_args(train.get_args_parser().parse_args(train_args(data, out, "--iters", "2"))))
    return data, out


def run_eval(*args):
    """evaluate.py's run with these arguments (errors raised, not turned into exit codes)."""
    return apis.evaluate.run(evaluate.options_from_args(evaluate.get_args_parser().parse_args([str(a) for a in args])))


def test_evaluate_writes_table_json_and_predictions(trained, tmp_path, capsys):
    data, run = trained
    out = tmp_path / "ev"
    result = run_eval("--checkpoint", run, "--output-dir", out, "--save-pred", "--submission", "--no-progress",
                      "-j", 0)
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "vegetation" in printed
    saved = json.load(open(out / "results.json"))
    assert saved["mIoU"] == pytest.approx(result["mIoU"]) and saved["images"] == 3
    assert set(saved["per_class"]) == {"road", "building", "vegetation", "sky", "car"}
    assert np.array(saved["confusion_matrix"]).sum() == 3 * 32 * 64
    preds = sorted(os.listdir(out / "pred"))
    assert len(preds) == 3
    im = Image.open(out / "pred" / preds[0])
    assert im.mode == "P" and im.size == (64, 32)
    assert im.getpalette()[:6] == [128, 64, 128, 70, 70, 70]  # road, building (Cityscapes colours)
    sub = np.array(Image.open(out / "submission" / preds[0]))
    assert set(np.unique(sub)) <= {7, 11, 21, 23, 26}  # Cityscapes label ids
    np.testing.assert_array_equal(sub, submission_lut(get_preset("demo"))[np.array(im)])
    assert saved["miou_over"] == saved["settings"]["miou_over"] == "present"
    # --miou-over all: the same matrix, every class in the mean (an absent one as 0)
    every = run_eval("--checkpoint", run, "--output-dir", tmp_path / "all", "--no-progress", "-j", 0,
                     "--miou-over", "all")
    assert every["miou_over"] == "all"
    assert every["mIoU"] == pytest.approx(np.nan_to_num(np.array(result["IoU"])).mean())
    assert json.load(open(tmp_path / "all" / "results.json"))["miou_over"] == "all"


def test_sliding_window_and_tta_run_through_evaluate(trained, tmp_path):
    data, run = trained
    whole = run_eval("--checkpoint", run, "--output-dir", tmp_path / "a", "--no-progress", "-j", 0)
    slide = run_eval("--checkpoint", run, "--output-dir", tmp_path / "b", "--no-progress", "-j", 0,
                     "--mode", "slide", "--crop-size", 64, "--stride", 32)
    assert slide["matrix"] == whole["matrix"]  # one window covers the 32x64 image
    tta = run_eval("--checkpoint", run, "--output-dir", tmp_path / "c", "--no-progress", "-j", 0,
                   "--scales", 0.75, 1.0, "--flip", "-b", 3)
    assert tta["images"] == 3 and 0.0 <= tta["mIoU"] <= 1.0


def test_evaluate_loads_plain_weights(trained, tmp_path):
    data, run = trained
    ck = checkpoint.load_checkpoint(str(run / "checkpoint_last.pkl"))
    weights = tmp_path / "ccnet_tiny.pkl"
    jt.save({"state_dict": ck["model"], "meta": {}}, str(weights))  # the convert_weights.py format
    with pytest.raises(checkpoint.CheckpointError, match="pass --model"):
        run_eval("--checkpoint", weights, "--dataset", "demo", "--data-path", data)
    model_opts = []
    for k, v in ck["config"]["model_opts"].items():
        model_opts += ["--model-opt", f"{k}={json.dumps(v)}"]
    a = run_eval("--checkpoint", weights, "--dataset", "demo", "--data-path", data, "--model", "ccnet_demo",
                 *model_opts, "--output-dir", tmp_path / "w", "--no-progress", "-j", 0)
    b = run_eval("--checkpoint", run, "--output-dir", tmp_path / "r", "--no-progress", "-j", 0)
    assert a["matrix"] == b["matrix"]
    # convert_weights.py metadata names the preset, classes, recurrence and options: no flags needed
    meta = {"arch": "ccnet_demo", "model": "ccnet_demo", "num_classes": 5, "recurrence": 2,
            "model_opts": ck["config"]["model_opts"]}
    jt.save({"state_dict": ck["model"], "meta": meta}, str(weights))
    c = run_eval("--checkpoint", weights, "--dataset", "demo", "--data-path", data,
                 "--output-dir", tmp_path / "m", "--no-progress", "-j", 0)
    assert c["matrix"] == b["matrix"]
    with pytest.raises(checkpoint.CheckpointError, match="trained for 5 classes but the dataset 'cityscapes' has 19"):
        run_eval("--checkpoint", weights, "--dataset", "cityscapes")


def test_evaluate_bad_input(trained, tmp_path):
    data, run = trained
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint not found"):
        run_eval("--checkpoint", tmp_path / "nope.pkl")
    with pytest.raises(checkpoint.CheckpointError, match="trained for 5 classes but the dataset 'cityscapes' has 19"):
        run_eval("--checkpoint", run, "--dataset", "cityscapes")
    with pytest.raises(ValueError, match="unknown dataset preset 'mars'"):
        run_eval("--checkpoint", run, "--dataset", "mars")
    with pytest.raises(ValueError, match="unknown model preset 'nope'"):
        run_eval("--checkpoint", run, "--model", "nope")
    with pytest.raises(checkpoint.CheckpointError, match="holds a ccnet_demo model, not ccnet_resnet50"):
        run_eval("--checkpoint", run, "--model", "ccnet_resnet50")
    with pytest.raises(checkpoint.CheckpointError, match="does not fit the ccnet_demo architecture"):
        run_eval("--checkpoint", run, "--model-opt", "channels=32")
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(checkpoint.CheckpointError, match="cannot read"):
        run_eval("--checkpoint", broken, "--dataset", "demo", "--data-path", data)
    lut = submission_lut(get_preset("cityscapes"))
    assert lut[:19].tolist() == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    with pytest.raises(ValueError, match="'lip' preset has no benchmark server format; known: cityscapes"):
        run_eval("--checkpoint", run, "--dataset", "lip", "--submission", "--output-dir", tmp_path / "lip")
    assert not (tmp_path / "lip").exists()
