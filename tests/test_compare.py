"""compare.py / apis/compare.py: two tiny trained and evaluated runs compared; every number in the
report read back from the runs' files, the figures valid PNGs, bad input refused with one clear line."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

import compare
import evaluate
import train
from datasets import get_preset
import apis.evaluate
import apis.train
from models.complexity import count_flops, count_parameters
from models import build_model
from seg_fixtures import train_args, write_blocks_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the tiny model (seeds 0 and 1, 6 iterations, validation every 2), both evaluated."""
    root = tmp_path_factory.mktemp("compare")
    data = write_blocks_dataset(str(root / "data"), num_train=4, num_val=2)
    folders = []
    for seed in (0, 1):
        out = root / f"seed{seed}"
        args = train_args(data, out, "--iters", "6", "--eval-interval", "2", "--seed", str(seed))
        apis.train.run(vars(train.get_args_parser().parse_args(args)))
        apis.evaluate.run(vars(evaluate.get_args_parser().parse_args(
            ["--checkpoint", str(out), "--no-progress", "-j", "0"])))
        folders.append(out)
    return data, folders


def read_rows(folder):
    return [json.loads(line) for line in open(folder / "log.jsonl")]


def compare_main(capsys, *args):
    status = compare.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_report_holds_the_numbers_of_the_runs_files(runs, tmp_path, capsys):
    data, (a, b) = runs
    out = tmp_path / "report"
    status, printed, err = compare_main(capsys, a, b, "--labels", "A", "B", "-o", out)
    assert status == 0, err
    report = json.load(open(out / "report.json"))
    assert report["dataset"] == "demo" and report["split"] == "val"
    assert [r["label"] for r in report["runs"]] == ["A", "B"]
    results = {}
    for folder, row in zip((a, b), report["runs"]):
        log = read_rows(folder)
        res = json.load(open(folder / "eval_val" / "results.json"))
        results[row["label"]] = res
        config = json.load(open(folder / "config.json"))
        assert row["iterations"] == [r["iter"] for r in log if "loss" in r][-1] == 6
        val = [r["val/mIoU"] for r in log if "val/mIoU" in r]
        assert len(val) == 3 and row["best_mIoU"] == max(val)
        assert row["final_mIoU"] == res["mIoU"] and row["aAcc"] == res["aAcc"] and row["mAcc"] == res["mAcc"]
        model = build_model(config["model"], config["num_classes"], **config["model_opts"])
        params = count_parameters(model)
        assert row["parameters"] == {k: params[k] for k in ("total", "backbone", "head")}
        # whole-image evaluation of the 32x64 validation images
        assert row["flops_input"] == [32, 64] and row["gflops"] == count_flops(model, (32, 64))["gflops"]
        assert row["eval"] == {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": False}
        assert row["model"] == "ccnet_demo" and row["backbone"] == "VAN 8-16-24-32"
        # the printed table shows the same numbers
        line = next(x for x in printed.splitlines() if x.startswith(row["label"] + " "))
        for value in (f"{100 * res['mIoU']:.2f}", f"{100 * res['aAcc']:.2f}", f"{100 * res['mAcc']:.2f}",
                      f"{100 * max(val):.2f}", f"{params['total'] / 1e6:.3f}", f"{row['gflops']:.4g}", "32x64"):
            assert value in line, (value, line)
    # per-class IoU: B - A, largest first, every class once
    classes = list(get_preset("demo").class_names)
    table = report["per_class"]
    assert sorted(r["class"] for r in table) == sorted(classes)
    for r in table:
        ia, ib = results["A"]["per_class"][r["class"]]["IoU"], results["B"]["per_class"][r["class"]]["IoU"]
        assert r["IoU"] == {"A": ia, "B": ib} and r["diff"]["B"] == pytest.approx(ib - ia, abs=1e-12)
    diffs = [r["diff"]["B"] for r in table]
    assert diffs == sorted(diffs, reverse=True)
    lines = printed.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("per-class IoU")) + 3
    assert [x.split()[0] for x in lines[start:start + len(classes)]] == [r["class"] for r in table]
    assert f"{100 * diffs[0]:+.2f}" in lines[start]


def test_figures_and_markdown(runs, tmp_path, capsys):
    data, (a, b) = runs
    out = tmp_path / "report"
    status, _, err = compare_main(capsys, a, b, "--labels", "seed0", "seed1", "-o", out)
    assert status == 0, err
    for name in ("curves.png", "per_class.png"):
        raw = (out / name).read_bytes()
        assert raw[:8] == PNG_SIGNATURE and len(raw) > 20_000, (name, len(raw))
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 400, im.size
    md = (out / "report.md").read_text()
    assert "](curves.png)" in md and "](per_class.png)" in md
    assert f"python compare.py {a} {b} --labels seed0 seed1 -o {out}" in md
    assert "| seed0 | ccnet_demo |" in md and "| class | IoU seed0 | IoU seed1 | seed1 - seed0 |" in md
    assert not [n for n in os.listdir(out) if ".tmp" in n]


def test_an_evaluation_folder_finds_its_run(runs, tmp_path, capsys):
    data, (a, b) = runs
    status, printed, err = compare_main(capsys, a / "eval_val", b, "--labels", "A", "B", "-o", tmp_path / "r")
    assert status == 0, err
    row = json.load(open(tmp_path / "r" / "report.json"))["runs"][0]
    assert row["run_dir"] == str(a) and row["eval_dir"] == str(a / "eval_val") and row["iterations"] == 6


def test_sliding_window_and_a_checkpoint_outside_its_run(runs, tmp_path, capsys):
    data, (a, b) = runs
    config = json.load(open(b / "config.json"))
    model = build_model(config["model"], config["num_classes"], **config["model_opts"])
    # a sliding-window evaluation: FLOPs at the window
    slide = tmp_path / "slide"
    apis.evaluate.run(vars(evaluate.get_args_parser().parse_args(
        ["--checkpoint", str(b), "--mode", "slide", "--crop-size", "32", "--stride", "16",
         "--output-dir", str(slide), "--no-progress", "-j", "0"])))
    # a checkpoint copied out of its run folder, evaluated there: no curves, the build options from the file
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(b / "checkpoint_last.pkl", alone / "model.pkl")
    apis.evaluate.run(vars(evaluate.get_args_parser().parse_args(
        ["--checkpoint", str(alone / "model.pkl"), "--data-path", str(data), "--no-progress", "-j", "0"])))
    status, printed, err = compare_main(capsys, a, slide, alone / "eval_val", "--labels", "A", "S", "X",
                                        "-o", tmp_path / "r")
    assert status == 0, err
    rows = json.load(open(tmp_path / "r" / "report.json"))["runs"]
    assert rows[1]["flops_input"] == [32, 32] and rows[1]["flops_input_what"] == "sliding-window crop"
    assert rows[1]["gflops"] == count_flops(model, (32, 32))["gflops"] and rows[1]["eval"]["mode"] == "slide"
    assert rows[1]["run_dir"] == str(b) and rows[1]["iterations"] == 6
    assert rows[2]["run_dir"] is None and rows[2]["iterations"] is None and rows[2]["best_mIoU"] is None
    assert rows[2]["parameters"]["total"] == count_parameters(model)["total"]
    assert rows[2]["flops_input"] == [32, 64]  # the data path recorded in the checkpoint
    assert rows[2]["final_mIoU"] == json.load(open(alone / "eval_val" / "results.json"))["mIoU"]
    assert "not in a train.py run folder" in printed
    # --input-size overrides the size
    status, _, err = compare_main(capsys, a, b, "--labels", "A", "B", "--input-size", "64", "96", "-o", tmp_path / "s")
    assert status == 0, err
    row = json.load(open(tmp_path / "s" / "report.json"))["runs"][0]
    assert row["flops_input"] == [64, 96] and row["gflops"] == count_flops(model, (64, 96))["gflops"]


def test_refusals(runs, tmp_path, capsys):
    data, (a, b) = runs
    # another split: refused, naming both
    other = tmp_path / "ev_train"
    apis.evaluate.run(vars(evaluate.get_args_parser().parse_args(
        ["--checkpoint", str(b), "--split", "train", "--output-dir", str(other), "--no-progress", "-j", "0"])))
    status, _, err = compare_main(capsys, a, other, "--labels", "A", "B", "-o", tmp_path / "r1")
    assert status == 2 and err.count("\n") == 1
    assert "different data" in err and "demo/val" in err and "demo/train" in err
    # not a run
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = compare_main(capsys, a, empty, "-o", tmp_path / "r2")
    assert status == 2 and "is neither a train.py run folder" in err and str(empty) in err
    # a run without evaluation results
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(a / "config.json", bare / "config.json")
    (bare / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in read_rows(a) if "loss" in r))
    status, _, err = compare_main(capsys, a, bare, "--labels", "A", "B", "-o", tmp_path / "r3")
    assert status == 2 and "has no evaluation results" in err and f"python evaluate.py --checkpoint {bare}" in err
    # the same default label (both are ccnet_demo), too few labels, repeated labels
    status, _, err = compare_main(capsys, a, b, "-o", tmp_path / "r4")
    assert status == 2 and "would both be labelled 'ccnet_demo'" in err and "--labels" in err
    status, _, err = compare_main(capsys, a, b, "--labels", "A", "-o", tmp_path / "r5")
    assert status == 2 and "1 label(s) for 2 runs" in err
    status, _, err = compare_main(capsys, a, b, "--labels", "A", "A", "-o", tmp_path / "r6")
    assert status == 2 and "distinct" in err
    # an output folder that cannot be written, found before anything else
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, err = compare_main(capsys, a, empty, "-o", blocker)
    assert status == 2 and "cannot write to" in err and "-o/--output-dir" in err
    for name in ("r1", "r2", "r3", "r4", "r5", "r6"):
        assert not os.listdir(tmp_path / name)  # nothing written


def test_help():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "compare.py"), "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "--labels" in result.stdout and "RUN" in result.stdout
