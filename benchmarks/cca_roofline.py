"""Roofline estimate of the criss-cross attention CUDA kernels: a table, no GPU needed.

For each kernel launch of the op (the forward's two products, the backward's
four) at a value shape [B, C, H, W] (query/key C/8 channels): its FLOPs, the
least bytes it must move (every input read once, the output written once:
bench_common.cca_products) and the bytes our kernels move (map's column kernel
reads and writes its output a second time), in float32 and float16; then the
time each would take on each card at its datasheet bandwidth and float32 peak
(bench_common.GPU_PEAKS; our kernels compute float16 data in float32):
max(bytes / bandwidth, FLOPs / peak). An estimate, not a measurement:
benchmarks/gpu_check.py measures.

    python benchmarks/cca_roofline.py                       # [2, 512, 97, 97], V100 SXM2 and H100 SXM
    python benchmarks/cca_roofline.py --shape 1 512 129 257
"""
from __future__ import annotations

import argparse
import sys

from bench_common import GPU_PEAKS, cca_products

CARDS = {"V100": r"V100.*SXM2", "H100": r"H100"}  # the GPU_PEAKS entries of the table's cards
MAPS = ("map", "weight dq", "weight dk", "map dv")  # launches of map: row kernel, then column kernel adding


def rows(B: int, C: int, H: int, W: int) -> list[dict]:
    products = cca_products(B, C // 8, C, H, W)
    out_elements = {"map": B * C * H * W, "map dv": B * C * H * W,
                    "weight dq": B * (C // 8) * H * W, "weight dk": B * (C // 8) * H * W}
    table = []
    for name, p in products.items():
        ours = p["elements"] + (2 * out_elements[name] if name in MAPS else 0)
        row = {"product": name, "gflop": p["flops"] / 1e9}
        for dtype, size in (("float32", 4), ("float16", 2)):
            row[f"least_mb_{dtype}"] = p["elements"] * size / 1e6
            row[f"ours_mb_{dtype}"] = ours * size / 1e6
            for card, pattern in CARDS.items():
                peak = GPU_PEAKS[pattern]
                memory_us = ours * size / (peak["gb_s"] * 1e9) * 1e6
                compute_us = p["flops"] / (peak["fp32_tflop_s"] * 1e12) * 1e6
                row[f"{card}_{dtype}_us"] = max(memory_us, compute_us)
                row[f"{card}_{dtype}_bound"] = "memory" if memory_us > compute_us else "compute"
        table.append(row)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 512, 97, 97], metavar=("B", "C", "H", "W"))
    args = parser.parse_args(argv)
    table = rows(*args.shape)
    cards = ", ".join(f"{c}: {GPU_PEAKS[p]['gb_s']} GB/s, {GPU_PEAKS[p]['fp32_tflop_s']} float32 TFLOP/s"
                      for c, p in CARDS.items())
    print(f"value {args.shape}, query/key {args.shape[1] // 8} channels; {cards} (datasheets)\n")
    print("| launch | GFLOP | MB fp32 (least / ours) | MB fp16 (least / ours) | V100 fp32 | V100 fp16 "
          "| H100 fp32 | H100 fp16 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        times = " | ".join(f"{r[f'{c}_{d}_us']:.0f} us ({r[f'{c}_{d}_bound']})"
                           for c in CARDS for d in ("float32", "float16"))
        print(f"| {r['product']} | {r['gflop']:.3f} | {r['least_mb_float32']:.1f} / {r['ours_mb_float32']:.1f} "
              f"| {r['least_mb_float16']:.1f} / {r['ours_mb_float16']:.1f} | {times} |")
    total = {f"{c}_{d}": sum(r[f"{c}_{d}_us"] for r in table) for c in CARDS for d in ("float32", "float16")}
    print("| forward + backward | {:.2f} | | | {} |".format(
        sum(r["gflop"] for r in table), " | ".join(f"{v:.0f} us" for v in total.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
