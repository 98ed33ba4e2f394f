#!/usr/bin/env bash
# Create .venv with the project's dependencies, on a fresh machine with no GPU
# and no internet beyond the package registries. Safe to run again.
#  - Debian packages (when apt-get is available and we are root): libdnnl-dev
#    (oneDNN for fast CPU convolutions) and Open MPI (multi-process training).
#    Failures here are warnings: the project runs without them, only slower /
#    single-process.
#  - Python packages from requirements-dev.txt (torch is the CPU build, used by
#    tests and benchmarks only).
#  - Debian's oneDNN linked into the folder where Jittor looks for its own
#    oneDNN download (jittor_env.py falls back to use_mkl=0 without it).
#  - On a GPU machine with nvcc >= 13 or cuDNN >= 9 only: the project's patches for the Jittor in
#    .venv (scripts/jittor_cuda13.py; see scripts/jittor_cuda13/).
#  - A first `import jittor` through jittor_env, so that Jittor's one-off
#    compilation (a few minutes) happens here and not inside the first test.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
[ -e /usr/include/dnnl.h ] || need_apt+=(libdnnl-dev)
command -v mpicc >/dev/null 2>&1 || need_apt+=(openmpi-bin libopenmpi-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]} with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null) \
      || echo "setup: warning: apt-get install ${need_apt[*]} failed; continuing without" >&2
  else
    echo "setup: warning: ${need_apt[*]} missing and apt-get unavailable (or not root); continuing without" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt

# oneDNN: Jittor treats <folder>/lib/libmkldnn.so and <folder>/include as its downloaded oneDNN.
lib=/usr/lib/x86_64-linux-gnu/libdnnl.so
dnnl=$("$VENV/bin/python" jittor_env.py)
if [ "$(uname -m)" = x86_64 ] && [ -e "$lib" ] && [ -e /usr/include/dnnl.h ] && [ ! -e "$dnnl/lib/libmkldnn.so" ]; then
  mkdir -p "$dnnl/lib" "$dnnl/include"
  for header in /usr/include/dnnl* /usr/include/oneapi; do
    if [ -e "$header" ] && [ ! -e "$dnnl/include/$(basename "$header")" ]; then ln -s "$header" "$dnnl/include/"; fi
  done
  ln -s "$lib" "$dnnl/lib/libmkldnn.so"
  echo "setup: linked Debian's oneDNN into $dnnl"
fi
# nvcc 13 / cuDNN 9: stock Jittor 1.3.11 builds its CUDA backend with nvcc <= 12 and loads cuDNN <= 8 only.
# When an NVIDIA GPU is visible (the test of jittor_env.has_cuda_gpu) the tool finds the nvcc and the cuDNN
# Jittor will use and applies what they need to the Jittor in $VENV (once; a second run finds it in place):
# scripts/jittor_cuda13/nvcc13.patch for nvcc 13 or later, cudnn9.patch for cuDNN 9 or later (CUDA 12 with
# cuDNN 9 needs it too); CUDA 11/12 with cuDNN 8 -> nothing. The optional fp32-accum.patch is not applied
# here (python scripts/jittor_cuda13.py --with fp32-accum). Machines without a GPU do not run it at all:
# their Jittor stays as pip installed it.
gpu_visible() {
  case "${CUDA_VISIBLE_DEVICES-unset}" in ""|-1) return 1 ;; esac
  compgen -G "/dev/nvidia[0-9]*" >/dev/null && return 0
  [ -d /proc/driver/nvidia/gpus ] && [ -n "$(ls -A /proc/driver/nvidia/gpus 2>/dev/null)" ]
}
if gpu_visible; then
  "$VENV/bin/python" scripts/jittor_cuda13.py --venv "$VENV"
fi
"$VENV/bin/python" -c "import jittor_env, jittor as jt; print('setup: jittor', jt.__version__, 'cuda' if jt.has_cuda else 'cpu')"
touch "$VENV/.installed"
