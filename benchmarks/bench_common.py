"""Helpers the benchmark scripts share (a module, not a script): paths, memory, records, the PyTorch formulations.

Importing it puts the repository root on ``sys.path``, so the scripts in
``benchmarks/`` can import the project's library.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from pretrained.io import write_json  # noqa: E402  (after the path)

__all__ = ["ROOT", "rss_kb", "cpu_model", "write_record", "run_worker", "cca_inputs", "torch_bmm", "torch_einsum"]


def rss_kb(field: str) -> int:
    """A field of ``/proc/self/status`` in kB: ``VmRSS`` (resident now) or ``VmHWM`` (peak resident)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the records."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_record(path: str, record: dict) -> None:
    """Write a benchmark record atomically (the project's one writer) and say where."""
    write_json(path, record)
    print(f"wrote {path}")


def run_worker(cmd: list[str], what: str) -> dict | None:
    """Run one measurement in its own process; its last stdout line that is a JSON object, or None on failure."""
    result = subprocess.run(cmd, capture_output=True, text=True)
    for line in result.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    print(f"{what} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
    return None


def cca_inputs(shape, seed: int = 0):
    """Random query, key ([B, C/8, H, W]) and value ([B, C, H, W]) float32 arrays."""
    import numpy as np
    B, C, H, W = shape
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, C // 8, H, W)).astype(np.float32)
    k = rng.standard_normal((B, C // 8, H, W)).astype(np.float32)
    v = rng.standard_normal((B, C, H, W)).astype(np.float32)
    return q, k, v


# -- the PyTorch formulations of criss-cross attention, written from their formulas --

def torch_bmm(q, k, v):
    """Official CCNet pure-python formulation: batched matmuls per column and per row."""
    import torch
    B, _, H, W = q.shape
    neg_inf_diag = torch.diag(torch.full((H,), float("-inf"), dtype=q.dtype, device=q.device)).unsqueeze(0)
    q_col = q.permute(0, 3, 2, 1).reshape(B * W, H, -1)          # [(b x), y, c]
    k_col = k.permute(0, 3, 1, 2).reshape(B * W, -1, H)          # [(b x), c, j]
    q_row = q.permute(0, 2, 3, 1).reshape(B * H, W, -1)          # [(b y), x, c]
    k_row = k.permute(0, 2, 1, 3).reshape(B * H, -1, W)          # [(b y), c, i]
    e_col = (torch.bmm(q_col, k_col) + neg_inf_diag).view(B, W, H, H).permute(0, 2, 1, 3)  # [b, y, x, j]
    e_row = torch.bmm(q_row, k_row).view(B, H, W, W)                                       # [b, y, x, i]
    attention = torch.softmax(torch.cat([e_col, e_row], 3), dim=3)
    a_col = attention[..., :H].permute(0, 2, 3, 1).reshape(B * W, H, H)   # [(b x), j, y]
    a_row = attention[..., H:].permute(0, 1, 3, 2).reshape(B * H, W, W)   # [(b y), i, x]
    v_col = v.permute(0, 3, 1, 2).reshape(B * W, -1, H)                   # [(b x), c, j]
    v_row = v.permute(0, 2, 1, 3).reshape(B * H, -1, W)                   # [(b y), c, i]
    out_col = torch.bmm(v_col, a_col).view(B, W, -1, H).permute(0, 2, 3, 1)
    out_row = torch.bmm(v_row, a_row).view(B, H, -1, W).permute(0, 2, 1, 3)
    return out_col + out_row


def torch_einsum(q, k, v):
    """mmcv formulation: einsum energies, -inf on the column's self entry."""
    import torch
    B, _, H, W = q.shape
    neg_inf_diag = torch.diag(torch.full((H,), float("-inf"), dtype=q.dtype, device=q.device))
    e_col = torch.einsum("bchw,bciw->bwhi", q, k) + neg_inf_diag   # [b, x, y, j]
    e_col = e_col.transpose(1, 2)                                   # [b, y, x, j]
    e_row = torch.einsum("bchw,bchj->bhwj", q, k)                   # [b, y, x, i]
    attention = torch.softmax(torch.cat([e_col, e_row], dim=-1), dim=-1)
    return (torch.einsum("bciw,bhwi->bchw", v, attention[..., :H])
            + torch.einsum("bchj,bhwj->bchw", v, attention[..., H:]))
