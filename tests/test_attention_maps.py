"""Attention maps of a pixel: R=1 stays on its row and column, R=2 reaches the whole image."""
import numpy as np
import pytest
from PIL import Image

import jittor as jt
import visualize_attention
from visualization import attention as va
from engine.checkpoint import model_state, save_checkpoint
from models import build_model


def _random_attention(rng, h, w):
    a = rng.random((h + w - 1, h, w)) + 0.05
    return a / a.sum(0, keepdims=True)


def test_composition_matches_dense_matrix_products():
    rng = np.random.default_rng(0)
    h, w = 4, 6
    maps = [_random_attention(rng, h, w) for _ in range(3)]
    dense = [va.criss_cross_matrix(a) for a in maps]
    np.testing.assert_allclose(dense[0].sum(1), 1.0)
    for y, x in [(0, 0), (2, 3), (3, 5)]:
        p = y * w + x
        composed = va.composed_attention(maps, y, x)
        np.testing.assert_allclose(composed[0].ravel(), dense[0][p])
        np.testing.assert_allclose(composed[1].ravel(), (dense[1] @ dense[0])[p])
        np.testing.assert_allclose(composed[2].ravel(), (dense[2] @ dense[1] @ dense[0])[p])


def test_criss_cross_matrix_layout():
    # pixel (y=1, x=2) of a 3x4 map: slots 0..3 = its row, slots 4, 5 = rows 0 and 2 of its column
    h, w = 3, 4
    a = np.zeros((h + w - 1, h, w))
    a[:, 1, 2] = np.arange(1, h + w)
    row = va.criss_cross_matrix(a)[1 * w + 2].reshape(h, w)
    assert row[1].tolist() == [1, 2, 3, 4]
    assert row[0, 2] == 5 and row[2, 2] == 6
    assert row.sum() == sum(range(1, h + w))


def test_feature_pixel():
    assert va.feature_pixel(0, 0, (64, 96), (8, 12)) == (0, 0)
    assert va.feature_pixel(95, 63, (64, 96), (8, 12)) == (7, 11)
    assert va.feature_pixel(50, 20, (64, 96), (8, 12)) == (2, 6)
    with pytest.raises(ValueError, match="outside"):
        va.feature_pixel(96, 0, (64, 96), (8, 12))


@pytest.fixture(scope="module")
def tiny_model():
    jt.set_global_seed(1)
    model = build_model("ccnet_demo", 3, channels=32, aux_channels=16, neck_channels=32)
    model.head.cca.gamma.assign(jt.array([1.0], dtype="float32"))  # the second pass sees a changed input
    model.eval()
    return model


def test_tiny_model_r1_on_cross_r2_everywhere(tiny_model):
    x = jt.array(np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32))
    with jt.no_grad():
        maps = [m.numpy()[0] for m in tiny_model.attention_maps(x)]
    assert len(maps) == 2
    h, w = 8, 12
    for m in maps:
        assert m.shape == (h + w - 1, h, w)
        np.testing.assert_allclose(m.sum(0), 1.0, rtol=1e-5)
    assert not np.allclose(maps[0], maps[1])
    y, x_ = 3, 7
    r1, r2 = va.composed_attention(maps, y, x_)
    cross = np.zeros((h, w), bool)
    cross[y, :] = True
    cross[:, x_] = True
    assert (r1[cross] > 0).all() and (r1[~cross] == 0).all()
    assert (r2 > 0).all()
    assert r1.sum() == pytest.approx(1.0, abs=1e-5) and r2.sum() == pytest.approx(1.0, abs=1e-5)


def test_visualize_attention_writes_png(tmp_path):
    jt.set_global_seed(2)
    model = build_model("ccnet_demo", 5)
    ckpt = str(tmp_path / "ckpt.pkl")
    save_checkpoint(ckpt, {"model": model_state(model), "config": {"model": "ccnet_demo", "dataset": "demo",
                                                                   "num_classes": 5}})
    img = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "att.png"
    assert visualize_attention.main([ckpt, str(img), "--pixel", "30", "20", "-o", str(out), "--save-npy"]) == 0
    canvas = Image.open(out)
    assert canvas.size[1] > 48 and canvas.size[0] == 3 * 80 + 2 * 4  # image | R=1 | R=2
    composed = np.load(tmp_path / "att.npy")
    assert composed.shape == (2, 6, 10)  # the 1/8 feature map of a 48x80 image
    assert (composed[1] > 0).all() and (composed[0] > 0).sum() == 6 + 10 - 1
    folder = tmp_path / "figs"
    assert visualize_attention.main([ckpt, str(img), "--pixel", "0", "0", "--pixel", "79", "47", "-o", str(folder),
                    "--power", "0.5"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["scene_attention_x0_y0.png", "scene_attention_x79_y47.png"]
    assert visualize_attention.main([ckpt, str(img), "--pixel", "80", "0", "-o", str(folder)]) == 2  # outside the image
