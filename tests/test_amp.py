"""Mixed precision on the CPU: the loss scaler's logic, float16 where it belongs, exact resume.

The GPU half (speed, memory, loss against float32) runs in benchmarks/gpu_run.sh.
Here float16 compute is switched on directly (--amp itself refuses the CPU),
which Jittor runs on the CPU too (slowly).
"""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

import train
import apis.train
from engine.amp import GradScaler
from engine.checkpoint import load_checkpoint
from models import build_model
from models.losses import SegmentationLoss
from models.layers import BatchNorm
from models.layers import Conv2d
from models.precision import set_float16
from seg_fixtures import train_args, write_blocks_dataset

TINY = dict(backbone_kwargs={"embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]},
            channels=16, aux_channels=8, neck_channels=16)


@pytest.fixture
def float16():
    set_float16(True)
    yield
    set_float16(False)


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = jt.array(np.ones((3,), np.float32))

    def execute(self, x):
        return (self.w * x).sum()


def test_overflow_skips_the_step_and_lowers_the_scale():
    model = Linear()
    opt = jt.optim.SGD(model.parameters(), 0.1)
    scaler = GradScaler(init_scale=1024.0, growth_interval=3)
    x = jt.array(np.array([1.0, 2.0, 3.0], np.float32))
    assert scaler.step(opt, model(x) * float("inf")) is False
    np.testing.assert_array_equal(model.w.numpy(), [1, 1, 1])          # no update
    assert scaler.scale == 512.0 and scaler.skipped == 1 and scaler.skipped_in_a_row == 1
    assert scaler.step(opt, model(x)) is True                          # the stale inf gradients are gone
    np.testing.assert_allclose(model.w.numpy(), [0.9, 0.8, 0.7], rtol=1e-6)  # unscaled: lr * x
    assert scaler.skipped_in_a_row == 0 and scaler.good_steps == 1
    for _ in range(2):
        scaler.step(opt, model(x))
    assert scaler.scale == 1024.0 and scaler.good_steps == 0            # grew after 3 good steps
    scaler.scale = 2.0 ** -14
    scaler.update(False)
    assert scaler.scale == 2.0 ** -14                                    # never below min_scale


def test_scaler_state_round_trip():
    a = GradScaler(init_scale=64.0, growth_interval=5)
    for finite in (True, True, False, True):
        a.update(finite)
    b = GradScaler()
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() and b.scale == 32.0 and b.good_steps == 1
    with pytest.raises(ValueError, match="positive"):
        b.load_state_dict(dict(a.state_dict(), scale=float("nan")))


def test_float16_where_it_is_safe_float32_where_it_is_not(float16, monkeypatch):
    jt.set_global_seed(0)
    model = build_model("ccnet_demo", 5, **TINY)
    seen = {}

    def spy(module, name):
        original = module.execute

        def execute(*args, **kwargs):
            out = original(*args, **kwargs)
            seen.setdefault(name, str(out.dtype))
            return out
        monkeypatch.setattr(module, "execute", execute)

    spy(model.head.conva[0], "conv")
    spy(model.head.conva[1], "bn")
    spy(model.backbone.norm1, "layer_norm")
    import models.ops.cca as cca
    conv_inputs = []
    original_conv2d = nn.conv2d
    monkeypatch.setattr(nn, "conv2d", lambda x, w, *a: conv_inputs.append((x.dtype, w.dtype))
                        or original_conv2d(x, w, *a))
    energies = []
    original_weight = cca.weight_kernel  # the energies of criss_cross_attention's kernel path
    monkeypatch.setattr(cca, "weight_kernel", lambda q, k: energies.append((q.dtype, k.dtype))
                        or original_weight(q, k))
    model.train()
    x = jt.array(np.random.default_rng(0).normal(size=(2, 3, 32, 64)).astype(np.float32))
    outputs = model(x)
    loss, parts = SegmentationLoss(5)(outputs, jt.zeros((2, 32, 64), "int32"))
    assert conv_inputs and all(str(x) == str(w) == "float16" for x, w in conv_inputs)  # every conv in float16
    assert seen == {"conv": "float32", "bn": "float32", "layer_norm": "float32"}    # float32 between layers
    assert energies and all(str(q) == str(k) == "float32" for q, k in energies)
    assert str(loss.dtype) == "float32" and np.isfinite(parts["loss"])
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = jt.optim.SGD(model.parameters(), 0.01, momentum=0.9)
    assert GradScaler().step(opt, loss)
    after = model.state_dict()
    assert all(str(v.dtype) == "float32" for v in after.values())     # float32 master weights
    assert not np.array_equal(after["head.conva.0.weight"].numpy(), before["head.conva.0.weight"])
    assert isinstance(model.head.conva[0], Conv2d) and isinstance(model.backbone.block1[0].norm1, BatchNorm)


def test_amp_run_resumes_exactly_with_its_scaler(tmp_path, monkeypatch):
    """--amp through train.py (float16 on the CPU, for the test): 4 iterations == 2, stop, resume 2."""
    def cpu_amp(no_cuda=False, amp=False):
        set_float16(amp)
        return "cpu"
    monkeypatch.setattr(apis.train, "set_device", cpu_amp)
    data = write_blocks_dataset(str(tmp_path / "data"), num_train=4, num_val=2)

    def run(args):
        return apis.train.run(train.options_from_args(train.get_args_parser().parse_args([str(a) for a in args])))
    try:
        run(train_args(data, tmp_path / "full", "--iters", 4, "--amp"))
        run(train_args(data, tmp_path / "half", "--iters", 4, "--amp", "--stop-after", 2))
        run(["--resume", tmp_path / "half", "--no-progress", "-j", 0])
    finally:
        set_float16(False)
    a, b = (load_checkpoint(str(tmp_path / n / "checkpoint_last.pkl")) for n in ("full", "half"))
    assert a["iter"] == b["iter"] == 4 and a["scaler"] == b["scaler"] and a["scaler"]["scale"] > 0
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    assert a["config"]["amp"] is True


def test_a_resumed_run_keeps_its_precision_unless_told(tmp_path, monkeypatch):
    """Resuming a mixed-precision run keeps --amp (refused on the CPU with the fix named); --no-amp drops it."""
    data = write_blocks_dataset(str(tmp_path / "data"), num_train=4, num_val=2)
    monkeypatch.setattr(apis.train, "set_device", lambda no_cuda=False, amp=False: set_float16(amp) or "cpu")
    try:
        apis.train.run(train.options_from_args(train.get_args_parser().parse_args(
            [str(a) for a in train_args(data, tmp_path / "run", "--iters", 4, "--amp", "--stop-after", 2)])))
    finally:
        set_float16(False)
    monkeypatch.undo()
    monkeypatch.setattr(jt, "has_cuda", False)  # the same answer on a GPU machine

    def resume(*extra):
        args = train.get_args_parser().parse_args(["--resume", str(tmp_path / "run"), "--no-progress", "-j", "0",
                                                   *extra])
        return apis.train.run(train.options_from_args(args))
    with pytest.raises(ValueError, match=r"needs a CUDA GPU.*--no-amp"):
        resume()
    resume("--no-amp")
    last = load_checkpoint(str(tmp_path / "run" / "checkpoint_last.pkl"))
    assert last["iter"] == 4 and last["config"]["amp"] is False and last["scaler"] is None
