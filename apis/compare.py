"""compare.py's report: several runs side by side (size, cost, training curves, scores, per-class IoU).

A run is given as

* a train.py run folder (``config.json`` + ``log.jsonl``): its evaluation
  results come from ``eval_<val split>/results.json`` (evaluate.py's default
  output) when there is one, else from the last validation row of the log;
* an evaluate.py results folder (``results.json``): its ``settings`` name the
  checkpoint, whose run folder, when it can be found, gives the training
  curves and the configuration.

For each run :func:`run` reports the model and backbone, the trainable
parameters and the GFLOPs of one forward pass (:mod:`models.complexity`, on
the model rebuilt from ``config.json`` -- no weights needed) at the evaluation
input size (the sliding-window crop, else the evaluated image size), the
iterations trained, the best logged validation mIoU and the final one, aAcc,
mAcc and the evaluation settings; then the per-class IoU of every run with its
difference to the first run, sorted by that difference. It writes
``curves.png`` (loss parts, learning rate and validation mIoU against the
iteration), ``per_class.png`` (grouped bars), ``report.md`` (the tables, the
figures, the command; drawn by :mod:`visualization.report`) and
``report.json`` (every number in the tables).

Runs evaluated on different datasets or splits are refused, as are runs
without evaluation results, before any work is done.
"""
from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from apis.model_files import read_model_file
from cli import run_folder
from datasets import build_dataset, get_preset
from engine.checkpoint import CheckpointError
from engine.run_log import read_log, train_rows, val_rows
from models import MODEL_PRESETS, build_model
from models.complexity import count_flops, count_parameters
from utils.fileio import atomic_write, check_output_dir, write_json
from utils.formatting import as_number
from visualization.report import (format_per_class_table, format_runs_table, plot_curves, plot_per_class,
                                  report_markdown)

__all__ = ["ReportError", "RunRecord", "load_run", "summarize_run", "per_class_table", "run"]


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
    metrics = {k: as_number(results.get(k)) for k in ("mIoU", "mAcc", "aAcc")}
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
    val = val_rows(log)
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
                     metrics={k: as_number(last.get(f"val/{k}")) for k in ("mIoU", "mAcc", "aAcc")},
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
    train = train_rows(record.log)
    val = [(r["iter"], as_number(r["val/mIoU"])) for r in val_rows(record.log)]
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
        iou = {lab: as_number((rec.per_class.get(name) or {}).get("IoU")) for rec, lab in zip(records, labels)}
        first = iou[labels[0]]
        diff = {lab: (iou[lab] - first if iou[lab] is not None and first is not None else None)
                for lab in labels[1:]}
        rows.append({"class": name, "IoU": iou, "diff": diff})
    key = labels[1] if len(labels) > 1 else None

    def order(row):
        d = row["diff"].get(key) if key else row["IoU"][labels[0]]
        return (d is None, -(d if d is not None else 0.0))
    return sorted(rows, key=order)


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
    curves = plot_curves([train_rows(r.log) for r in records], [val_rows(r.log) for r in records], labels)
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
    md = report_markdown(report, format_runs_table(rows, markdown=True),
                   format_per_class_table(table, class_labels, markdown=True) if table is not None else None,
                   figures, notes)
    atomic_write(os.path.join(out_dir, "report.md"), md, binary=False)
    write_json(os.path.join(out_dir, "report.json"), report)
    for note in notes:
        print(f"note: {note}", flush=True)
    print(f"report: {os.path.join(out_dir, 'report.md')} (+ report.json"
          + "".join(f", {f}" for f in figures.values()) + ")", flush=True)
    return report
