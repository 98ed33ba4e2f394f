"""convert_weights.py --export: a model of this project as a PyTorch checkpoint of another code base.

Any model file (a train.py checkpoint or its run folder, a weights file, a
converted PyTorch file) is read by :func:`apis.model_files.read_model_file`;
its keys are mapped to the target layout by the converter's own maps read
backwards (:func:`pretrained.ccnet_keys.export_ccnet`,
:func:`pretrained.backbone_keys.export_backbone`) and written in
``torch.save``'s format without torch (:mod:`utils.torch_writer`), atomically:

===============  ==========================================================
``official``     speedinghzl/CCNet ``networks/ccnet.py`` (deep-stem ResNet)
``mmseg``        mmsegmentation ``EncoderDecoder`` with ``CCHead`` and ``FCNHead``
``torchvision``  a torchvision ResNet's backbone keys (7x7 stem; no ``fc``)
``van``          the official VAN's backbone keys (no ``head``)
===============  ==========================================================

The file loads with ``torch.load(path, weights_only=True)`` and then
``load_state_dict`` (strict for the whole-model layouts; ``strict=False``
for the backbones, which have no classifier).

``convert_weights.py --onnx``: the model of any model file as an ONNX graph
(:func:`models.onnx_export.build_onnx`: logits at the input size, or at
stride 8), written atomically. ``onnx`` is needed only here.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Callable, Optional

import numpy as np

from apis.model_files import load_model, read_model_file
from pretrained.backbone_keys import export_backbone
from pretrained.ccnet_keys import export_ccnet
from utils.errors import missing_package
from utils.fileio import atomic_write, check_output_file
from utils.torch_writer import write_torch_state_dict

__all__ = ["EXPORT_TARGETS", "export_state_dict", "export_pytorch", "export_onnx", "onnx_problem"]

#: --export target -> what the written file is.
EXPORT_TARGETS: dict[str, str] = {
    "official": "whole CCNet, official speedinghzl/CCNet names (conv1.., head.*, dsn.*)",
    "mmseg": "whole CCNet, mmsegmentation names (backbone.stem.., decode_head.*, auxiliary_head.*)",
    "torchvision": "ResNet backbone (7x7 stem), torchvision names",
    "van": "VAN backbone, official VAN names",
}


def export_state_dict(state: dict[str, np.ndarray], target: str) -> "OrderedDict[str, np.ndarray]":
    """Our state dict (model or backbone) in the layout ``target``; ConversionError if it cannot hold it."""
    if target not in EXPORT_TARGETS:
        raise ValueError(f"unknown export target {target!r}; known: {', '.join(EXPORT_TARGETS)}")
    if target in ("official", "mmseg"):
        return export_ccnet(state, target)
    return export_backbone(state, target)


def export_pytorch(src: str, target: str, output: str, log: Callable[[str], None] = print) -> int:
    """Read ``src``, map it to ``target`` and write ``output`` (a .pth); 0 when written."""
    if not output:
        raise ValueError("--export needs the output file: -o OUT.pth")
    check_output_file(output, "-o")
    model_file = read_model_file(src)
    state = export_state_dict(model_file.state, target)
    atomic_write(output, lambda f: write_torch_state_dict(state, f))
    tensors = sum(int(np.asarray(v).size) for v in state.values())
    log(f"wrote {output}: {len(state)} tensors ({tensors:,} numbers), {EXPORT_TARGETS[target]}, "
        f"from the {model_file.kind} {model_file.path}")
    return 0


def onnx_problem() -> Optional[str]:
    """Why ``--onnx`` cannot work here (None when it can): the onnx package must import."""
    missing = missing_package("onnx")
    if missing:
        return (f"--onnx builds the graph with the onnx package, which does not import here ({missing}); "
                "pip install -r requirements-dev.txt (it pins onnx and onnxruntime)")
    return None


def export_onnx(src: str, output: str, upsample: bool = True, log: Callable[[str], None] = print) -> int:
    """The model of ``src`` (any model file) as an ONNX graph in ``output``; 0 when written."""
    if not output:
        raise ValueError("--onnx needs the output file: -o OUT.onnx")
    problem = onnx_problem()
    if problem:
        raise ValueError(problem)
    check_output_file(output, "-o")
    from models.onnx_export import OPSET, build_onnx
    model, info = load_model(src)
    if model.video:
        raise ValueError(f"{info.path}: --onnx writes image models; the video model {info.model} attends over "
                         f"clips, which the graph does not (its weights export as the 2-D model's with --export)")
    meta = {"model": info.model, "source": info.path}
    if info.preset is not None:
        meta.update(dataset=info.preset.name, class_names=json.dumps(list(info.preset.class_names)))
    proto = build_onnx(model, upsample=upsample, metadata=meta)
    atomic_write(output, proto.SerializeToString())
    log(f"wrote {output}: {info.model} ({model.num_classes} classes, recurrence {model.recurrence}), opset {OPSET}, "
        f"image [N, 3, H, W] -> logits {'[N, classes, H, W]' if upsample else '[N, classes, H/8, W/8]'}, "
        f"input normalisation in the metadata (input_norm)")
    return 0
