"""compare.py's report: several runs side by side (size, cost, training curves, scores, per-class IoU).

A run is given as

* a train.py run folder (``config.json`` + ``log.jsonl``): its evaluation
  results come from ``eval_<val split>/results.json`` (evaluate.py's default
  output) when there is one, else from the last validation row of the log;
* an evaluate.py results folder (``results.json``): its ``settings`` name the
  checkpoint, whose run folder, when it can be found, gives the training
  curves and the configuration.

For each run :func:`run` reports the model and backbone, the trainable
parameters and the GFLOPs of one forward pass (:mod:`engine.complexity`, on
the model rebuilt from ``config.json`` -- no weights needed) at the evaluation
input size (the sliding-window crop, else the evaluated image size), the
iterations trained, the best logged validation mIoU and the final one, aAcc,
mAcc and the evaluation settings; then the per-class IoU of every run with its
difference to the first run, sorted by that difference. It writes
``curves.png`` (loss parts, learning rate and validation mIoU against the
iteration), ``per_class.png`` (grouped bars), ``report.md`` (the tables, the
figures, the command) and ``report.json`` (every number in the tables).

Runs evaluated on different datasets or splits are refused, as are runs
without evaluation results, before any work is done.
"""
from __future__ import annotations

import datetime
import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from datasets import build_dataset, get_preset
from engine import run_folder
from engine.checkpoint import CheckpointError, read_model_file
from engine.complexity import count_flops, count_parameters
from models import MODEL_PRESETS, build_model
from pretrained.io import atomic_write, check_output_dir, write_json

__all__ = ["ReportError", "RunRecord", "read_log", "load_run", "summarize_run", "per_class_table",
           "format_runs_table", "format_per_class_table", "plot_curves", "plot_per_class", "run"]

#: The loss parts train.py logs, in the order of the panels.
LOSS_KEYS = ("loss", "loss_main", "loss_aux")


class ReportError(ValueError):
    """A run cannot be read or compared; the message says why and what to do."""


@dataclass
class RunRecord:
    """One run as read from its files (nothing computed yet)."""

    path: str                      # as given
    run_dir: Optional[str]         # the train.py run folder, when known
    eval_dir: Optional[str]        # the folder of results.json, None when the scores come from the log
    config: dict                   # config.json ({} without a run folder)
    log: list[dict]                # log.jsonl rows ([] without one)
    metrics: dict                  # final mIoU, mAcc, aAcc (fractions)
    per_class: Optional[dict]      # class name -> {"IoU", "Acc"}; None when the scores come from the log
    settings: dict                 # dataset, split, mode, crop_size, stride, scales, flip, model, recurrence
    source: str                    # which file the final scores come from
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading runs

def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None


def _number(value: Any) -> Optional[float]:
    """A logged number as float (the logger writes NaN/inf as strings); None when absent."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_log(path: str) -> list[dict]:
    """The rows of a ``log.jsonl`` ([] if there is none); a line cut by a kill is skipped."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "iter" in row:
                rows.append(row)
    return rows


def _train_rows(log: list[dict]) -> list[dict]:
    return [r for r in log if "loss" in r and "event" not in r]


def _val_rows(log: list[dict]) -> list[dict]:
    return [r for r in log if "val/mIoU" in r]


def _evaluate_hint(path: str) -> str:
    return f"python evaluate.py --checkpoint {path}"


def _from_results(path: str, eval_dir: str, run_dir: Optional[str], config: dict, log: list[dict]) -> RunRecord:
    results_path = os.path.join(eval_dir, "results.json")
    results = _read_json(results_path)
    if not isinstance(results, dict) or not isinstance(results.get("settings"), dict):
        raise ReportError(f"{results_path} is not an evaluate.py results file (no 'settings')")
    settings = dict(results["settings"])
    if results.get("mIoU") is None:
        raise ReportError(f"{results_path} holds no scores (an unlabelled split such as test?); evaluate a "
                          f"labelled split: {_evaluate_hint(run_dir or path)} --split val")
    for key in ("dataset", "split", "model"):
        if not settings.get(key):
            raise ReportError(f"{results_path} does not record the {key} it was evaluated with; "
                              f"evaluate again with: {_evaluate_hint(run_dir or path)}")
    metrics = {k: _number(results.get(k)) for k in ("mIoU", "mAcc", "aAcc")}
    metrics["images"] = results.get("images")
    return RunRecord(path=path, run_dir=run_dir, eval_dir=eval_dir, config=config, log=log, metrics=metrics,
                     per_class=results.get("per_class"), settings=settings,
                     source=os.path.relpath(results_path, run_dir) if run_dir else results_path)


def _from_run_folder(path: str, folder: str) -> RunRecord:
    config = _read_json(os.path.join(folder, "config.json"))
    log = read_log(os.path.join(folder, "log.jsonl"))
    notes = [] if log else [f"{path} has no log.jsonl: no training curves"]
    val_split = config.get("val_split") or get_preset(config.get("dataset", "cityscapes")).val_split
    evals = sorted(d for d in os.listdir(folder)
                   if d.startswith("eval_") and os.path.isfile(os.path.join(folder, d, "results.json")))
    chosen = f"eval_{val_split}" if f"eval_{val_split}" in evals else evals[0] if len(evals) == 1 else None
    if chosen is None and evals:
        raise ReportError(f"{path} holds several evaluations ({', '.join(evals)}) and none of the val split "
                          f"{val_split!r}; give the one to compare, e.g. {os.path.join(path, evals[0])}")
    if chosen is not None:
        record = _from_results(path, os.path.join(folder, chosen), folder, config, log)
        record.notes[:0] = notes
        return record
    val = _val_rows(log)
    if not val:
        raise ReportError(f"{path} has no evaluation results (no eval_*/results.json and no validation in "
                          f"log.jsonl); evaluate it first: {_evaluate_hint(path)}")
    last = val[-1]
    preset = get_preset(config["dataset"])
    settings = {"checkpoint": None, "model": config.get("model"), "recurrence": config.get("recurrence"),
                "dataset": config["dataset"], "split": val_split, "mode": preset.test_mode,
                "crop_size": list(preset.test_crop) if preset.test_crop else None,
                "stride": list(preset.test_stride) if preset.test_stride else None, "scales": [1.0], "flip": False}
    notes.append(f"{path}: scores from the validation logged at iteration {last['iter']} (no per-class IoU; "
                 f"for those: {_evaluate_hint(path)})")
    return RunRecord(path=path, run_dir=folder, eval_dir=None, config=config, log=log,
                     metrics={k: _number(last.get(f"val/{k}")) for k in ("mIoU", "mAcc", "aAcc")},
                     per_class=None, settings=settings, source=f"log.jsonl (iteration {last['iter']})", notes=notes)


def _find_run_dir(eval_dir: str, checkpoint: Optional[str]) -> Optional[str]:
    """The run folder of an evaluation's checkpoint (recorded as given, perhaps relative to another folder)."""
    candidates = []
    if checkpoint:
        candidates.append(checkpoint if os.path.isabs(checkpoint) else os.path.abspath(checkpoint))
        candidates.append(os.path.join(os.path.dirname(eval_dir), os.path.basename(checkpoint)))
    candidates.append(os.path.dirname(eval_dir))  # evaluate.py's default: <run folder>/eval_<split>
    for candidate in candidates:
        folder = candidate if os.path.isdir(candidate) else os.path.dirname(candidate)
        if run_folder.is_run_folder(folder):
            return folder
    return None


def _from_eval_folder(path: str, folder: str) -> RunRecord:
    settings = (_read_json(os.path.join(folder, "results.json")) or {}).get("settings") or {}
    run_dir = _find_run_dir(folder, settings.get("checkpoint"))
    config = _read_json(os.path.join(run_dir, "config.json")) if run_dir else {}
    log = read_log(os.path.join(run_dir, "log.jsonl")) if run_dir else []
    record = _from_results(path, folder, run_dir, config, log)
    if run_dir is None:
        checkpoint = settings.get("checkpoint")
        record.notes.append(f"{path}: the checkpoint {checkpoint} is not in a train.py run folder: no training "
                            "curves, iterations or best mIoU")
        try:  # a train.py checkpoint records its configuration (build options, data path), a weights file less
            record.config = dict(read_model_file(checkpoint).settings)
        except (CheckpointError, TypeError):
            record.notes.append(f"{path}: cannot read the checkpoint {checkpoint}: parameters and FLOPs are those "
                                f"of the {settings['model']} preset without build options")
    return record


def load_run(path: str) -> RunRecord:
    """Read a run folder or an evaluation folder (or its ``results.json``); ReportError if it is neither."""
    folder = os.path.abspath(path)
    if os.path.isfile(folder) and os.path.basename(folder) == "results.json":
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ReportError(f"{path}: no such folder; give a train.py run folder or an evaluate.py results folder")
    if run_folder.is_run_folder(folder):
        return _from_run_folder(path, folder)
    if os.path.isfile(os.path.join(folder, "results.json")):
        return _from_eval_folder(path, folder)
    raise ReportError(f"{path} is neither a train.py run folder (config.json written by train.py, log.jsonl) "
                      f"nor an evaluate.py results folder (results.json); give one of those")


# --------------------------------------------------------------------------- what the tables hold

def backbone_name(model: str, model_opts: dict) -> str:
    """A short description of the preset's backbone (with the build options' widths, if any)."""
    preset = MODEL_PRESETS[model]
    kwargs = {**preset["backbone_kwargs"], **(model_opts.get("backbone_kwargs") or {})}
    name = preset["backbone"]
    if name.startswith("resnet"):
        return f"ResNet-{name[len('resnet'):]} ({kwargs.get('stem', 'deep')} stem)"
    if name.startswith("van_b"):
        if "embed_dims" in kwargs:
            return "VAN " + "-".join(str(d) for d in kwargs["embed_dims"])
        return "VAN-B" + name[len("van_b"):]
    return name


def _eval_input_size(record: RunRecord, model, input_size: Optional[Sequence[int]]) -> tuple[Optional[list], str]:
    """The (H, W) of one evaluated forward pass and what it is: the sliding crop, the image, or given."""
    s = record.settings
    if input_size:
        return [int(v) for v in input_size], "given (--input-size)"
    if s.get("mode") == "slide" and s.get("crop_size"):
        return [int(v) for v in s["crop_size"]], "sliding-window crop"
    data_path = record.config.get("data_path") or os.path.join("data", s["dataset"])
    try:
        ds = build_dataset(s["dataset"], data_path, split=s["split"], train=False, input_norm=model.input_norm,
                           num_workers=0)
        image = ds.load(0)[0]
    except (ValueError, OSError) as exc:
        record.notes.append(f"{record.path}: the evaluated image size is unknown ({str(exc).splitlines()[0]}); "
                            "give it with --input-size H W")
        return None, "unknown"
    preset = get_preset(s["dataset"])
    what = "whole image" + (f" resized to fit {preset.test_size}" if preset.test_size else "")
    return [int(image.shape[1]), int(image.shape[2])], what


def _shown(path: Optional[str]) -> Optional[str]:
    """A path relative to the working folder when it lies inside it (reports stay portable), else absolute."""
    if not path:
        return path
    rel = os.path.relpath(path)
    return path if rel == ".." or rel.startswith(".." + os.sep) else rel


def summarize_run(record: RunRecord, label: str, input_size: Optional[Sequence[int]] = None) -> dict:
    """The row of ``record`` in the runs table (every number as read or counted; fractions, not %)."""
    s = record.settings
    model_name = s.get("model") or record.config.get("model")
    if model_name not in MODEL_PRESETS:
        raise ReportError(f"{record.path}: unknown model preset {model_name!r}")
    preset = get_preset(s["dataset"])
    num_classes = int(record.config.get("num_classes") or preset.num_classes)
    model_opts = dict(record.config.get("model_opts") or {})
    recurrence = s.get("recurrence") if s.get("recurrence") is not None else record.config.get("recurrence")
    model = build_model(model_name, num_classes, recurrence=recurrence, **model_opts)
    params = count_parameters(model)
    size, what = _eval_input_size(record, model, input_size)
    flops = count_flops(model, size) if size else None
    train = _train_rows(record.log)
    val = [(r["iter"], _number(r["val/mIoU"])) for r in _val_rows(record.log)]
    val = [(it, v) for it, v in val if v is not None and math.isfinite(v)]
    best = max(val, key=lambda iv: iv[1]) if val else None
    return {
        "label": label, "path": record.path, "run_dir": _shown(record.run_dir), "eval_dir": _shown(record.eval_dir),
        "source": record.source, "model": model_name, "backbone": backbone_name(model_name, model_opts),
        "num_classes": num_classes, "recurrence": int(model.recurrence), "model_opts": model_opts,
        "parameters": {k: params[k] for k in ("total", "backbone", "head")},
        "gflops": flops["gflops"] if flops else None, "flops_by_kind": flops["by_kind"] if flops else None,
        "flops_input": size, "flops_input_what": what,
        "iterations": int(train[-1]["iter"]) if train else None, "iterations_planned": record.config.get("iters"),
        "best_mIoU": best[1] if best else None, "best_mIoU_iter": int(best[0]) if best else None,
        "final_mIoU": record.metrics["mIoU"], "aAcc": record.metrics["aAcc"], "mAcc": record.metrics["mAcc"],
        "dataset": s["dataset"], "split": s["split"], "images": record.metrics.get("images"),
        "eval": {k: s.get(k) for k in ("mode", "crop_size", "stride", "scales", "flip")},
        "checkpoint": s.get("checkpoint"),
    }


def per_class_table(records: Sequence[RunRecord], labels: Sequence[str], class_names: Sequence[str]) -> list[dict]:
    """Per-class IoU of every run and its difference to the first run, sorted by the second run's difference.

    Rows ``{"class", "IoU": {label: IoU}, "diff": {label: IoU - first IoU}}`` (runs 2.. only), largest
    difference first; a class without an IoU in some run (absent everywhere: NaN) goes last.
    Only runs with per-class results take part.
    """
    rows = []
    for name in class_names:
        iou = {lab: _number((rec.per_class.get(name) or {}).get("IoU")) for rec, lab in zip(records, labels)}
        first = iou[labels[0]]
        diff = {lab: (iou[lab] - first if iou[lab] is not None and first is not None else None)
                for lab in labels[1:]}
        rows.append({"class": name, "IoU": iou, "diff": diff})
    key = labels[1] if len(labels) > 1 else None

    def order(row):
        d = row["diff"].get(key) if key else row["IoU"][labels[0]]
        return (d is None, -(d if d is not None else 0.0))
    return sorted(rows, key=order)


# --------------------------------------------------------------------------- tables as text / Markdown

def _pct(v: Optional[float], signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"


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
    best = (f"{_pct(row['best_mIoU'])} @{row['best_mIoU_iter']}" if row["best_mIoU"] is not None else "-")
    return [row["label"], row["model"], row["backbone"], f"{p['total'] / 1e6:.3f}",
            f"{p['backbone'] / 1e6:.3f} + {p['head'] / 1e6:.3f}",
            f"{row['gflops']:.4g}" if row["gflops"] is not None else "-",
            (f"{size[0]}x{size[1]} ({row['flops_input_what']})" if size else "unknown"),
            str(row["iterations"]) if row["iterations"] is not None else "-",
            best, _pct(row["final_mIoU"]), _pct(row["aAcc"]), _pct(row["mAcc"]), _eval_text(row["eval"])]


def _per_class_columns(labels: Sequence[str]) -> list[str]:
    return ["class"] + [f"IoU {lab}" for lab in labels] + [f"{lab} - {labels[0]}" for lab in labels[1:]]


def _per_class_cells(row: dict, labels: Sequence[str]) -> list[str]:
    return ([row["class"]] + [_pct(row["IoU"][lab]) for lab in labels]
            + [_pct(row["diff"][lab], signed=True) for lab in labels[1:]])


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


# --------------------------------------------------------------------------- figures

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


def plot_curves(records: Sequence[RunRecord], labels: Sequence[str]) -> Optional[bytes]:
    """PNG bytes: loss parts, learning rate and validation mIoU against the iteration; None without logs."""
    if not any(_train_rows(r.log) for r in records):
        return None
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  (only for the figures)
    panels = [(k, "loss" if k == "loss" else k.replace("_", " "), k) for k in LOSS_KEYS
              if any(k in row for r in records for row in _train_rows(r.log))]
    panels.append(("lr", "learning rate", "lr"))
    if any(_val_rows(r.log) for r in records):
        panels.append(("val/mIoU", "validation mIoU (%)", "val/mIoU"))
    cols = 3
    rows = math.ceil((len(panels) + 1) / cols)
    fig = _figure(5.2 * cols, 3.9 * rows)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    colours = _colours(len(records))
    titles = {"loss": "total loss (main + aux weight x aux)", "loss_main": "main head loss",
              "loss_aux": "auxiliary head loss", "lr": "learning rate", "val/mIoU": "validation mIoU"}
    last = max((r["iter"] for rec in records for r in rec.log), default=1)
    styles = ("-", "--", ":", "-.")
    lrs = [_number(r.get("lr")) for rec in records for r in _train_rows(rec.log)]
    lr_top = max((v for v in lrs if v is not None and math.isfinite(v) and v > 0), default=1.0)
    lr_unit = 10.0 ** math.floor(math.log10(lr_top))
    for ax, (key, ylabel, _) in zip(axes, panels):
        for j, (rec, lab, colour) in enumerate(zip(records, labels, colours)):
            source = _val_rows(rec.log) if key == "val/mIoU" else _train_rows(rec.log)
            pts = [(r["iter"], _number(r.get(key))) for r in source if _number(r.get(key)) is not None]
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


# --------------------------------------------------------------------------- compare.py

def _check_labels(labels: Sequence[str], records: Sequence[RunRecord], given: bool) -> None:
    seen: dict[str, str] = {}
    for lab, rec in zip(labels, records):
        if lab in seen:
            if given:
                raise ReportError(f"--labels must be distinct; {lab!r} is given for {seen[lab]} and {rec.path}")
            names = " ".join(os.path.basename(os.path.normpath(r.path)) or "run" for r in records)
            raise ReportError(f"{seen[lab]} and {rec.path} would both be labelled {lab!r} (their model preset); "
                              f"name the runs with --labels, e.g. --labels {names}")
        seen[lab] = rec.path


def _check_same_evaluation(records: Sequence[RunRecord]) -> None:
    first = records[0]
    for rec in records[1:]:
        a = (first.settings["dataset"], first.settings["split"])
        b = (rec.settings["dataset"], rec.settings["split"])
        if a != b:
            raise ReportError(f"cannot compare runs evaluated on different data: {first.path} on {a[0]}/{a[1]}, "
                              f"{rec.path} on {b[0]}/{b[1]}; compare runs evaluated on the same dataset and "
                              f"split (evaluate.py --split)")


def _markdown(report: dict, runs_md: str, per_class_md: Optional[str], figures: dict, notes: list[str]) -> str:
    labels = [r["label"] for r in report["runs"]]
    lines = [f"# Comparison: {' vs '.join(labels)}", "",
             f"Dataset `{report['dataset']}`, split `{report['split']}`"
             + (f" ({report['runs'][0]['images']} images)" if report["runs"][0].get("images") else "")
             + ". Made by:", "",
             "```bash", report["command"], "```", "", "## Runs", "", runs_md, "",
             "* params: trainable parameters (backbone + neck and heads); GFLOPs: one forward pass at the FLOPs "
             "input size (batch 1, one scale, no flip), 2 x multiply-adds of the convolutions, linear layers "
             "and attention products (`engine/complexity.py`), auxiliary head not run.",
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


def run(options: dict) -> dict:
    """compare.py: read the runs, check them, print the tables and write the report folder; returns report.json.

    ``options``: ``runs`` (paths), ``output_dir``, ``labels`` (or None), ``input_size`` (H W or None),
    ``command`` (the command line recorded in report.md).
    """
    out_dir = options.get("output_dir") or "report"
    check_output_dir(out_dir, "-o/--output-dir")
    paths = list(options["runs"])
    if len(paths) < 2:
        raise ReportError(f"give at least two runs to compare, got {len(paths)}")
    given = options.get("labels")
    if given is not None and len(given) != len(paths):
        raise ReportError(f"--labels: {len(given)} label(s) for {len(paths)} runs; give one per run")
    input_size = options.get("input_size")
    if input_size is not None and (len(input_size) != 2 or min(input_size) < 32):
        raise ReportError(f"--input-size takes H W of at least 32 pixels, got {list(input_size)}")
    records = [load_run(p) for p in paths]
    _check_same_evaluation(records)
    labels = list(given) if given is not None else [r.settings.get("model") or "?" for r in records]
    _check_labels(labels, records, given is not None)

    rows = [summarize_run(rec, lab, input_size) for rec, lab in zip(records, labels)]
    dataset, split = records[0].settings["dataset"], records[0].settings["split"]
    class_names = list(get_preset(dataset).class_names)
    with_classes = [(rec, lab) for rec, lab in zip(records, labels) if rec.per_class]
    notes = [n for rec in records for n in rec.notes]
    table = None
    if len(with_classes) >= 1:
        table = per_class_table([r for r, _ in with_classes], [lab for _, lab in with_classes], class_names)
    class_labels = [lab for _, lab in with_classes]
    if len(with_classes) < len(records):
        notes.append("the per-class table and figure hold only the runs with evaluate.py results: "
                     + ", ".join(class_labels or ["none"]))

    runs_txt = format_runs_table(rows)
    print(f"runs evaluated on {dataset}/{split}:\n{runs_txt}\n", flush=True)
    if table is not None:
        title = (f"per-class IoU (%), sorted by {class_labels[1]} - {class_labels[0]}" if len(class_labels) > 1
                 else "per-class IoU (%)")
        print(f"{title}:\n{format_per_class_table(table, class_labels)}\n", flush=True)

    figures = {}
    curves = plot_curves(records, labels)
    if curves is not None:
        atomic_write(os.path.join(out_dir, "curves.png"), curves)
        figures["curves"] = "curves.png"
    else:
        notes.append("no run has a training log: no curves.png")
    if table is not None:
        png = plot_per_class(table, class_labels, class_names, title=f"per-class IoU on {dataset}/{split}")
        atomic_write(os.path.join(out_dir, "per_class.png"), png)
        figures["per_class"] = "per_class.png"

    report = {"command": options.get("command") or "python compare.py " + " ".join(paths),
              "created": datetime.datetime.now().isoformat(timespec="seconds"), "dataset": dataset, "split": split,
              "runs": rows, "per_class_labels": class_labels, "per_class": table, "figures": figures, "notes": notes}
    md = _markdown(report, format_runs_table(rows, markdown=True),
                   format_per_class_table(table, class_labels, markdown=True) if table is not None else None,
                   figures, notes)
    atomic_write(os.path.join(out_dir, "report.md"), md, binary=False)
    write_json(os.path.join(out_dir, "report.json"), report)
    for note in notes:
        print(f"note: {note}", flush=True)
    print(f"report: {os.path.join(out_dir, 'report.md')} (+ report.json"
          + "".join(f", {f}" for f in figures.values()) + ")", flush=True)
    return report
