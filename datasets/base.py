"""Shared Jittor ``Dataset`` base for the segmentation datasets.

:class:`SegmentationDataset` holds a list of (image, label) file pairs and
does everything that is not specific to one dataset layout:

* reading: images with OpenCV (converted to RGB), labels with Pillow (palette
  PNGs give their indices), with errors that name the file;
* label mapping through a per-dataset lookup table, and a check that every
  value is a class id in ``[0, num_classes)`` or the ignore label;
* repeatable randomness: the shuffle order of a pass depends only on
  ``(seed, epoch)`` and a sample's augmentation only on
  ``(seed, epoch, sample index)``, so worker processes, MPI ranks and reruns
  all see the same data;
* a collate function that stacks images and labels and keeps the metadata
  (names, original sizes) as plain Python lists.

Jittor conventions kept: ``batch_size`` is the *global* batch size; under MPI
(``mpirun``) Jittor gives each rank its ``batch_size / world_size`` share of
every batch, from the same shuffled order on all ranks. ``len(dataset)``
counts batches (per rank); :attr:`SegmentationDataset.num_samples` counts
samples.

How the epoch reaches worker processes: Jittor forks its workers once and
sends them only the index list of each pass. Each index therefore encodes the
epoch, ``index = epoch_code * num_samples + sample``, and ``__getitem__``
decodes it. Each ``iter()`` is one epoch (``set_epoch`` jumps, e.g. on
resume). Jittor's worker path prefetches the next pass's index list from
inside the current pass, at a time that depends on worker timing, so the
epoch of each list is tracked explicitly (see ``_get_index_list``); with its
own shuffle generator the order would differ between ``num_workers=0`` and
``num_workers>0``.

Worker pacing and restarts (why the worker path has its own consumer loop,
``_iter_workers``): Jittor's loop hands its workers the next pass's index list
whenever they have claimed every batch of the current list, checked at every
batch, so behind a slow consumer they ran whole passes ahead (bounded only by
the 512 MB buffer per worker). The next pass then had to restart them, and
Jittor's ``_stop_all_workers`` stops the shared worker-id queue (2 KB, ~227
ids) while workers still write to it: a worker blocked on that full queue gets
``RingBuffer.push ... Failed reason: stop`` and its error handler sends SIGINT
to the main process. Here the workers get at most the *next* pass's list (so
a run of complete passes never needs a restart), and the stop used by
``reset()`` (abandoned pass, ``set_epoch`` jump, ``set_attrs``) never stops
that queue: it stops new claims and the data buffers and drains the id queue
until every worker is idle.

Jittor's workers claim a batch and then announce it in two separate critical
sections, so two workers can announce in the opposite order of their claims.
``_iter_workers`` therefore matches each received batch to its position by
its first sample's index (``meta["index"]``) and holds one that arrives early
until its turn: batches come out in the same order as without workers.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import jittor_env  # noqa: F401  (before jittor)

import cv2
import jittor as jt
import numpy as np
from jittor.dataset import Dataset
from PIL import Image

__all__ = ["Sample", "DatasetError", "SegmentationDataset", "read_image", "read_label_raw",
           "require_dir", "pair_samples"]

_INVALID = -1  # marks raw label values a dataset's lookup table does not accept


class DatasetError(ValueError):
    """A dataset file exists but cannot be used (corrupt, wrong size, bad label values)."""


@dataclass(frozen=True)
class Sample:
    """One image and its label file (``label is None`` for unlabelled test images)."""

    name: str
    image: str
    label: Optional[str]


def require_dir(path: str, what: str, layout: str) -> str:
    """Return ``path`` if it is a directory, else raise FileNotFoundError showing ``layout``."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path!r} is not a directory.\n"
                                f"Expected layout:\n{layout}")
    return path


def pair_samples(images: dict[str, str], labels: dict[str, str] | None, where: str) -> list[Sample]:
    """Match images and labels by sample name; an unmatched file is an error naming it."""
    if labels is None:
        return [Sample(k, images[k], None) for k in sorted(images)]
    missing_label = sorted(set(images) - set(labels))
    if missing_label:
        first = images[missing_label[0]]
        raise FileNotFoundError(f"{len(missing_label)} image(s) in {where} have no label, "
                                f"e.g. {first!r} (sample {missing_label[0]!r})")
    missing_image = sorted(set(labels) - set(images))
    if missing_image:
        first = labels[missing_image[0]]
        raise FileNotFoundError(f"{len(missing_image)} label(s) in {where} have no image, "
                                f"e.g. {first!r} (sample {missing_image[0]!r})")
    return [Sample(k, images[k], labels[k]) for k in sorted(images)]


def read_image(path: str) -> np.ndarray:
    """HxWx3 uint8 RGB image; DatasetError naming the file if it cannot be decoded."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path!r} (corrupt or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_raw(path: str) -> np.ndarray:
    """HxW uint8 label as stored: palette PNGs give their indices, grayscale its values."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path!r}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            label = np.array(im)
    except Exception as exc:  # PIL raises several types for broken files
        raise DatasetError(f"cannot read label {path!r} (corrupt or not an image file): {exc}") from exc
    if mode not in ("L", "P", "I", "I;16", "I;16B"):
        raise DatasetError(f"label {path!r} has image mode {mode!r}; expected a single-channel "
                           "index image (grayscale 'L' or palette 'P'), not a colour rendering")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise DatasetError(f"label {path!r} has values outside 0..255 "
                               f"(min {label.min()}, max {label.max()})")
        label = label.astype(np.uint8)
    return label


def make_lut(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry lookup table from raw value to train id; unlisted values are invalid."""
    lut = np.full(256, _INVALID, dtype=np.int16)
    for raw, train_id in mapping.items():
        lut[raw] = train_id
    return lut


class SegmentationDataset(Dataset):
    """Base class: a list of :class:`Sample` pairs read as ``(image, label, meta)``.

    ``image`` is float32 CxHxW after the transform (normalised by the
    transform's :class:`~datasets.transforms.Normalize`), ``label`` int32 HxW
    with ``ignore_index`` for ignored pixels (all ignore for unlabelled
    images), ``meta`` a dict with ``name``, ``image_path``, ``ori_size``
    (the image's (h, w) as stored) and ``has_label``; batches carry it as a
    dict of lists.

    Subclasses build ``samples`` from their layout and implement
    :meth:`label_lut`. Loader options (``batch_size``, ``shuffle``,
    ``drop_last``, ``num_workers``, ...) are Jittor's and can also be changed
    later with ``set_attrs``.
    """

    def __init__(self, samples: list[Sample], num_classes: int,
                 transform: Optional[Callable] = None, ignore_index: int = 255,
                 seed: int = 0, **loader_kwargs: Any) -> None:
        loader_kwargs.setdefault("batch_size", 1)
        super().__init__(**loader_kwargs)
        if not samples:
            raise FileNotFoundError(f"{type(self).__name__}: no samples found")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform
        self.ignore_index = ignore_index
        self.seed = seed
        self.epoch = 0               # the epoch the next pass will use
        self._pass_epoch = 0         # the epoch of the pass in progress
        self._worker_epoch = 0       # the epoch of the index list the workers hold
        self._top_call_pending = False
        self._pass_completed = True
        self.set_attrs(total_len=len(self.samples))

    # ------------------------------------------------------------------ sizes and epochs

    @property
    def num_samples(self) -> int:
        """Number of samples (``len(dataset)`` is the number of batches, Jittor's convention)."""
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use ``epoch`` (shuffle order and augmentation), e.g. on resume."""
        self.epoch = int(epoch)

    def _max_epoch_code(self) -> int:
        return max(1, (2 ** 31 - 1) // self.num_samples)  # indices travel as int32

    def __iter__(self):
        if self.endless:
            raise ValueError(f"{type(self).__name__} does not support endless=True; "
                             "iterate it once per epoch instead")
        epoch = self.epoch
        self.epoch += 1
        # After a completed pass, the workers hold either the next pass's index
        # list (prefetched) or the finished one (they prefetch at our first batch).
        ready = self._pass_completed and (
            self._worker_epoch == epoch
            or (self._worker_epoch == self._pass_epoch and epoch == self._pass_epoch + 1))
        if hasattr(self, "workers") and not ready:
            # The workers hold batches of another pass (an abandoned pass, or a
            # set_epoch jump): restart them rather than yield those.
            self.reset()
        self._pass_epoch = epoch
        self._top_call_pending = True
        self._pass_completed = False
        if self._disable_workers:   # as in Jittor's __iter__
            self.num_workers = 0
        if self.num_workers:
            yield from self._iter_workers()
        else:
            yield from super().__iter__()
        self._pass_completed = True

    def _iter_workers(self):
        """Jittor's worker consumer loop, but the workers stay at most one pass ahead.

        Jittor reloads the workers' index list whenever they have claimed all of
        it, as often as that happens during a pass; behind a slow consumer they
        then ran several passes ahead, and the next pass had to restart them.
        Here the next pass's list is handed over once per pass: when the
        workers' list is not already ahead of the pass being consumed. The
        list is written under the claim lock, which the workers also hold while
        copying their batch's indices, so this does not wait for idle workers.
        """
        index_list = self._get_index_list()   # this pass's list (used when the workers start)
        if not hasattr(self, "workers"):
            self._init_workers(index_list)
            self.last_ids = [-1] * 10
        gid_obj = self.gid.get_obj()
        gid_lock = self.gid.get_lock()
        start = time.time()
        self.batch_time = 0
        with gid_lock:
            if self.num_idle.value:
                self.gidc.notify_all()
        # A Jittor worker claims a batch under the claim lock but announces
        # itself in the worker-id queue only after releasing it, so two workers
        # can announce in the opposite order of their claims. Batches are
        # therefore matched to their position by their first sample's index
        # (``meta["index"]``); one that arrives early waits in ``pending``.
        first_index = [int(v) for v in np.asarray(index_list)[::self.real_batch_size]]
        pending: dict[int, list] = {}
        for i in range(self.batch_len):
            if self._worker_epoch <= self._pass_epoch and gid_obj.value >= self.batch_len:
                with gid_lock:
                    if self._worker_epoch <= self._pass_epoch and gid_obj.value >= self.batch_len:
                        self.index_list_numpy[:] = self._get_index_list()   # the next pass
                        gid_obj.value = 0
                        self.gidc.notify_all()
            while not pending.get(first_index[i]):
                worker_id = self.idqueue.pop()   # a worker that claimed a batch of this pass
                self.last_ids[i % 10] = worker_id
                received = self.workers[worker_id].buffer.recv()
                pending.setdefault(int(received[2]["index"][0]), []).append(received)
            now = time.time()
            self.wait_time, start = now - start, now
            self.batch_id = i
            batch = pending[first_index[i]].pop(0)
            now = time.time()
            self.recv_time, start = now - start, now
            batch = self.to_jittor(batch)
            now = time.time()
            self.to_jittor_time, start = now - start, now
            yield batch
            now = time.time()
            self.batch_time, start = now - start, now

    _STOP_TIMEOUT = 60.0  # seconds to wait for busy workers in _stop_all_workers

    def _stop_all_workers(self):
        """Bring every worker to idle without stopping the worker-id queue (used by ``reset``).

        Replaces Jittor's version, which stops the id queue: a worker blocked
        pushing to that queue while it is full then fails ("RingBuffer.push ...
        Failed reason: stop") and sends SIGINT to the main process. Instead:
        no new claims, stop the data buffers (a worker blocked sending a batch
        drops it), and pop ids from the queue until all workers are idle.
        """
        gid_lock = self.gid.get_lock()
        with gid_lock:
            self.gid.get_obj().value = self.batch_len   # no new claims
        for w in self.workers:
            w.buffer.stop()
        deadline = time.monotonic() + self._STOP_TIMEOUT
        while True:
            self._drain_idqueue()
            with gid_lock:
                if self.num_idle.value >= self.num_workers:
                    break
                self.num_idle_c.wait(0.05)
                if self.num_idle.value >= self.num_workers:
                    break
            if time.monotonic() > deadline or not any(w.p.is_alive() for w in self.workers):
                break   # a hung or dead worker: reset() terminates them next
        self._drain_idqueue()
        for w in self.workers:
            w.buffer.clear()
        self.idqueue.clear()
        self.gid.value = 0

    def _drain_idqueue(self):
        # pop only complete records (committed pushes), so this never blocks
        while self.idqueue.total_push() > self.idqueue.total_pop():
            self.idqueue.pop()

    def _get_index_list(self):
        # Called once when a pass starts (with workers already running the result
        # is discarded) and, with workers, again from inside the pass once all
        # its batches are claimed, to prefetch the *next* pass (``_iter_workers``).
        # Which pass a list is for is therefore tracked here, not counted from calls.
        if self._top_call_pending:
            self._top_call_pending = False
            epoch = self._pass_epoch
            if self.num_workers and not hasattr(self, "workers"):
                self._worker_epoch = epoch
        else:
            self._worker_epoch += 1
            epoch = self._worker_epoch
        n = self.num_samples
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        # Jittor's own shuffle generator would differ between its worker and
        # single-process paths; hand it this order through the ``sampler`` hook
        # (its MPI scatter still applies) with the epoch encoded in each index.
        code = epoch % self._max_epoch_code()
        self.sampler = (order + code * n).tolist()
        return super()._get_index_list()

    # ------------------------------------------------------------------ reading

    def label_lut(self, sample: Sample) -> np.ndarray:
        """256-entry int16 table: raw label value -> train id, ``-1`` for invalid values."""
        raise NotImplementedError

    def load_label(self, sample: Sample) -> np.ndarray:
        """The sample's label mapped to train ids (uint8), checked against the valid values."""
        raw = read_label_raw(sample.label)
        lut = self.label_lut(sample)
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        bad = present[lut[present] == _INVALID]
        if bad.size:
            raise DatasetError(
                f"label {sample.label!r} has values {bad.tolist()} that are neither a class of "
                f"{type(self).__name__} ({self.num_classes} classes after mapping) nor the ignore label")
        return lut[raw].astype(np.uint8)

    def get(self, index: int, epoch: int = 0):
        """Sample ``index`` as the pass of ``epoch`` would load it."""
        return self[(epoch % self._max_epoch_code()) * self.num_samples + index]

    def __getitem__(self, index: int):
        n = self.num_samples
        index = int(index)
        if not 0 <= index < n * self._max_epoch_code():
            raise IndexError(f"sample index {index} out of range for {n} samples")
        epoch_code, i = divmod(index, n)
        sample = self.samples[i]
        rng = np.random.default_rng([self.seed, epoch_code, i])

        image = read_image(sample.image)
        ori_size = (int(image.shape[0]), int(image.shape[1]))
        label = None
        if sample.label is not None:
            label = self.load_label(sample)
            if label.shape != image.shape[:2]:
                raise DatasetError(f"label {sample.label!r} is {label.shape[1]}x{label.shape[0]} "
                                   f"but image {sample.image!r} is {image.shape[1]}x{image.shape[0]} (WxH)")
        if self.transform is not None:
            image, label = self.transform(image, label, rng)
        else:
            image = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        if label is None:
            label = np.full(ori_size, self.ignore_index, dtype=np.int32)  # unlabelled: all ignore
        label = np.ascontiguousarray(label, dtype=np.int32)
        meta = {"name": sample.name, "image_path": sample.image, "ori_size": ori_size,
                "has_label": sample.label is not None, "index": index}
        return image, label, meta

    # ------------------------------------------------------------------ batching

    def collate_batch(self, batch):
        images, labels, metas = zip(*batch)
        shapes = {(im.shape, lb.shape) for im, lb in zip(images, labels)}
        if len(shapes) > 1:
            detail = ", ".join(f"{m['name']}: image {im.shape} label {lb.shape}"
                               for im, lb, m in zip(images, labels, metas))
            raise DatasetError("samples of one batch have different sizes and cannot be stacked "
                               f"({detail}); use batch_size=1 for whole-image evaluation of "
                               "images of different sizes, or a fixed crop/test size")
        meta = {key: [m[key] for m in metas] for key in metas[0]}
        return np.stack(images), np.stack(labels), meta

    def to_jittor(self, batch):
        image, label, meta = batch
        # Jittor's worker ring buffer turns tuples into lists; restore them.
        meta = {k: [tuple(v) if isinstance(v, list) else v for v in vals] for k, vals in meta.items()}
        if not self.keep_numpy_array:
            image = image if isinstance(image, jt.Var) else jt.array(image)
            label = label if isinstance(label, jt.Var) else jt.array(label)
            if self.stop_grad:
                image, label = image.stop_grad(), label.stop_grad()
        return image, label, meta

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={self.num_samples}, num_classes={self.num_classes}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, num_workers={self.num_workers}, "
                f"seed={self.seed}, transform={self.transform!r})")
