"""The data loader: Jittor's ``Dataset`` with epochs, repeatable order and fixed worker machinery.

:class:`EpochLoader` is the base of every dataset (``datasets.base``). It adds
to Jittor's loader:

* **Epochs.** Each ``iter()`` is one pass (epoch); ``set_epoch`` jumps, e.g.
  on resume. The shuffle order of a pass depends only on ``(seed, epoch)``,
  and each index handed to ``__getitem__`` encodes the epoch,
  ``index = epoch_code * num_samples + sample`` (:meth:`EpochLoader.decode_index`),
  because Jittor forks its workers once and sends them only the index list
  of each pass. A sample's augmentation can thus depend on
  ``(seed, epoch, sample)`` alone, and worker processes, MPI ranks and reruns
  all see the same data.
* **Jittor's conventions kept:** ``batch_size`` is the *global* batch size;
  under MPI (``mpirun``) Jittor gives each rank its ``batch_size / world_size``
  share of every batch, from the same order on all ranks
  (:func:`mpi_shard_positions` mirrors that rule). ``len(loader)`` counts
  batches (per rank); ``num_samples`` counts samples.

Overrides of Jittor 1.3.11's worker machinery (``jittor/dataset/dataset.py``),
each for a bug seen with 1.3.11.0:

* Which pass an index list is for (``_get_index_list``): Jittor's worker path
  prefetches the next pass's list from inside the current pass, at a time that
  depends on worker timing, so the epoch of each list is tracked explicitly;
  with Jittor's own shuffle generator the order would also differ between
  ``num_workers=0`` and ``num_workers>0``.
* Pacing (``_iter_workers``): Jittor hands its workers the next pass's list
  whenever they have claimed every batch of the current one, checked at every
  batch, so behind a slow consumer they ran whole passes ahead (bounded only
  by the 512 MB buffer per worker), and the next pass had to restart them.
  Here the workers get at most the *next* pass's list.
* Restarts (``_stop_all_workers``): Jittor's version stops the shared
  worker-id queue (2 KB, ~227 ids) while workers still write to it; a worker
  blocked on that full queue then gets ``RingBuffer.push ... Failed reason:
  stop`` and its error handler sends SIGINT to the main process. The stop
  used by ``reset()`` (abandoned pass, ``set_epoch`` jump, ``set_attrs``)
  never stops that queue: it stops new claims and the data buffers and
  drains the id queue until every worker is idle.
* Order (``_iter_workers``): a Jittor worker claims a batch and announces it
  in two separate critical sections, so two workers can announce in the
  opposite order of their claims. Each received batch is matched to its
  position by its first sample's index (``meta["index"]``), and one that
  arrives early waits for its turn: batches come out in the same order as
  without workers.
* Errors (``_worker_main``, ``__getitem__``): a sample that fails to load in a
  worker printed the worker's traceback and SIGINTed the main process. Here a
  sample's error (a corrupt file, a bad label) travels with its batch and is
  raised in the main process as the same one-line error as without workers;
  workers also leave Ctrl-C to the main process.
"""
from __future__ import annotations

import signal
import time
from typing import Any, Optional

import jittor_env  # noqa: F401  (before jittor)

import jittor as jt
import numpy as np
from jittor.dataset import Dataset

__all__ = ["EpochLoader", "mpi_shard_positions", "owned_positions"]


class EpochLoader(Dataset):
    """Jittor ``Dataset`` over ``num_samples`` samples, one epoch per pass (see the module docstring).

    Subclasses implement ``load(index)``, decode it with :meth:`decode_index`,
    and return ``(image, label, meta)`` with ``meta["index"] = index`` (the
    worker path needs it to order batches); their ``collate_batch`` passes an
    error record (:meth:`error_batch`) on. Loader options (``batch_size``,
    ``shuffle``, ``drop_last``, ``num_workers``, ...) are Jittor's.
    """

    #: What a sample's loading error is raised as in the main process (FileNotFoundError stays one).
    sample_error: type = ValueError
    _errors_as_records = False   # True while a pass loads samples (in the workers, and with -j 0)

    def __init__(self, num_samples: int, seed: int = 0, **loader_kwargs: Any) -> None:
        loader_kwargs.setdefault("batch_size", 1)
        super().__init__(**loader_kwargs)
        self._num_samples = int(num_samples)
        self.seed = seed
        self.epoch = 0               # the epoch the next pass will use
        self._pass_epoch = 0         # the epoch of the pass in progress
        self._worker_epoch = 0       # the epoch of the index list the workers hold
        self._top_call_pending = False
        self._pass_completed = True
        self.set_attrs(total_len=self._num_samples)

    @property
    def num_samples(self) -> int:
        """Number of samples (``len(loader)`` is the number of batches, Jittor's convention)."""
        return self._num_samples

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use ``epoch`` (shuffle order and augmentation), e.g. on resume."""
        self.epoch = int(epoch)

    def _max_epoch_code(self) -> int:
        return max(1, (2 ** 31 - 1) // self.num_samples)  # indices travel as int32

    def load(self, index: int):
        """Sample ``index`` (epoch encoded, see :meth:`decode_index`) as ``(image, label, meta)``."""
        raise NotImplementedError

    def __getitem__(self, index: int):
        if not self._errors_as_records:
            return self.load(index)
        try:
            return self.load(index)
        except (ValueError, OSError) as exc:   # bad data, not a bug: reported by the main process
            return {"load_error": [type(exc).__name__, str(exc)], "index": int(index)}

    @staticmethod
    def error_batch(items: list) -> Optional[tuple]:
        """For ``collate_batch``: the batch that carries the first error record among ``items``, or None."""
        errors = [item for item in items if isinstance(item, dict) and "load_error" in item]
        if not errors:
            return None
        first = items[0]["index"] if isinstance(items[0], dict) else items[0][2]["index"]
        return (np.zeros(1, np.float32), np.zeros(1, np.int32),
                {"index": [first], "load_error": [errors[0]["load_error"]]})

    def _worker_main(self, *args):
        # In a worker process: Ctrl-C and SIGUSR1 are the main process's to handle, errors travel as records,
        # and SIGTERM ends the worker at once (Jittor's terminate() sends it): a Python-level handler
        # inherited from the main process (utils.stop_signals) would wait for the worker's blocking wait in
        # C++ to return, and the main process, joining its workers at exit, would wait forever.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self._errors_as_records = True
        return super()._worker_main(*args)

    def decode_index(self, index: int) -> tuple[int, int]:
        """``(epoch code, sample)`` of an index handed to ``__getitem__``."""
        index = int(index)
        if not 0 <= index < self.num_samples * self._max_epoch_code():
            raise IndexError(f"sample index {index} out of range for {self.num_samples} samples")
        return divmod(index, self.num_samples)

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
            self._errors_as_records = True
            try:
                yield from super().__iter__()
            finally:
                self._errors_as_records = False
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

    def to_jittor(self, batch):
        image, label, meta = batch
        if "load_error" in meta:
            kind, message = meta["load_error"][0]
            raise (FileNotFoundError if kind == "FileNotFoundError" else self.sample_error)(message)
        # Jittor's worker ring buffer turns tuples into lists; restore them.
        meta = {k: [tuple(v) if isinstance(v, list) else v for v in vals] for k, vals in meta.items()}
        if not self.keep_numpy_array:
            image = image if isinstance(image, jt.Var) else jt.array(image)
            label = label if isinstance(label, jt.Var) else jt.array(label)
            if self.stop_grad:
                image, label = image.stop_grad(), label.stop_grad()
        return image, label, meta


def mpi_shard_positions(total: int, batch_size: int, world: int, rank_: int, drop_last: bool = False) -> np.ndarray:
    """The dataset positions Jittor's loader gives ``rank_`` (unshuffled), per ``jittor/dataset/dataset.py``.

    Jittor gives each rank ``ceil(batch_size / world)`` samples of every batch
    and, for a short last batch, *repeats* samples so that every rank gets
    some; evaluation uses this to count each sample once.
    """
    real = (batch_size - 1) // world + 1
    fix = total // batch_size
    last = total - fix * batch_size
    idx = np.arange(total)
    out = idx[:fix * batch_size].reshape(-1, batch_size)[:, real * rank_: real * (rank_ + 1)].reshape(-1)
    if not drop_last and last > 0:
        tail = idx[total - last:]
        real_last = (last - 1) // world + 1
        lo = real_last * rank_
        hi = lo + real_last
        if hi > last:
            hi = last
            lo = hi - real_last
        out = np.concatenate([out, tail[lo:hi]])
    return out


def owned_positions(loader: EpochLoader) -> Optional[set[int]]:
    """The (unshuffled) positions this rank counts, each position owned by one rank; None without MPI."""
    if not jt.in_mpi:
        return None
    n, world, me = loader.num_samples, int(jt.world_size), int(jt.rank)
    owner: dict[int, int] = {}
    for r in range(world):
        for p in mpi_shard_positions(n, loader.batch_size, world, r, loader.drop_last):
            owner.setdefault(int(p), r)
    return {p for p, r in owner.items() if r == me}
