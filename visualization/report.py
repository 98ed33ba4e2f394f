"""compare.py's report as text: the runs and per-class tables, the figures, ``report.md``.

Everything here draws what it is given (rows of numbers, logged rows); what
the numbers are is decided by ``apis.compare``.
"""
from __future__ import annotations

import io
import math
from typing import Optional, Sequence

from utils.formatting import as_number, percent

__all__ = ["LOSS_KEYS", "RUN_COLUMNS", "format_runs_table", "format_per_class_table", "plot_curves",
           "plot_per_class", "report_markdown"]

#: The loss parts train.py logs, in the order of the panels.
LOSS_KEYS = ("loss", "loss_main", "loss_aux")


def _eval_text(e: dict) -> str:
    mode = e.get("mode") or "?"
    if mode == "slide" and e.get("crop_size"):
        mode += f" {'x'.join(map(str, e['crop_size']))}/{'x'.join(map(str, e.get('stride') or []))}"
    scales = ",".join(f"{s:g}" for s in e.get("scales") or [1.0])
    return f"{mode}, scales {scales}" + (", flip" if e.get("flip") else "")


RUN_COLUMNS = ("run", "model", "backbone", "params (M)", "backbone + head (M)", "GFLOPs", "FLOPs input",
               "iters", "best mIoU", "final mIoU", "aAcc", "mAcc", "evaluation")


def _run_cells(row: dict) -> list[str]:
    p = row["parameters"]
    size = row["flops_input"]
    best = (f"{percent(row['best_mIoU'])} @{row['best_mIoU_iter']}" if row["best_mIoU"] is not None else "-")
    return [row["label"], row["model"], row["backbone"], f"{p['total'] / 1e6:.3f}",
            f"{p['backbone'] / 1e6:.3f} + {p['head'] / 1e6:.3f}",
            f"{row['gflops']:.4g}" if row["gflops"] is not None else "-",
            (f"{size[0]}x{size[1]} ({row['flops_input_what']})" if size else "unknown"),
            str(row["iterations"]) if row["iterations"] is not None else "-",
            best, percent(row["final_mIoU"]), percent(row["aAcc"]), percent(row["mAcc"]), _eval_text(row["eval"])]


def _per_class_columns(labels: Sequence[str]) -> list[str]:
    return ["class"] + [f"IoU {lab}" for lab in labels] + [f"{lab} - {labels[0]}" for lab in labels[1:]]


def _per_class_cells(row: dict, labels: Sequence[str]) -> list[str]:
    return ([row["class"]] + [percent(row["IoU"][lab]) for lab in labels]
            + [percent(row["diff"][lab], signed=True) for lab in labels[1:]])


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def format_runs_table(rows: Sequence[dict], markdown: bool = False) -> str:
    """The runs table (percentages with 2 decimals, parameters in millions)."""
    return (_md_table if markdown else _text_table)(RUN_COLUMNS, [_run_cells(r) for r in rows])


def format_per_class_table(table: Sequence[dict], labels: Sequence[str], markdown: bool = False) -> str:
    """The per-class IoU table (%), in the order of :func:`per_class_table`."""
    return (_md_table if markdown else _text_table)(_per_class_columns(labels),
                                                    [_per_class_cells(r, labels) for r in table])


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (only for the figures)
    from matplotlib.figure import Figure  # noqa: PLC0415
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot or a display
    return fig


def _colours(n: int) -> list:
    from matplotlib import colormaps  # noqa: PLC0415
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_curves(train: Sequence[Sequence[dict]], val: Sequence[Sequence[dict]],
                labels: Sequence[str]) -> Optional[bytes]:
    """PNG bytes: loss parts, learning rate and validation mIoU against the iteration; None without logs.

    ``train`` and ``val`` hold each run's logged training and validation rows
    (``log.jsonl``, ``engine.run_log.train_rows`` / ``val_rows``).
    """
    if not any(train):
        return None
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  (only for the figures)
    panels = [(k, "loss" if k == "loss" else k.replace("_", " "), k) for k in LOSS_KEYS
              if any(k in row for rows in train for row in rows)]
    panels.append(("lr", "learning rate", "lr"))
    if any(val):
        panels.append(("val/mIoU", "validation mIoU (%)", "val/mIoU"))
    cols = 3
    rows = math.ceil((len(panels) + 1) / cols)
    fig = _figure(5.2 * cols, 3.9 * rows)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    colours = _colours(len(labels))
    titles = {"loss": "total loss (main + aux weight x aux)", "loss_main": "main head loss",
              "loss_aux": "auxiliary head loss", "lr": "learning rate", "val/mIoU": "validation mIoU"}
    last = max((r["iter"] for rows in (*train, *val) for r in rows), default=1)
    styles = ("-", "--", ":", "-.")
    lrs = [as_number(r.get("lr")) for rows in train for r in rows]
    lr_top = max((v for v in lrs if v is not None and math.isfinite(v) and v > 0), default=1.0)
    lr_unit = 10.0 ** math.floor(math.log10(lr_top))
    for ax, (key, ylabel, _) in zip(axes, panels):
        for j, (train_rows, val_rows, lab, colour) in enumerate(zip(train, val, labels, colours)):
            source = val_rows if key == "val/mIoU" else train_rows
            pts = [(r["iter"], as_number(r.get(key))) for r in source if as_number(r.get(key)) is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if key == "val/mIoU":
                ax.plot(xs, [100 * y for y in ys], marker="o", color=colour, label=lab)
            elif key == "lr":  # schedules often coincide: line styles and widths keep each run visible
                ax.plot(xs, [y / lr_unit for y in ys], color=colour, linestyle=styles[j % 4],
                        linewidth=max(3.5 - j, 1.2), label=lab)
            else:
                ax.plot(xs, ys, color=colour, linewidth=1.3, label=lab, marker="." if len(xs) <= 40 else None)
        ax.set_title(titles.get(key, key))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, last * 1.03)
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"learning rate (x {lr_unit:g})" if key == "lr" else ylabel)
        ax.grid(True, alpha=0.3)
    legend_ax = axes[len(panels)]
    legend_ax.axis("off")
    handles = [legend_ax.plot([], [], color=c, linewidth=2.5, label=lab)[0] for lab, c in zip(labels, colours)]
    if len(panels) >= 4:
        legend_ax.text(0.5, 0.12, "learning rate: one line style per run", ha="center", fontsize=9,
                       transform=legend_ax.transAxes, color="0.35")
    legend_ax.legend(handles=handles, loc="center", title="runs", fontsize=11, title_fontsize=12, frameon=False)
    for ax in axes[len(panels) + 1:]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def plot_per_class(table: Sequence[dict], labels: Sequence[str], class_names: Sequence[str],
                   title: str = "per-class IoU") -> bytes:
    """PNG bytes: grouped bars of per-class IoU (%), one colour per run, in the dataset's class order."""
    rows = {r["class"]: r for r in table}
    n_classes, n_runs = len(class_names), len(labels)
    width = min(40.0, max(9.0, 0.35 * n_classes * max(2, n_runs) + 2))
    fig = _figure(width, 5.6)
    ax = fig.add_subplot(1, 1, 1)
    bar = 0.8 / n_runs
    annotate = n_classes * n_runs <= 48
    for j, (lab, colour) in enumerate(zip(labels, _colours(n_runs))):
        xs = [i - 0.4 + bar * (j + 0.5) for i in range(n_classes)]
        ys = [rows[c]["IoU"][lab] for c in class_names]
        heights = [100 * y if y is not None else 0.0 for y in ys]
        ax.bar(xs, heights, width=bar * 0.95, color=colour, label=lab)
        if annotate:
            for x, y in zip(xs, ys):
                ax.annotate("n/a" if y is None else f"{100 * y:.1f}", (x, 100 * y if y is not None else 0.0),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(n_classes))
    ax.set_xticklabels(class_names, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.6, n_classes - 0.4)
    ax.set_ylim(0, 108)
    ax.set_ylabel("IoU (%)")
    ax.set_xlabel("class")
    fig.suptitle(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(n_runs, 6), frameon=False)
    fig.tight_layout()
    return _png(fig)


def report_markdown(report: dict, runs_md: str, per_class_md: Optional[str], figures: dict, notes: list[str]) -> str:
    """``report.md``: the command, the runs table, the per-class table, the figures and the notes."""
    labels = [r["label"] for r in report["runs"]]
    lines = [f"# Comparison: {' vs '.join(labels)}", "",
             f"Dataset `{report['dataset']}`, split `{report['split']}`"
             + (f" ({report['runs'][0]['images']} images)" if report["runs"][0].get("images") else "")
             + ". Made by:", "",
             "```bash", report["command"], "```", "", "## Runs", "", runs_md, "",
             "* params: trainable parameters (backbone + neck and heads); GFLOPs: one forward pass at the FLOPs "
             "input size (batch 1, one scale, no flip), 2 x multiply-adds of the convolutions, linear layers "
             "and attention products (`models/complexity.py`), auxiliary head not run.",
             "* best mIoU: the best validation logged during training (`log.jsonl`, the dataset preset's "
             "single-scale evaluation), with its iteration; final mIoU, aAcc, mAcc: the evaluation results "
             "(" + "; ".join(f"{r['label']}: `{r['source']}`" for r in report["runs"]) + ").", ""]
    if per_class_md:
        lines += [f"## Per-class IoU (%), sorted by {labels[1]} - {labels[0]}" if len(labels) > 1
                  else "## Per-class IoU (%)", "", per_class_md, ""]
    for name, title in (("curves", "Training curves"), ("per_class", "Per-class IoU")):
        if figures.get(name):
            lines += [f"## {title}", "", f"![{title}]({figures[name]})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in notes] + [""]
    return "\n".join(lines)
