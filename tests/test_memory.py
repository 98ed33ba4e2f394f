"""What a training step keeps in memory: saved activations and the optimizer's gradients are let go of.

The peaks are Jittor's own count of live Var memory (``profile_memory_enable``),
measured in a fresh process each: the profiler keeps its maximum for the life
of the process.
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import jittor as jt
from jittor import nn

from bench_common import jittor_peak_bytes, rss_kb
from utils.jittor_fixes import backward_built_once, release_free_heap
from engine.train_loop import train_step
from engine.optim import build_optimizer, release_gradients
from models.ops.batchnorm import batch_norm_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = 8
SHAPE = (2, 8, 4096)          # [N, C, M] float32: 256 KiB per activation
SIZE = int(np.prod(SHAPE)) * 4
LATE = 10                     # the late buffer: LATE activations' worth
MIB = 2 ** 20


def batchnorm_chain_peak(as_in_training: bool) -> int:
    """Peak of: a chain of BatchNorm+ReLU, its backward, then a big buffer made from dx.

    The buffer stands for what a training step allocates after the backward
    pass (the updated weights and momenta): saved activations that are still
    held then add to the peak. ``as_in_training``: the backward pass is built
    as the training step builds it.
    """
    rng = np.random.default_rng(0)
    x = jt.array(rng.standard_normal(SHAPE).astype(np.float32))
    weights = [jt.array(rng.uniform(0.5, 1.5, SHAPE[1]).astype(np.float32)) for _ in range(LAYERS)]
    biases = [jt.array(rng.standard_normal(SHAPE[1]).astype(np.float32)) for _ in range(LAYERS)]
    jt.sync([x, *weights, *biases])
    y = x
    for w, b in zip(weights, biases):
        y = batch_norm_train(y, w, b, activation="relu")[0]
    with backward_built_once() if as_in_training else contextlib.nullcontext():
        dx = jt.grad((y * y).sum(), [x], retain_graph=False)[0]
    # a custom op is never fused away: it really allocates LATE * SIZE bytes after dx exists
    late = jt.code((LATE,) + SHAPE, "float32", [dx],
                   cpu_src=f"for (int k = 0; k < {LATE}; k++) for (int i = 0; i < in0->num; i++) "
                           "out0_p[k * in0->num + i] = in0_p[i];")
    return jittor_peak_bytes(lambda: jt.sync([late]))


def sgd_step_peak(release: bool) -> int:
    """Peak of the second SGD step of four 512x512 linear layers (1 MiB of weights each)."""
    jt.set_global_seed(0)
    model = nn.Sequential(*[nn.Linear(512, 512, bias=False) for _ in range(4)])
    optimizer = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-3)
    x = jt.array(np.random.default_rng(3).standard_normal((8, 512)).astype(np.float32))
    optimizer.step((model(x) ** 2).sum())   # the first step makes the momentum buffers
    release_gradients(optimizer)
    jt.sync_all(True)
    optimizer.step((model(x) ** 2).sum())
    if release:
        release_gradients(optimizer)
    return jittor_peak_bytes(lambda: jt.sync(list(model.parameters())))


def _peak_in_a_new_process(function: str, flag: bool) -> int:
    code = f"import jittor_env, test_memory; print(test_memory.{function}({flag}))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests"),
                                                        os.path.join(ROOT, "benchmarks")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_saved_activations_are_freed_once_the_backward_pass_has_used_them():
    # Each BatchNorm saves its input and output (the next one's input): the LAYERS outputs,
    # kept to the end of the execution, would sit under the late buffer beside x and dx.
    released = _peak_in_a_new_process("batchnorm_chain_peak", True)
    kept = _peak_in_a_new_process("batchnorm_chain_peak", False)
    assert released <= (LATE + 4) * SIZE, (released / SIZE, kept / SIZE)
    assert kept >= (LATE + 1 + LAYERS) * SIZE, (released / SIZE, kept / SIZE)


def test_each_gradient_is_freed_once_its_update_has_run():
    # weights and momenta: 8 MiB; the four gradients held to the end of the step add up to 4 MiB
    released = _peak_in_a_new_process("sgd_step_peak", True)
    kept = _peak_in_a_new_process("sgd_step_peak", False)
    assert kept - released >= 2 * MIB, (released / MIB, kept / MIB)


def test_gradients_can_be_taken_twice_except_in_a_training_step():
    x = jt.array(np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32))
    w, b = jt.ones(SHAPE[1]), jt.zeros(SHAPE[1])
    y = batch_norm_train(x, w, b, activation="relu")[0]
    first, second = (jt.grad((y * y).sum(), [w])[0].numpy() for _ in range(2))   # jt.grad keeps the graph
    np.testing.assert_array_equal(first, second)
    y = batch_norm_train(x, w, b, activation="relu")[0]
    with backward_built_once():   # (the optimizer's retain_graph=False would also stop a second one)
        jt.grad((y * y).sum(), [w])
        with pytest.raises(RuntimeError, match="run the forward pass again"):
            jt.grad((y * y).sum(), [w])


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.cls = nn.Conv2d(4, 3, 1)

    def execute(self, x):
        return self.cls(nn.relu(self.bn(self.conv(x))))


def _criterion(out, label):
    loss = nn.cross_entropy_loss(out.permute(0, 2, 3, 1).reshape(-1, 3), label.reshape(-1))
    return loss, {"loss_main": loss}


def _train(through_train_step: bool, steps: int = 3):
    jt.set_global_seed(0)
    model = _Tiny()
    optimizer = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-3)
    rng = np.random.default_rng(2)
    for step in range(steps):
        image = jt.array(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
        label = jt.array(rng.integers(0, 3, (2, 8, 8)).astype(np.int32))
        if through_train_step:
            train_step(model, _criterion, optimizer, image, label, lr=0.1, seed=step)
            assert all("grads" not in group for group in optimizer.param_groups)
        else:   # Jittor's own step, which keeps the gradients
            jt.set_seed(step)
            optimizer.step(_criterion(model(image), label)[0])
            jt.sync_all()
    return ([p.numpy() for p in model.parameters()],
            [v.numpy() for g in optimizer.param_groups for v in g["values"]])


def test_letting_the_gradients_go_changes_no_update():
    params, momenta = _train(through_train_step=True)
    params_ref, momenta_ref = _train(through_train_step=False)
    for a, b in zip(params + momenta, params_ref + momenta_ref):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(m).max() > 0 for m in momenta)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's heap")
def test_freed_heap_memory_goes_back_to_the_system():
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 2000 chunks of 100 KiB (below glibc's mmap threshold: they come from the heap), touched,
    # then all freed but the last, which keeps glibc from trimming the heap by itself
    chunks = [libc.malloc(100 * 1024) for _ in range(2000)]
    for c in chunks:
        ctypes.memset(c, 1, 100 * 1024)
    for c in chunks[:-1]:
        libc.free(c)
    before = rss_kb("VmRSS") / 1024
    release_free_heap()
    after = rss_kb("VmRSS") / 1024
    libc.free(chunks[-1])
    assert before - after >= 100, (before, after)
