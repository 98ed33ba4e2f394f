"""Shared helpers of the train / evaluate / MPI tests: a tiny model and tiny datasets."""
import json
import os

import cv2
import numpy as np
from PIL import Image

# A CCNet small enough to train in well under a second per iteration on the CPU:
# the ccnet_demo preset with a 4-stage VAN of 8-32 channels and 16-channel heads.
TINY_MODEL_ARGS = [
    "--model", "ccnet_demo",
    "--model-opt", "backbone_kwargs=" + json.dumps({"embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
                                                    "mlp_ratios": [2, 2, 2, 2]}),
    "--model-opt", "channels=16", "--model-opt", "aux_channels=8", "--model-opt", "neck_channels=16",
]

DEMO_IDS = np.array([7, 11, 21, 23, 26], np.uint8)  # Cityscapes label ids of the demo's 5 classes


def write_blocks_dataset(root, num_train=8, num_val=4, height=32, width=64, seed=0):
    """Cityscapes layout, demo classes only, no ignored pixel: 8x8 blocks of one class each,
    coloured by class (learnable), so every image has the same number of valid pixels."""
    rng = np.random.default_rng(seed)
    for split, n, city in (("train", num_train, "aachen"), ("val", num_val, "lindau")):
        lines = []
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            cls = rng.integers(0, 5, (height // 8, width // 8)).astype(np.uint8)
            cls = cv2.resize(cls, (width, height), interpolation=cv2.INTER_NEAREST)
            rgb = np.stack([cls * 50, 255 - cls * 40, (cls * 97) % 256], -1).astype(np.int32)
            rgb = (rgb + rng.integers(-20, 20, rgb.shape)).clip(0, 255).astype(np.uint8)
            img_rel = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
            lbl_rel = f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"
            os.makedirs(os.path.dirname(os.path.join(root, img_rel)), exist_ok=True)
            os.makedirs(os.path.dirname(os.path.join(root, lbl_rel)), exist_ok=True)
            assert cv2.imwrite(os.path.join(root, img_rel), rgb[..., ::-1])
            Image.fromarray(DEMO_IDS[cls]).save(os.path.join(root, lbl_rel))
            lines.append(f"{img_rel} {lbl_rel}\n")
        with open(os.path.join(root, f"{split}.lst"), "w") as f:
            f.writelines(lines)
    return root


def train_args(data_path, output_dir, *extra):
    """train.py arguments for the tiny model on a blocks dataset (no workers, no progress bar)."""
    return ["--dataset", "demo", "--data-path", str(data_path), "--output-dir", str(output_dir),
            "--crop-size", "32", "-b", "2", "--snapshot-interval", "100", "--eval-interval", "0",
            "-j", "0", "--no-progress", "--print-freq", "1", *TINY_MODEL_ARGS, *extra]


def run_train(args):
    """train.py's run in this process with these arguments (errors raised, not turned into exit codes)."""
    import apis.train
    import train
    return apis.train.run(train.options_from_args(train.get_args_parser().parse_args([str(a) for a in args])))
