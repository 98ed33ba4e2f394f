"""Nothing lost, nothing silently wrong, no code run from a file: bad input as a new user gives it.

Each test names the problem it guards against; every one of them failed on
the code before the fix (the closing note of issue 12 lists before/after).
"""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import demo
import evaluate
import predict
import train
from engine import checkpoint
from engine.checkpoint import load_checkpoint
from utils.weight_files import save_weights
from seg_fixtures import run_train, train_args, write_blocks_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return write_blocks_dataset(str(tmp_path_factory.mktemp("blocks")), num_train=6, num_val=3)


run = run_train  # train.py's run in this process (errors raised)


def cli(main, args, capsys):
    """A script's main(): (exit status, stderr)."""
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def snapshot_of(folder):
    """File name -> bytes of every file under ``folder``."""
    out = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and "Caught SIGINT" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


# --------------------------------------------------------------------------- data loss

def test_rerun_into_a_used_run_folder_is_refused_and_loses_nothing(blocks, tmp_path, capsys):
    out = tmp_path / "run"
    run(train_args(blocks, out, "--iters", 2, "--snapshot-interval", 1))
    (out / "notes.txt").write_text("mine")
    before = snapshot_of(out)
    status, err = cli(train.main, train_args(blocks, out, "--iters", 2), capsys)
    line = one_error_line(err)
    assert status == 2 and "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot_of(out) == before                       # not a byte changed
    run(train_args(blocks, out, "--iters", 1, "--overwrite"))
    names = sorted(os.listdir(out))
    assert names == [".train.lock", "checkpoint_000001.pkl", "checkpoint_last.pkl", "config.json", "log.jsonl",
                     "notes.txt", "train.log"]
    assert (out / "notes.txt").read_text() == "mine"        # only run files were removed
    assert [json.loads(x)["iter"] for x in open(out / "log.jsonl")] == [1]


def test_a_config_json_train_py_did_not_write_is_never_replaced(blocks, tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    for extra in ([], ["--overwrite"]):
        status, err = cli(train.main, train_args(blocks, out, "--iters", 1, *extra), capsys)
        assert status == 2 and "config.json that train.py did not write" in one_error_line(err)
    assert os.listdir(out) == ["config.json"] and json.load(open(out / "config.json")) == {"mine": True}


def test_no_checkpoint_with_non_finite_weights_and_the_advice_works(blocks, tmp_path, capsys):
    out = tmp_path / "run"
    run(train_args(blocks, out, "--iters", 2))
    good = load_checkpoint(str(out / "checkpoint_last.pkl"))
    # an absurd learning rate poisons the weights in the last step: the final snapshot is refused
    status, err = cli(train.main, ["--resume", out, "--lr", 1e300, "--iters", 3, "--no-progress"], capsys)
    line = one_error_line(err)
    assert status == 2 and "not finite after iteration 3" in line and "no checkpoint written" in line
    assert not (out / "checkpoint_000003.pkl").exists()
    last = load_checkpoint(str(out / "checkpoint_last.pkl"))
    assert last["iter"] == 2 and all(np.isfinite(v).all() for v in last["model"].values())
    np.testing.assert_array_equal(last["model"]["head.cca.gamma"], good["model"]["head.cca.gamma"])
    # the message names the last good checkpoint and a command that continues from it
    command = line.split("continue from it with a lower learning rate: ")[1].split()
    assert command[:3] == ["python", "train.py", "--resume"] and command[4] == "--lr"
    assert command[3] == str(out / "checkpoint_000002.pkl") and float(command[5]) == pytest.approx(1e299)
    run(command[2:5] + ["1e-3", "--iters", "3", "--no-progress"])  # --resume takes the lower rate
    assert load_checkpoint(str(out / "checkpoint_last.pkl"))["iter"] == 3


def test_a_run_that_never_had_finite_weights_writes_no_checkpoint(blocks, tmp_path, capsys):
    status, err = cli(train.main, train_args(blocks, tmp_path / "r", "--iters", 1, "--lr", 1e300), capsys)
    line = one_error_line(err)
    assert status == 2 and "not finite after iteration 1" in line and "start it again with a lower --lr" in line
    assert not [n for n in os.listdir(tmp_path / "r") if n.endswith(".pkl")]


def test_demo_only_replaces_its_own_run_folder(blocks, tmp_path):
    args = ["--data-path", blocks, "--iters", 1, "-b", 2, "--crop-size", 32, "-j", 0, "--min-miou", 0,
            "--no-progress"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    parsed = demo.get_args_parser().parse_args([str(a) for a in args + ["--output-dir", mine]])
    with pytest.raises(ValueError, match="not a run of this project"):
        demo.main(parsed)
    assert os.listdir(mine) == ["thesis.tex"]
    out = tmp_path / "demo_run"
    parsed = demo.get_args_parser().parse_args([str(a) for a in args + ["--output-dir", out]])
    demo.main(parsed)
    (out / "checkpoint_000099.pkl").write_bytes(b"stale")   # a run file of the earlier demo run
    demo.main(parsed)                                        # replaces the earlier demo run
    assert not (out / "checkpoint_000099.pkl").exists() and (out / "eval_val" / "results.json").exists()


def test_stale_temporaries_are_removed_and_the_log_reads_as_one_run(blocks, tmp_path):
    out = tmp_path / "run"
    run(train_args(blocks, out, "--iters", 4, "--snapshot-interval", 2))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f"checkpoint_000004.pkl.tmp-{dead.pid}"      # left by a killed save
    live = out / f"checkpoint_000004.pkl.tmp-{os.getppid()}"   # a save still in progress elsewhere
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    run(["--resume", out / "checkpoint_000002.pkl", "--no-progress", "--print-freq", 1])
    assert not stale.exists() and live.exists()
    assert [json.loads(x)["iter"] for x in open(out / "log.jsonl")] == [1, 2, 3, 4]


# --------------------------------------------------------------------------- silently wrong

@pytest.mark.parametrize("flag,value,message", [
    ("-b", "0", "-b/--batch-size must be a positive integer"),
    ("--iters", "0", "--iters must be a positive integer"),
    ("--print-freq", "0", "--print-freq must be a positive integer"),
    ("-j", "-1", "-j/--workers must be 0"),
    ("--lr", "nan", "--lr must be a positive number"),
    ("--lr", "-0.01", "--lr must be a positive number"),
    ("--crop-size", "1", "--crop-size must be at least 32"),
    ("--momentum", "1.5", "--momentum must be in [0, 1)"),
    ("--weight-decay", "inf", "--weight-decay must be 0 or a positive number"),
    ("--ohem-thresh", "0", "--ohem-thresh must be in (0, 1]"),
])
def test_invalid_values_are_errors_not_preset_values(blocks, tmp_path, capsys, flag, value, message):
    status, err = cli(train.main, train_args(blocks, tmp_path / "r", "--iters", 2) + [flag, value], capsys)
    assert status == 2 and message in one_error_line(err)
    assert not (tmp_path / "r").exists() or not os.listdir(tmp_path / "r")  # refused before any work


def test_the_seed_fixes_the_model_whatever_the_worker_count(blocks, tmp_path):
    """Dropout draws must not depend on when Jittor first computes the lazily initialised weights."""
    for workers in (0, 2):
        run(train_args(blocks, tmp_path / f"j{workers}", "--iters", 2, "-j", workers))
    a = load_checkpoint(str(tmp_path / "j0" / "checkpoint_last.pkl"))
    b = load_checkpoint(str(tmp_path / "j2" / "checkpoint_last.pkl"))
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    losses = [[json.loads(x)["loss"] for x in open(tmp_path / f"j{w}" / "log.jsonl")] for w in (0, 2)]
    assert losses[0] == losses[1]


def _script(args, cwd=ROOT, timeout=300, new_session=False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=new_session)


@pytest.mark.parametrize("workers,terminal", [(0, False), (2, False), (2, True)])
def test_ctrl_c_says_where_the_run_stopped_and_exits_130(blocks, tmp_path, workers, terminal):
    """terminal: Ctrl-C in a terminal signals the whole process group (loader and compile workers too)."""
    out = tmp_path / "run"
    proc = _script([os.path.join(ROOT, "train.py"), *train_args(blocks, out, "--iters", 100000,
                                                                "--snapshot-interval", 2, "-j", workers)],
                   new_session=terminal)
    log = out / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or len(open(log).readlines()) < 3):
        time.sleep(0.2)
    if terminal:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted at iteration" in stderr and f"--resume {out}" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr and "Caught SIGINT" not in stderr, stderr[-3000:]
    assert "Caught SIGCHLD" not in stderr, stderr[-3000:]
    assert not [n for n in os.listdir(out) if ".tmp" in n]
    last = load_checkpoint(str(out / "checkpoint_last.pkl"))
    assert last["iter"] >= 2 and last["iter"] % 2 == 0


def _truncated_jpeg(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(path, quality=90)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return path


def _corrupt_copy(blocks, tmp_path, how):
    """A copy of the blocks dataset with one broken training sample (its path is returned too)."""
    root = tmp_path / f"data_{how}"
    shutil.copytree(blocks, root)
    stem = "aachen_000003_000019"
    image = root / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png"
    label = root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png"
    if how == "truncated":
        data = open(image, "rb").read()
        open(image, "wb").write(data[: len(data) // 2])
        return root, image
    Image.fromarray(np.full((32, 64), 200, np.uint8)).save(label)  # 200 is no Cityscapes label id
    return root, label


@pytest.mark.parametrize("how", ["truncated", "bad_label"])
def test_data_errors_are_the_same_line_with_and_without_workers(blocks, tmp_path, how):
    data, broken = _corrupt_copy(blocks, tmp_path, how)
    errors = []
    for workers in (0, 2):
        proc = _script([os.path.join(ROOT, "train.py"), *train_args(data, tmp_path / f"r{workers}", "--iters", 6,
                                                                    "-j", workers)])
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, stderr[-3000:]
        errors.append(one_error_line(stderr))
    assert errors[0] == errors[1] and str(broken) in errors[0]
    assert ("truncated" in errors[0]) if how == "truncated" else ("[200]" in errors[0])


def test_truncated_images_are_errors_in_evaluation_and_prediction(blocks, tmp_path, capsys):
    out = tmp_path / "run"
    run(train_args(blocks, out, "--iters", 1))
    data = tmp_path / "data"
    shutil.copytree(blocks, data)
    image = data / "leftImg8bit" / "val" / "lindau" / "lindau_000001_000019_leftImg8bit.png"
    open(image, "wb").write(open(image, "rb").read()[:300])
    status, err = cli(evaluate.main, ["--checkpoint", out, "--data-path", data, "-j", 0, "--no-progress",
                                      "--output-dir", tmp_path / "ev"], capsys)
    assert status == 2 and str(image) in one_error_line(err) and "truncated" in err
    jpeg = _truncated_jpeg(tmp_path / "photo.jpg")
    status, err = cli(predict.main, [out, jpeg, "-o", tmp_path / "pred", "--no-progress"], capsys)
    assert status == 1 and f"skipped: cannot read image '{jpeg}': truncated" in err
    assert not (tmp_path / "pred" / "photo_pred.png").exists()


def test_recorded_paths_work_from_any_folder(blocks, tmp_path):
    work = tmp_path / "a"
    work.mkdir()
    shutil.copytree(blocks, work / "data")
    args = train_args("data", "runs/r", "--iters", 2, "--stop-after", 1)
    proc = _script([os.path.join(ROOT, "train.py"), *args], cwd=work)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    cfg = json.load(open(work / "runs" / "r" / "config.json"))
    assert cfg["data_path"] == str(work / "data") and cfg["output_dir"] == str(work / "runs" / "r")
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    proc = _script([os.path.join(ROOT, "train.py"), "--resume", work / "runs" / "r", "--no-progress"], cwd=elsewhere)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    assert load_checkpoint(str(work / "runs" / "r" / "checkpoint_last.pkl"))["iter"] == 2
    proc = _script([os.path.join(ROOT, "evaluate.py"), "--checkpoint", work / "runs" / "r", "-j", "0",
                    "--no-progress"], cwd=elsewhere)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    assert (work / "runs" / "r" / "eval_val" / "results.json").exists() and not os.listdir(elsewhere)


# --------------------------------------------------------------------------- unclear

def test_output_locations_are_checked_before_any_work(blocks, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(train_args(blocks, run_dir, "--iters", 1))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    in_the_way = blocker / "sub"
    cases = [
        (train.main, train_args(blocks, in_the_way, "--iters", 1), "--output-dir"),
        (evaluate.main, ["--checkpoint", run_dir, "--output-dir", in_the_way, "-j", 0], "--output-dir"),
        (predict.main, [run_dir, blocks, "-o", in_the_way], "-o/--output-dir"),
    ]
    for main, args, flag in cases:
        status, err = cli(main, args, capsys)
        line = one_error_line(err)
        assert status == 2 and f"cannot write to {in_the_way}" in line and flag in line, line
        assert "evaluating" not in err and "wrote" not in err
    status, err = cli(evaluate.main, ["--checkpoint", run_dir, "--output-dir", "/proc/ccnet_results", "-j", 0],
                      capsys)
    assert status == 2 and "cannot write to /proc/ccnet_results" in one_error_line(err)


def test_truncated_zip_checkpoints_are_called_truncated(tmp_path, capsys):
    import convert_weights
    src = tmp_path / "model.pth"
    import zipfile
    with zipfile.ZipFile(src, "w") as zf:     # what torch.save writes: a zip archive
        zf.writestr("model/data.pkl", pickle.dumps({"w": 1}))
        zf.writestr("model/data/0", b"\0" * 4000)
    src.write_bytes(src.read_bytes()[:2000])
    status, err = cli(convert_weights.main, [src, "-o", tmp_path / "o.pkl"], capsys)
    assert status == 2 and "truncated or damaged zip archive" in one_error_line(err)


def test_backbone_weights_are_explained_by_every_script(blocks, tmp_path, capsys):
    from models import build_model
    model = build_model("ccnet_demo", 5)
    backbone = tmp_path / "van.pkl"
    save_weights(str(backbone), {k[9:]: v.numpy() for k, v in model.state_dict().items()
                                 if k.startswith("backbone.")}, {"arch": "van_b0"})
    for main, args in ((evaluate.main, ["--checkpoint", backbone, "--dataset", "demo", "--data-path", blocks]),
                       (predict.main, [backbone, blocks, "-o", tmp_path / "p"])):
        status, err = cli(main, args, capsys)
        assert status == 2 and "looks like backbone weights" in one_error_line(err)


# --------------------------------------------------------------------------- security

class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_everywhere(blocks, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "checkpoint_last.pkl"
    evil.write_bytes(pickle.dumps({"model": {"w": np.zeros(1)}, "config": {}, "x": _RunsCode(marker)}))
    for main, args in (
            (evaluate.main, ["--checkpoint", evil, "--dataset", "demo"]),
            (predict.main, [evil, blocks, "-o", tmp_path / "p"]),
            (train.main, ["--resume", evil]),
            (train.main, train_args(blocks, tmp_path / "w", "--iters", 1, "--weights", evil)),
            (train.main, train_args(blocks, tmp_path / "pt", "--iters", 1, "--pretrained", evil))):
        status, err = cli(main, args, capsys)
        assert status == 2 and "refused to read it" in one_error_line(err) and "system" in err
    import convert_weights
    evil_pth = tmp_path / "resnet101-imagenet.pth"          # as a PyTorch file: the converter's reader
    shutil.copy(evil, evil_pth)
    status, err = cli(convert_weights.main, [evil_pth, "-o", tmp_path / "o.pkl"], capsys)
    assert status == 2 and "not one written by torch.save" in one_error_line(err)
    assert not marker.exists()
    # the project's own files load through the same reader
    out = tmp_path / "run"
    run(train_args(blocks, out, "--iters", 1))
    assert checkpoint.load_checkpoint(str(out / "checkpoint_last.pkl"))["iter"] == 1


def test_written_files_follow_the_umask(tmp_path):
    """Converted weights were written 0600 (a private temporary file renamed into place)."""
    import convert_weights
    from models import BACKBONES
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v.numpy()) for k, v in BACKBONES["van_b0"]().state_dict().items()}
    src = tmp_path / "van_tiny_754.pth.tar"
    torch.save({"state_dict": state}, src)
    old = os.umask(0o022)
    try:
        assert convert_weights.main([str(src), "-o", str(tmp_path / "van_b0.pkl")]) == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "van_b0.pkl").st_mode & 0o777 == 0o644


def test_run_folders_of_earlier_versions_are_recognised(tmp_path):
    """A config.json written before the run_format marker is still train.py's (demo.py may replace it)."""
    from cli import run_folder
    earlier = {"model": "ccnet_demo", "dataset": "demo", "iters": 300, "batch_size": 8, "model_opts": {},
               "jittor_version": "1.3.11.0", "iters_per_epoch": 18, "lr": 0.01}
    (tmp_path / "config.json").write_text(json.dumps(earlier))
    assert run_folder.is_run_folder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model": "x", "dataset": "y"}))
    assert not run_folder.is_run_folder(str(tmp_path))
