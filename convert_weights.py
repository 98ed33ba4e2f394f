"""Convert a PyTorch ImageNet checkpoint into Jittor backbone weights (no torch needed).

Example::

    python convert_weights.py resnet101-imagenet.pth            # -> pretrained/resnet101_deep.pkl
    python convert_weights.py van_base_828.pth.tar --verify     # -> pretrained/van_b2.pkl
    python convert_weights.py ckpt.pth --from resnet_v1c --arch resnet50 -o pretrained/r50.pkl
    python convert_weights.py CS_scenes_60000.pth --verify      # whole CCNet -> pretrained/ccnet_resnet101_19cls.pkl

The output loads with ``resnet101(stem="deep", pretrained="pretrained/resnet101_deep.pkl")``
or ``van_b2(pretrained="pretrained/van_b2.pkl")``.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from typing import Callable, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jittor_env  # noqa: E402,F401  (before jittor)

from pretrained import KNOWN_FILES, PRETRAINED_DIR  # noqa: E402
from pretrained.convert import (  # noqa: E402
    LAYOUTS,
    RESNET_LAYOUT_STEM,
    ConversionError,
    check_fits,
    convert_backbone,
    default_output_name,
    describe_arch,
    detect_layout,
    infer_arch,
    save_weights,
    unwrap_checkpoint,
)
from pretrained.convert_ccnet import convert_ccnet_file, detect_ccnet_layout  # noqa: E402
from pretrained.torch_reader import CheckpointFormatError, read_torch_checkpoint  # noqa: E402

ARCHS = ("resnet50", "resnet101", "resnet152", "van_b0", "van_b1", "van_b2", "van_b3", "van_b4", "van_b5",
         "van_b6")

EPILOG = """\
input files
  PyTorch checkpoints written by torch.save, in the zip format (PyTorch >= 1.6)
  or the legacy format (_use_new_zipfile_serialization=False, PyTorch < 1.6),
  named .pth, .pt, .pth.tar, .bin or anything else, and HuggingFace
  .safetensors files. torch is not needed. Plain state dicts and wrapped ones
  ({'state_dict': ...}, {'model': ...}, a 'module.' prefix) are accepted; keys
  under 'backbone.' are used when nothing else fits (or pass --prefix).

source layouts (--from; detected from the keys when omitted)
""" + "".join(f"  {name:<20s}{text}\n" for name, text in LAYOUTS.items()) + """
architectures (--arch; inferred from the tensor shapes when omitted)
  resnet50, resnet101, resnet152 (Bottleneck ResNets; the stem follows the layout:
  resnet_deep -> stem "deep", resnet_v1c -> "v1c", resnet_torchvision ->
  "torchvision"), van_b0 .. van_b6 (legacy names van_tiny, van_small,
  van_base, van_large are accepted).

output
  A Jittor pickle (.pkl, jt.save) holding {"state_dict": {name: numpy array},
  "meta": {arch, layout, stem, input_norm, source}}, written atomically;
  default pretrained/<arch>_<stem>.pkl for ResNets, pretrained/<arch>.pkl for
  VAN. Classifier heads and BatchNorm num_batches_tracked are dropped; every
  other tensor must match the Jittor model's key and shape, otherwise nothing
  is written and the problem is reported.

whole CCNet checkpoints
  Official CCNet snapshots (conv1..layer4, head.*, dsn.*) and mmsegmentation
  CCNet checkpoints (backbone.*, decode_head.*, auxiliary_head.*) are detected
  from the keys and converted to a models.CCNet preset (ccnet_resnet{50,101} or
  ccnet_resnet{50,101}_mmseg), class count read from the classifier; --arch may
  name the preset, --recurrence sets the recorded recurrence. Output
  pretrained/<preset>_<classes>cls.pkl with meta {arch, num_classes,
  recurrence, align_corners, overrides}; see pretrained/convert_ccnet.py.

exit status: 0 converted, 2 refused (the message says why and how to fix it).
"""


def _normalise_arch(arch: Optional[str]) -> Optional[str]:
    if arch is None:
        return None
    from models.van import VAN_LEGACY_NAMES  # noqa: PLC0415
    arch = VAN_LEGACY_NAMES.get(arch, arch)
    if arch not in ARCHS:
        raise ConversionError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch


def build_target(arch: str, layout: str):
    """The Jittor backbone that the converted weights are for."""
    if arch.startswith("resnet"):
        from models.resnet import RESNET_DEPTHS, ResNet  # noqa: PLC0415
        model = ResNet(RESNET_DEPTHS[int(arch[len("resnet"):])], stem=RESNET_LAYOUT_STEM[layout])
    else:
        from models.van import build_van  # noqa: PLC0415
        model = build_van(arch, drop_path_rate=0.0)
    model.arch = arch
    return model


def _input_norm_name(norm) -> str:
    from models.input_norm import CAFFE_BGR, IMAGENET_RGB  # noqa: PLC0415
    return {CAFFE_BGR: "CAFFE_BGR", IMAGENET_RGB: "IMAGENET_RGB"}.get(norm, "custom")


def verify_forward(model, size: int = 64) -> list[tuple[int, ...]]:
    """One eval-mode forward pass on a random image; raises ConversionError on a non-finite output."""
    import jittor as jt  # noqa: PLC0415
    model.eval()
    x = jt.array(np.random.RandomState(0).randn(1, 3, size, size).astype("float32"))
    with jt.no_grad():
        outs = [o.numpy() for o in model(x)]
    for i, o in enumerate(outs):
        if not np.isfinite(o).all():
            raise ConversionError(f"--verify: stage {i + 1} output has non-finite values")
    return [tuple(o.shape) for o in outs]


def convert_file(src: str, output: Optional[str] = None, arch: Optional[str] = None,
                 layout: Optional[str] = None, prefix: Optional[str] = None, verify: bool = False,
                 log: Callable[[str], None] = print, recurrence: Optional[int] = None) -> str:
    """Converts ``src`` and writes the Jittor weights; returns the output path.

    Whole CCNet checkpoints (official snapshots, mmsegmentation) go to
    ``pretrained.convert_ccnet.convert_ccnet_file`` (``arch`` is then a
    ``models.MODEL_PRESETS`` name, ``recurrence`` is recorded in the metadata).

    Raises ConversionError (nothing written) when the file is not a checkpoint,
    its layout is unknown, or it does not fit the architecture.
    """
    ccnet_preset = arch if arch is not None and arch.startswith("ccnet_") else None
    arch = None if ccnet_preset else _normalise_arch(arch)
    if output is not None and not output.endswith(".pkl"):
        raise ConversionError(f"the output must be a .pkl file (a Jittor pickle), got {output!r}")
    if layout is not None and layout not in LAYOUTS:
        raise ConversionError(f"unknown --from {layout!r}; choose one of {', '.join(LAYOUTS)}")
    try:
        obj = read_torch_checkpoint(src)
    except CheckpointFormatError as e:
        raise ConversionError(f"{e}. Pass a file written by torch.save (.pth, .pt, .pth.tar).") from e
    try:
        sd, notes = unwrap_checkpoint(obj)
    except ConversionError as e:
        raise ConversionError(f"{src}: {e}") from e
    name = os.path.basename(src)
    log(f"read {src}: {len(sd)} tensors")
    for note in notes:
        log(f"  {note}")
    if name in KNOWN_FILES:
        k = KNOWN_FILES[name]
        log(f"  known file: {k['source']} ({k['arch']}, layout {k['layout']})")
    if layout is None and prefix is None and detect_ccnet_layout(sd) is not None:
        return convert_ccnet_file(src, obj, output, ccnet_preset, recurrence, verify, log)
    if ccnet_preset or recurrence is not None:
        raise ConversionError(f"{src} is not a whole CCNet checkpoint (no head.conva / decode_head.cca keys); "
                              f"--arch ccnet_* and --recurrence apply to whole CCNet checkpoints only")

    # Layout (and the sub-dict holding the backbone).
    if prefix is None:
        prefix = ""
        if layout is None and detect_layout(sd) is None and any(k.startswith("backbone.") for k in sd):
            prefix = "backbone."
    inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    detected = detect_layout(inner)
    if layout is None:
        if detected is None:
            sample = ", ".join(list(sd)[:6])
            raise ConversionError(
                f"{src}: could not recognise the layout (first keys: {sample}). "
                f"Pass --from with one of: {', '.join(LAYOUTS)}")
        layout = detected
        log(f"  layout: {layout} (detected{', under ' + repr(prefix) if prefix else ''})")
    else:
        looks = f"; the keys look like {detected}" if detected and detected != layout else ""
        log(f"  layout: {layout} (--from{looks})")
    family = "resnet" if layout.startswith("resnet") else "van"
    hint = ""
    if detected is not None and detected != layout:
        hint = f" The keys look like layout {detected}: drop --from or pass --from {detected}."
    if arch is not None and not arch.startswith(family):
        file_family, arch_family = ("ResNet", "VAN") if family == "resnet" else ("VAN", "ResNet")
        raise ConversionError(
            f"{src} is a {file_family} checkpoint (layout {layout}) but --arch {arch} is a {arch_family}; "
            f"convert a {arch_family} checkpoint for {arch}, or choose a {file_family} --arch.{hint}")

    result = convert_backbone(sd, layout, prefix)
    found, what = infer_arch(result.state_dict, layout)
    if arch is None:
        if found is None:
            raise ConversionError(f"{src}: holds {what}, which matches no supported architecture "
                                  f"(supported: {', '.join(ARCHS)}).{hint}")
        arch = found
        log(f"  architecture: {arch} (inferred from the shapes)")
    elif found is not None and found != arch:
        raise ConversionError(
            f"{src} holds {what}, but --arch {arch} expects {describe_arch(arch)}. "
            f"Use --arch {found} (or convert a {arch} checkpoint).")

    model = build_target(arch, layout)
    check_fits(result.state_dict, model, f"{src} does not fit {arch} (layout {layout})",
               hint=f"Check --arch and --from (the keys look like layout {detected or 'unknown'}).")

    state_dict, cast = {}, Counter()
    for k, v in result.state_dict.items():
        v = np.asarray(v)
        if v.dtype != np.float32:  # the Jittor model is float32 throughout
            cast[str(v.dtype)] += 1
            v = v.astype(np.float32)
        state_dict[k] = v

    log(f"converted {len(state_dict)} tensors ({len(result.renamed)} renamed), "
        f"skipped {len(result.skipped)}, missing 0")
    for dtype, count in cast.items():
        log(f"  cast {count} {dtype} tensors to float32")
    for reason, count in Counter(result.skipped.values()).items():
        examples = [k for k, r in result.skipped.items() if r == reason][:3]
        log(f"  skipped {count}: {reason} (e.g. {', '.join(examples)})")

    if verify:
        from models.weights import load_state_dict_strict  # noqa: PLC0415
        load_state_dict_strict(model, state_dict, strict=True)
        shapes = verify_forward(model)
        log("verify: one forward pass on a random 64x64 image, all outputs finite: "
            + ", ".join("x".join(map(str, s)) for s in shapes))

    if output is None:
        output = os.path.join(PRETRAINED_DIR, default_output_name(arch, layout))
    meta = {
        "format": "ccnet-jittor-weights",
        "version": 1,
        "arch": arch,
        "layout": layout,
        "stem": RESNET_LAYOUT_STEM.get(layout),
        "input_norm": _input_norm_name(model.input_norm),
        "input_norm_values": {"mean": list(model.input_norm.mean), "std": list(model.input_norm.std),
                              "bgr": model.input_norm.bgr},
        "source": name,
    }
    save_weights(output, state_dict, meta)
    log(f"wrote {output}")
    return output


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert a PyTorch ImageNet checkpoint (ResNet or VAN) into Jittor backbone "
                    "weights, without torch.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="PyTorch checkpoint (.pth, .pt, .pth.tar, .bin; zip or legacy format) "
                                    "or .safetensors file")
    parser.add_argument("-o", "--output", default=None,
                        help="output .pkl (default: pretrained/<arch>_<stem>.pkl or pretrained/<arch>.pkl)")
    parser.add_argument("--arch", default=None,
                        help="target architecture (resnet50, resnet101, resnet152, van_b0..van_b6; "
                             "legacy van_tiny..van_large); inferred if omitted")
    parser.add_argument("--from", dest="layout", default=None, choices=sorted(LAYOUTS),
                        help="source layout; detected from the keys if omitted")
    parser.add_argument("--prefix", default=None,
                        help="convert only the keys under this prefix (e.g. 'backbone.')")
    parser.add_argument("--verify", action="store_true",
                        help="run one forward pass with the converted weights and check the outputs are finite")
    parser.add_argument("--recurrence", type=int, default=None,
                        help="whole CCNet checkpoints: the recurrence to record (default: the preset's, 2)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        convert_file(args.src, args.output, args.arch, args.layout, args.prefix, args.verify,
                     recurrence=args.recurrence)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
