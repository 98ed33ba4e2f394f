"""Files that are not what their names say: lossy labels, weights with NaN or Inf (read or written; the
converter's refusal is in test_convert_weights.py)."""
import os

import numpy as np
import pytest
from PIL import Image

import train
from datasets import DatasetError
from datasets.base import open_label
from seg_fixtures import train_args, write_blocks_dataset
from engine.checkpoint import load_checkpoint
from utils.fileio import save_pickle
from utils.weight_files import NonFiniteWeightsError, read_weights, save_weights

def test_a_jpeg_named_png_is_refused_as_a_label(tmp_path):
    label = np.zeros((32, 64), np.uint8)
    label[:, 20:40] = 7
    lossless = tmp_path / "ok.png"
    Image.fromarray(label).save(lossless)
    assert (open_label(str(lossless))[1] == label).all()
    renamed = tmp_path / "label_gtFine_labelIds.png"
    Image.fromarray(label).save(renamed, format="JPEG", quality=90)
    decoded = np.array(Image.open(renamed))
    assert (decoded != label).any()  # what the check prevents: ids changed along the edges
    with pytest.raises(DatasetError, match=r"is a JPEG file: lossy compression .*must be lossless"):
        open_label(str(renamed))


def test_weights_with_nan_are_neither_written_nor_read(tmp_path):
    state = {"a.weight": np.ones((2, 2), np.float32), "b.bias": np.array([0.0, np.inf], np.float32),
             "c.num_batches_tracked": np.array(3)}
    with pytest.raises(NonFiniteWeightsError, match=r"refusing to write .*1 tensor\(s\) hold NaN or Inf .*b\.bias"):
        save_weights(str(tmp_path / "w.pkl"), state, {})
    assert not os.listdir(tmp_path)
    save_pickle(str(tmp_path / "other.pkl"), state)  # a plain {name: array} pickle written elsewhere
    with pytest.raises(NonFiniteWeightsError, match=r"other\.pkl cannot be used: .*b\.bias"):
        read_weights(str(tmp_path / "other.pkl"))


def test_pretrained_weights_with_nan_stop_before_any_step(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    data = write_blocks_dataset(str(tmp_path / "data"), num_train=2, num_val=1)
    out = tmp_path / "run"
    status = train.main([str(a) for a in train_args(data, out, "--iters", 1)])
    assert status == 0
    state = {k: torch.from_numpy(np.array(v)) for k, v in load_checkpoint(str(out / "checkpoint_last.pkl"))["model"].items()}
    key = next(k for k, v in state.items() if v.dtype == torch.float32)
    state[key][...] = float("nan")
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    capsys.readouterr()
    status = train.main([str(a) for a in train_args(data, tmp_path / "run2", "--iters", 1, "--weights", bad)])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2 and line.startswith(f"error: {bad} cannot be used: 1 tensor(s) hold NaN or Inf values ({key})")
    assert not os.path.exists(tmp_path / "run2" / "log.jsonl")  # stopped before training
