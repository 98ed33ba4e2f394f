import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "benchmarks")):  # the library, and the benchmarks' shared helpers
    if path not in sys.path:
        sys.path.insert(0, path)

import jittor_env  # noqa: E402,F401  (before jittor)
