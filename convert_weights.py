"""Convert a PyTorch ImageNet checkpoint into Jittor backbone weights (no torch needed).

Example::

    python convert_weights.py resnet101-imagenet.pth            # -> pretrained/resnet101_deep.pkl
    python convert_weights.py van_base_828.pth.tar --verify     # -> pretrained/van_b2.pkl
    python convert_weights.py ckpt.pth --from resnet_v1c --arch resnet50 -o pretrained/r50.pkl
    python convert_weights.py CS_scenes_60000.pth --verify      # whole CCNet -> pretrained/ccnet_resnet101_19cls.pkl
    python convert_weights.py --export official work_dirs/run1 -o ccnet_official.pth   # and back to PyTorch

The output loads with ``resnet101(stem="deep", pretrained="pretrained/resnet101_deep.pkl")``
or ``van_b2(pretrained="pretrained/van_b2.pkl")``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import jittor_env  # noqa: F401  (must run before jittor is imported)

from cli.arguments import Parser
from cli.main import run_main
from apis.export import EXPORT_TARGETS, export_onnx, export_pytorch
from pretrained.backbone_keys import LAYOUTS
from pretrained.converter import ARCHS, convert_file

__all__ = ["get_args_parser", "main"]

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
  """ + ", ".join(ARCHS) + """
  (Bottleneck ResNets: the stem follows the layout, resnet_deep -> stem "deep",
  resnet_v1c -> "v1c", resnet_torchvision -> "torchvision"; the legacy VAN
  names van_tiny, van_small, van_base, van_large are accepted).

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
  recurrence, align_corners, overrides}; see pretrained/ccnet_keys.py.

export (--export TARGET SRC -o OUT.pth)
  The other way: a train.py checkpoint, its run folder or a weights file
  (.pkl) written as a PyTorch checkpoint (torch.save's zip format, without
  torch) in the names of another code base (BatchNorm num_batches_tracked
  included where the layout has it: not in the official InPlace-ABN
  snapshots); torch.load(OUT, weights_only=True) reads it. Targets:
""" + "".join(f"  {name:<20s}{text}\n" for name, text in EXPORT_TARGETS.items()) + """\
  A model the target cannot hold (another backbone or stem, the VAN neck, the
  CCL projection of --ccl) is refused before anything is written.

ONNX (--onnx SRC -o OUT.onnx [--stride8])
  The evaluation graph of the model in SRC (a train.py checkpoint, its run
  folder, a .pkl or an official / mmseg .pth), opset 17, standard operators
  only (the criss-cross attention as MatMul, Softmax and a -inf diagonal):
  input image [N, 3, H, W] float32 normalised as the metadata's input_norm
  says, dynamic N, H and W; output logits at the input size (--stride8: at
  1/8). Needs the onnx package (requirements-dev.txt); onnxruntime runs it.

exit status: 0 converted, 2 refused (the message says why and how to fix it).
"""


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        description="Convert a PyTorch ImageNet checkpoint (ResNet or VAN) or a whole CCNet into Jittor "
                    "weights, without torch.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="PyTorch checkpoint (.pth, .pt, .pth.tar, .bin; zip or legacy format) "
                                    "or .safetensors file; with --export, one of this project's model files")
    parser.add_argument("-o", "--output", default=None,
                        help="output .pkl (default: pretrained/<arch>_<stem>.pkl or pretrained/<arch>.pkl); "
                             "with --export the .pth to write (required)")
    parser.add_argument("--export", default=None, choices=sorted(EXPORT_TARGETS), metavar="TARGET",
                        help="write SRC as a PyTorch checkpoint in TARGET's names: " + ", ".join(EXPORT_TARGETS))
    parser.add_argument("--onnx", action="store_true",
                        help="write the model of SRC (any model file of this project) as an ONNX graph (-o OUT.onnx)")
    parser.add_argument("--stride8", action="store_true",
                        help="with --onnx: logits at stride 8 (the head's resolution), not upsampled to the input")
    parser.add_argument("--arch", default=None,
                        help="target architecture (see below) or a ccnet_* preset; inferred if omitted")
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
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.export and args.onnx:
        parser.error("--export and --onnx write different files; give one of them")
    if args.stride8 and not args.onnx:
        parser.error("--stride8 goes with --onnx")
    if args.export or args.onnx:
        given = [flag for flag, value in (("--arch", args.arch), ("--from", args.layout), ("--prefix", args.prefix),
                                          ("--verify", args.verify), ("--recurrence", args.recurrence)) if value]
        if given:
            parser.error(f"{', '.join(given)} belong to converting a PyTorch file in; "
                         f"{'--export' if args.export else '--onnx'} writes one out")
        if args.onnx:
            return run_main(export_onnx, args.src, args.output, not args.stride8)
        return run_main(export_pytorch, args.src, args.export, args.output)
    return run_main(convert_file, args.src, args.output, args.arch, args.layout, args.prefix, args.verify,
                        print, args.recurrence)


if __name__ == "__main__":
    sys.exit(main())
