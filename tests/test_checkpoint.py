"""apis.model_files.load_model: the one way every script gets a model from a file."""
import numpy as np
import pytest

import jittor as jt
from apis.model_files import load_model, read_model_file
from engine.checkpoint import CheckpointError, model_state, save_checkpoint
from models import build_model
from utils.weight_files import save_weights

TINY = dict(backbone_kwargs={"embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]},
            channels=16, aux_channels=8, neck_channels=16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    jt.set_global_seed(3)
    model = build_model("ccnet_demo", 5, recurrence=1, **TINY)
    model.head.cca.gamma.assign(jt.array([0.25], dtype="float32"))
    state = model_state(model)
    folder = tmp_path_factory.mktemp("files")
    run = folder / "run"
    train_ck = str(run / "checkpoint_last.pkl")
    save_checkpoint(train_ck, {"version": 1, "model": state, "iter": 4,
                               "config": {"model": "ccnet_demo", "dataset": "demo", "num_classes": 5,
                                          "recurrence": 1, "model_opts": TINY}})
    converted = str(folder / "ccnet_demo_5cls.pkl")
    save_weights(converted, state, {"arch": "ccnet_demo", "num_classes": 5, "recurrence": 1, "overrides": TINY})
    backbone = str(folder / "van.pkl")
    save_weights(backbone, {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")},
                 {"arch": "van_b0"})
    return {"model": model, "state": state, "run": str(run), "train": train_ck, "converted": converted,
            "backbone": backbone}


def _same_weights(net, state):
    got = model_state(net)
    assert got.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(got[k], state[k], err_msg=k)


@pytest.mark.parametrize("which", ["train", "run", "converted"])
def test_loads_every_kind_of_model_file(files, which):
    net, info = load_model(files[which])
    assert (info.model, info.num_classes, info.recurrence) == ("ccnet_demo", 5, 1)
    assert info.kind == ("weights file" if which == "converted" else "train.py checkpoint")
    assert info.dataset == (None if which == "converted" else "demo")
    assert not net.is_training() and net.recurrence == 1
    _same_weights(net, files["state"])
    x = jt.array(np.random.default_rng(0).standard_normal((1, 3, 32, 48)).astype(np.float32))
    with jt.no_grad():
        np.testing.assert_allclose(net(x).numpy(), files["model"].eval()(x).numpy(), rtol=1e-5, atol=1e-6)


def test_overrides_and_their_checks(files):
    net, info = load_model(files["converted"], dataset="demo", recurrence=2)
    assert info.recurrence == 2 and info.dataset == "demo" and info.preset.num_classes == 5
    with pytest.raises(CheckpointError, match="was trained for 5 classes, not 3"):
        load_model(files["train"], num_classes=3)
    with pytest.raises(CheckpointError, match="trained for 5 classes but the dataset 'cityscapes' has 19"):
        load_model(files["converted"], dataset="cityscapes")
    with pytest.raises(CheckpointError, match="holds a ccnet_demo model, not ccnet_van_b0"):
        load_model(files["train"], model="ccnet_van_b0")
    with pytest.raises(CheckpointError, match="does not fit the ccnet_demo architecture"):
        load_model(files["train"], model_opts={})
    with pytest.raises(ValueError, match="unknown dataset preset 'mars'"):
        load_model(files["train"], dataset="mars")


def test_backbone_weights_are_explained(files):
    with pytest.raises(CheckpointError, match="looks like backbone weights.*train.py --pretrained"):
        load_model(files["backbone"])
    mf = read_model_file(files["backbone"])
    assert mf.kind == "weights file" and not mf.has_head and mf.settings["arch"] == "van_b0"


def test_missing_and_unreadable(files, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(str(tmp_path / "nope.pkl"))
    with pytest.raises(CheckpointError, match="no checkpoint_last.pkl"):
        load_model(str(tmp_path))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04 definitely not a pickle")
    with pytest.raises(CheckpointError, match="cannot read .* as a train.py checkpoint or a weights file"):
        load_model(str(bad))
