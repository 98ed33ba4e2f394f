"""Users of the official code: their commands, their .pth files, reproducible runs, readable logs.

The four commands of the official CCNet README and of an earlier Jittor port
run here as written, except for paths, iteration counts, and (for the runs
that train) the crop and batch size: a ResNet-101 CCNet at 769x769 x 8 does
not fit a CI machine, so those runs use a small crop, while ``--print-config``
shows that the unchanged command resolves to exactly the official setting.
The .pth files are written with torch: a ResNet-101 in the MIT layout (with
its ImageNet classifier), a VAN-B3 in the official layout (under
``state_dict``, with its head) and a whole official CCNet snapshot.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import evaluate
import train
from datasets import demo
import apis.train
from engine.checkpoint import load_checkpoint
from models import build_model
from models.resnet import resnet101
from models.van import van_b3
from seg_fixtures import train_args, write_blocks_dataset

torch = pytest.importorskip("torch", reason="the .pth files of these tests are written with torch.save")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save(path, state, wrap=None):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    torch.save({wrap: tensors} if wrap else tensors, str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    data = str(root / "cityscapes")
    demo.write_cityscapes(data, num_train=4, num_val=2, height=64, width=128)
    r101 = {k: v.numpy() for k, v in resnet101(stem="deep").state_dict().items()}
    r101.update({"fc.weight": np.zeros((1000, 2048), np.float32), "fc.bias": np.zeros(1000, np.float32)})
    van = {k: v.numpy() for k, v in van_b3().state_dict().items()}
    van.update({"head.weight": np.zeros((1000, 512), np.float32), "head.bias": np.zeros(1000, np.float32)})
    ccnet = build_model("ccnet_resnet101", 19)
    snapshot = {(k[len("backbone."):] if k.startswith("backbone.") else k): v.numpy()
                for k, v in ccnet.state_dict().items()}
    os.makedirs(root / "dataset")
    os.makedirs(root / "snapshots")
    return {"root": root, "data": data,
            "r101": _save(root / "dataset" / "resnet101-imagenet.pth", r101),
            "van": _save(root / "dataset" / "van_large.pth", van, wrap="state_dict"),
            "snapshot": _save(root / "snapshots" / "CS_scenes_60000.pth", snapshot)}


def _script(name, args, cwd):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, name), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="2"))
    return proc.returncode, proc.stdout, proc.stderr


def official_train(f, *changes):
    return ["--data-dir", f["data"], "--random-mirror", "--random-scale", "--restore-from", f["r101"],
            "--gpu", "0,1,2,3", "--learning-rate", "1e-2", "--input-size", "769,769", "--weight-decay", "1e-4",
            "--batch-size", "8", "--num-steps", "60000", "--recurrence", "2", "--ohem", "1", "--ohem-thres", "0.7",
            "--ohem-keep", "100000", *changes]


def port_train(f, *changes):
    return ["--data-dir", f["data"], "--restore-from", f["van"], "--start", "0", "--max-iter", "60000",
            "--random-mirror", "--random-scale", "--learning-rate", "1e-2", "--input-size", "512",
            "--weight-decay", "1e-4", "--batch-size", "8", "--num-steps", "60000", "--save-pred-every", "2000",
            "--recurrence", "2", "--model", "van", "--dataset", "cityscape", "--num-classes", "19",
            "--van-size", "van_large", *changes]


def test_their_train_commands_resolve_to_their_settings(files):
    status, out, err = _script("train.py", official_train(files, "--print-config"), files["root"])
    assert status == 0, err
    cfg = json.loads(out)
    assert (cfg["model"], cfg["dataset"], cfg["data_path"]) == ("ccnet_resnet101", "cityscapes", files["data"])
    assert (cfg["crop_size"], cfg["batch_size"], cfg["iters"], cfg["lr"], cfg["weight_decay"]) == \
        ([769, 769], 8, 60000, 0.01, 1e-4)
    assert (cfg["recurrence"], cfg["ohem"], cfg["ohem_thresh"], cfg["restore_from"]) == (2, True, 0.7, files["r101"])
    assert cfg["ohem_min_kept"] == 400000  # 100000 per GPU in the official code, 4 GPUs
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2 and "--ohem-min-kept 400000" in notes[1] and "mpirun -np 4" in notes[0]
    assert not [line for line in err.splitlines() if line and not line.startswith("note: ")]

    status, out, err = _script("train.py", port_train(files, "--print-config"), files["root"])
    assert status == 0, err
    cfg = json.loads(out)
    assert (cfg["model"], cfg["dataset"], cfg["crop_size"], cfg["iters"], cfg["snapshot_interval"]) == \
        ("ccnet_van_b3", "cityscapes", [512, 512], 60000, 2000)
    assert (cfg["expect_num_classes"], cfg["restore_from"]) == (19, files["van"]) and err == ""


def test_their_commands_run_with_their_pth_files(files):
    """All four commands; the training runs with a small crop and batch (see the module docstring)."""
    root = files["root"]
    small = ["--input-size", "65,65", "--batch-size", "2", "-j", "0", "--no-progress"]
    status, out, err = _script("train.py", official_train(files, "--num-steps", "1", "--snapshot-dir",
                                                          root / "r101_run", *small), root)
    assert status == 0, err[-3000:]
    assert out.count("note: --restore-from") == 1 and "used as --pretrained (ImageNet backbone weights)" in out
    ck = load_checkpoint(str(root / "r101_run" / "checkpoint_last.pkl"))
    assert ck["iter"] == 1 and ck["config"]["model"] == "ccnet_resnet101" and ck["config"]["ohem"] is True

    status, out, err = _script("train.py", port_train(files, "--max-iter", "1", "--num-steps", "1",
                                                      "--save-pred-every", "1", "--snapshot-dir", root / "van_run",
                                                      "--input-size", "64", "--batch-size", "2", "-j", "0",
                                                      "--no-progress"), root)
    assert status == 0, err[-3000:]
    van_run = load_checkpoint(str(root / "van_run" / "checkpoint_last.pkl"))
    assert van_run["config"]["model"] == "ccnet_van_b3" and van_run["iter"] == 1

    # the official evaluate.py command, with the official snapshot (converted in memory)
    status, out, err = _script("evaluate.py", ["--data-dir", files["data"], "--restore-from", files["snapshot"],
                                               "--gpu", "0", "--recurrence", "2", "--no-progress", "-j", "0"], root)
    assert status == 0, err[-3000:]
    result = json.load(open(root / "snapshots" / "eval_val" / "results.json"))
    assert result["images"] == 2 and result["settings"]["model"] == "ccnet_resnet101"
    assert (result["settings"]["mode"], result["settings"]["crop_size"]) == ("slide", [769, 769])

    # the earlier port's evaluate.py command, on the run it trained
    status, out, err = _script("evaluate.py", ["--restore-from", root / "van_run" / "checkpoint_last.pkl",
                                               "--input-size", "512", "--recurrence", "2", "--model", "van",
                                               "--dataset", "cityscape", "--num-classes", "19", "--ignore-label",
                                               "255", "--no-progress", "-j", "0"], root)
    assert status == 0, err[-3000:]
    result = json.load(open(root / "van_run" / "eval_val" / "results.json"))
    assert result["settings"]["model"] == "ccnet_van_b3"
    assert (result["settings"]["crop_size"], result["settings"]["stride"]) == ([512, 512], [342, 342])


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return write_blocks_dataset(str(tmp_path_factory.mktemp("blocks")), num_train=6, num_val=3)


def run(args):
    return apis.train.run(train.options_from_args(train.get_args_parser().parse_args([str(a) for a in args])))


def test_aliases_conflicts_and_nearest_flag(blocks, tmp_path, capsys):
    parse = train.get_args_parser().parse_args
    opts = train.options_from_args(parse(["--learning-rate", "0.02", "--num-steps", "5", "--snapshot-dir", "x",
                                          "--data-list", "train.lst", "--ohem", "0", "--model", "ccnet"]))
    assert (opts["lr"], opts["iters"], opts["output_dir"], opts["list_file"], opts["ohem"], opts["model"]) == \
        (0.02, 5, "x", "train.lst", False, "ccnet_resnet101")
    with pytest.raises(ValueError, match="--learning-rate 0.02 and --lr 0.01 disagree"):
        train.options_from_args(parse(["--learning-rate", "0.02", "--lr", "0.01"]))
    with pytest.raises(ValueError, match="--num-steps and --max-iter disagree"):
        train.options_from_args(parse(["--num-steps", "5", "--max-iter", "6"]))
    with pytest.raises(ValueError, match="--start 100: .*--resume"):
        train.options_from_args(parse(["--start", "100"]))
    for bad, hint in (("--num-step", "--num-steps"), ("--learning_rate", "--learning-rate"),
                      ("--ohem-thersh", "--ohem-thresh"), ("--ouput-dir", "--output-dir"),
                      ("--save-interval", "--snapshot-interval"), ("--checkpoint_interval", "--snapshot-interval")):
        with pytest.raises(SystemExit) as exc:
            parse([bad, "1"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"error: unknown flag {bad}; did you mean {hint}? "
                                            f"(see {os.path.basename(sys.argv[0])} --help)"]
    # --num-classes / --ignore-label are checked against the dataset preset
    with pytest.raises(ValueError, match="--num-classes 21 does not match the demo preset"):
        run(train_args(blocks, tmp_path / "a", "--iters", 1, "--num-classes", 21))
    run(train_args(blocks, tmp_path / "b", "--iters", 1, "--num-classes", 5, "--ignore-label", 255))
    from cli.official import check_classes
    from datasets import get_preset
    check_classes(get_preset("ade20k"), 151, 0)  # the port's ADE20K setting = our 150 classes + shift
    with pytest.raises(ValueError, match="ignore label 255"):
        check_classes(get_preset("ade20k"), 150, 0)


def test_help_lists_our_names_once(capsys):
    for script in (train, evaluate):
        with pytest.raises(SystemExit):
            script.get_args_parser().parse_args(["--help"])
        text = capsys.readouterr().out
        listed = re.findall(r"^\s+(-\S+)", text, re.M)   # the option entries of the help
        assert "--checkpoint" in listed or "--lr" in listed
        for theirs in ("--learning-rate", "--restore-from", "--input-size", "--num-steps", "--data-dir"):
            assert theirs not in listed
        assert "(default: the preset's) (default" not in text and "(default: None)" not in text
        assert not re.search(r"\(default [^)]*\) \(default", text)


def test_config_round_trip_is_bit_for_bit(blocks, tmp_path):
    a = tmp_path / "a"
    run(train_args(blocks, a, "--iters", 3, "--seed", 7))
    run(["--config", a / "config.json", "--output-dir", tmp_path / "b", "--no-progress"])
    ca, cb = (load_checkpoint(str(p / "checkpoint_last.pkl")) for p in (a, tmp_path / "b"))
    assert ca["iter"] == cb["iter"] == 3
    for key in ca["model"]:
        np.testing.assert_array_equal(ca["model"][key], cb["model"][key], err_msg=key)
    cfg = json.load(open(a / "config.json"))
    assert os.path.isabs(cfg["data_path"]) and os.path.isabs(cfg["output_dir"])
    # flags given with --config override it; --print-config writes nothing
    printed = run(["--config", a / "config.json", "--iters", 5, "--output-dir", tmp_path / "c", "--print-config"])
    assert printed["iters"] == 5 and printed["seed"] == 7 and not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="not a train.py config.json"):
        (tmp_path / "x.json").write_text("[1, 2]")
        run(["--config", tmp_path / "x.json"])


def test_checkpoint_pruning_best_and_the_text_log(blocks, tmp_path):
    out = tmp_path / "run"
    run(train_args(blocks, out, "--iters", 8, "--snapshot-interval", 1, "--keep-checkpoints", 2,
                   "--eval-interval", 2))
    names = sorted(n for n in os.listdir(out) if n.endswith(".pkl"))
    rows = [json.loads(x) for x in open(out / "log.jsonl")]
    val = {r["iter"]: r["val/mIoU"] for r in rows if "val/mIoU" in r}
    best_iter = max(val, key=lambda i: (val[i], -i))   # the first of the highest
    numbered = [n for n in names if re.fullmatch(r"checkpoint_\d+\.pkl", n)]
    assert numbered == ["checkpoint_000007.pkl", "checkpoint_000008.pkl"]
    assert "checkpoint_last.pkl" in names and "checkpoint_best.pkl" in names
    best = load_checkpoint(str(out / "checkpoint_best.pkl"))
    assert best["iter"] == best_iter and best["best"] == {"mIoU": pytest.approx(val[best_iter]), "iter": best_iter}
    text = open(out / "train.log").read().splitlines()
    steps = [line for line in text if re.search(r" iter \d+/8 epoch ", line)]
    assert len(steps) == 8
    for line in steps:
        assert re.search(r"\| loss \d+\.\d{4} \(main \d+\.\d{4} aux \d+\.\d{4}\) \| lr \d\.\d{3}e-0\d \| "
                         r"\d+\.\d{3} s/it \(data \d+\.\d{3} s\) \| eta \d+:\d\d:\d\d \| RSS \d+ MB$", line), line
    assert sum(" | val mIoU " in line for line in text) == 4 and text[-1].split(" ", 2)[2].startswith("done:")
    # a resume drops the text lines past the iteration it continues from
    run(["--resume", out / "checkpoint_000007.pkl", "--no-progress"])
    text = open(out / "train.log").read().splitlines()
    assert [int(m.group(1)) for line in text for m in [re.search(r" iter (\d+)/8 epoch", line)] if m] == \
        list(range(1, 9))


def test_jittor_information_lines_are_hidden_unless_verbose(blocks, tmp_path):
    for verbose in (False, True):
        args = train_args(blocks, tmp_path / f"v{verbose}", "--iters", 1) + (["--verbose"] if verbose else [])
        status, out, err = _script("train.py", args, tmp_path)
        assert status == 0, err[-2000:]
        shown = re.findall(r"\[i \d{4} ", out + err)
        assert bool(shown) == verbose
        assert ("\x1b[" in out + err) == verbose
    log = open(tmp_path / "vFalse" / "train.log").read()
    assert "\x1b[" not in log and "[i " not in log
