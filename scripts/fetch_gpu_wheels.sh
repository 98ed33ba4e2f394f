#!/usr/bin/env bash
# Download, on a machine with internet, the files benchmarks/gpu_run.sh needs
# to install Jittor on an offline GPU machine (Python 3.12, x86_64 Linux):
#
#   jittor-1.3.11.0.tar.gz                      the sdist (Jittor is pure Python until its first import)
#   numpy-1.26.4-cp312-...manylinux...whl       Jittor 1.3.11 declares numpy<2
#   astunparse-1.6.3-py2.py3-none-any.whl       imported by Jittor's code generator
#   six-1.17.0-py2.py3-none-any.whl             imported by astunparse
#   tqdm-*-py3-none-any.whl                     imported by `import jittor` itself (jittor_utils/misc.py)
#   pillow-*-cp312-...manylinux...whl           imported by `import jittor` itself (jittor/misc.py, dataset)
#
# gpu_run.sh installs each of them only where the GPU machine's own Python
# lacks it (the Jittor venv sees that Python's packages: --system-site-packages);
# PyTorch, CuPy and the CUDA libraries always come from the machine.
# Not here: opencv-python-headless (cv2, imported by datasets/transforms.py, so
# by training, evaluation and bench_model.py): its wheel is about 57 MB, too big
# to travel with the repository next to numpy; the GPU machine must have it.
# --minimal leaves out tqdm and pillow.
# The files go into wheels/ (or the folder given as the argument), with a
# SHA256SUMS file that gpu_run.sh checks. About 27 MB in all (20 MB minimal).
#
#   bash scripts/fetch_gpu_wheels.sh            # -> wheels/
#   bash scripts/fetch_gpu_wheels.sh /tmp/w     # -> /tmp/w
#   bash scripts/fetch_gpu_wheels.sh --minimal  # only Jittor, numpy, astunparse, six
set -euo pipefail
cd "$(dirname "$0")/.."
MINIMAL=0
if [ "${1:-}" = --minimal ]; then MINIMAL=1; shift; fi
DEST=${1:-wheels}
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "fetch_gpu_wheels: $PYTHON has no pip; set PYTHON=/path/to/python with pip" >&2
  exit 2
fi

JITTOR_VERSION=${JITTOR_VERSION:-1.3.11.0}
NUMPY_VERSION=${NUMPY_VERSION:-1.26.4}
ASTUNPARSE_VERSION=${ASTUNPARSE_VERSION:-1.6.3}
SIX_VERSION=${SIX_VERSION:-1.17.0}
TQDM_VERSION=${TQDM_VERSION:-4.70.1}
PILLOW_VERSION=${PILLOW_VERSION:-13.0.0}
mkdir -p "$DEST"
pip_download() { "$PYTHON" -m pip download --disable-pip-version-check --no-deps --dest "$DEST" "$@"; }

# The sdist (PyPI has no Jittor wheel); --no-binary makes sure of it.
pip_download --no-binary jittor "jittor==$JITTOR_VERSION"
# Binary wheels for the GPU machine's interpreter, not this one's.
for_gpu_python=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
                --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)
pip_download "${for_gpu_python[@]}" "numpy==$NUMPY_VERSION"
pip_download "${for_gpu_python[@]}" --abi none "astunparse==$ASTUNPARSE_VERSION" "six==$SIX_VERSION"
files=("$DEST/jittor-$JITTOR_VERSION.tar.gz" "$DEST"/numpy-"$NUMPY_VERSION"-cp312-cp312-*.whl
       "$DEST/astunparse-$ASTUNPARSE_VERSION-py2.py3-none-any.whl" "$DEST/six-$SIX_VERSION-py2.py3-none-any.whl")
if [ "$MINIMAL" = 0 ]; then
  pip_download "${for_gpu_python[@]}" --abi none "tqdm==$TQDM_VERSION"
  pip_download "${for_gpu_python[@]}" --platform manylinux_2_28_x86_64 "pillow==$PILLOW_VERSION"
  files+=("$DEST/tqdm-$TQDM_VERSION-py3-none-any.whl" "$DEST"/pillow-"$PILLOW_VERSION"-cp312-cp312-*.whl)
fi
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "fetch_gpu_wheels: expected $f, not downloaded" >&2; exit 1; }
done
(cd "$DEST" && sha256sum "${files[@]##*/}" > SHA256SUMS)
echo "fetch_gpu_wheels: in $DEST:"
(cd "$DEST" && ls -l "${files[@]##*/}" SHA256SUMS)
du -sh "$DEST"
