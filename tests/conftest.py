import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "benchmarks")):  # the library, and the benchmarks' shared helpers
    if path not in sys.path:
        sys.path.insert(0, path)

# Jittor 1.3.11's parallel op compiler crashes now and then while it compiles a new op
# (docs/jittor.md): the tests compile in one thread (their subprocesses inherit this) unless told
# otherwise.
os.environ.setdefault("use_parallel_op_compiler", "1")

import jittor_env  # noqa: E402,F401  (before jittor)

import jittor as jt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def float64():
    """Jittor keeps float64 arrays float64 (its default converts them to float32) for the test's duration."""
    old = jt.flags.auto_convert_64_to_32
    jt.flags.auto_convert_64_to_32 = 0
    yield
    jt.flags.auto_convert_64_to_32 = old
