#!/usr/bin/env bash
# The environment Jittor 1.3.11 needs to run its CUDA backend on a CUDA 13
# machine whose CUDA libraries (cuBLAS, cuRAND, cuDNN, ...) are pip packages
# (nvidia/cu13, nvidia/cudnn, ... in some site-packages, e.g. PyTorch's).
# The Jittor itself must carry the patches scripts/jittor_cuda13.py chooses once
# nvcc_path points at this tree (nvcc13 for nvcc 13, cudnn9 for a cuDNN 9).
#
#   source scripts/jittor_cuda13_env.sh SITE_PACKAGES [JITTOR_COPY]   # sets the variables in this shell
#   eval "$(bash scripts/jittor_cuda13_env.sh SITE_PACKAGES)"          # the same, from the printed exports
#
#   SITE_PACKAGES  the site-packages that holds nvidia/ (python3 -c "import nvidia; print(nvidia.__path__)")
#   JITTOR_COPY    optional: a folder with a patched copy of jittor/ and jittor_utils/, put first on PYTHONPATH
#
# What it does, and why:
#  * Jittor finds every CUDA folder from the location of nvcc: it takes
#    realpath($nvcc_path) and uses ../include and ../lib64 next to it. The pip
#    layout spreads the headers and libraries over several folders, so a merged
#    tree is built, of symbolic links:
#        $JT_CUDA_TREE/bin/nvcc   a small *regular file* that runs the real nvcc
#                                 (a link would be resolved back to the toolkit)
#        $JT_CUDA_TREE/include/   the toolkit's headers, then those of nvidia/*/include
#        $JT_CUDA_TREE/lib64/     the toolkit's libraries, then those of nvidia/*/lib,
#                                 plus unversioned libX.so names (-lX and Jittor's
#                                 library search need them; pip ships only libX.so.N)
#    The first of two entries with the same name wins: the toolkit of the nvcc
#    in use comes first. The driver library (libcuda.so*) is never linked in:
#    it must come from the driver.
#  * Exports: nvcc_path (the tree's nvcc; without it Jittor picks the first nvcc
#    on PATH, possibly a wrapper script in /usr/local/bin, and then looks for
#    CUDA under /usr/local), LD_LIBRARY_PATH (cuDNN 9 loads its sub-libraries
#    by name), use_cutt=0 and use_cutlass=0 (else Jittor downloads them),
#    use_nccl=0 unless already set (else Jittor downloads NCCL's source as soon
#    as MPI exists; with use_nccl=1 and NCCL in the tree, nccl_include_path and
#    nccl_lib_path point at the tree), use_mkl=0 unless set (no oneDNN
#    download), FIX_TORCH_ERROR=0 (else Jittor imports torch at start-up).
#
# The tree is $JT_CUDA_TREE, default ${XDG_CACHE_HOME:-$HOME/.cache}/ccnet_jtcuda13;
# the name contains "jtcuda", which keeps Jittor from warning about a CUDA
# folder on LD_LIBRARY_PATH. It is rebuilt on every call (links only, fast) and
# stays at the same place, so Jittor's compiled kernels stay valid. A folder
# that is not empty and was not made by this script is refused.
# The real nvcc: $JT_NVCC, else ${CUDA_HOME:-/usr/local/cuda}/bin/nvcc, else
# SITE_PACKAGES/nvidia/cu13/bin/nvcc, else the nvcc on PATH.

_jtcuda13_say() { echo "jittor_cuda13_env: $*" >&2; }

_jtcuda13_link_entries() {  # SRC_DIR DEST_DIR PATTERN: link SRC_DIR/PATTERN into DEST_DIR, first one wins
  local src=$1 dest=$2 pattern=$3 entry name
  [ -d "$src" ] || return 0
  for entry in "$src"/$pattern; do
    [ -e "$entry" ] || continue
    name=${entry##*/}
    case "$name" in libcuda.so|libcuda.so.*) continue ;; esac
    [ -e "$dest/$name" ] || [ -L "$dest/$name" ] || ln -s "$entry" "$dest/$name"
  done
}

_jtcuda13_build() {  # SITE_PACKAGES [JITTOR_COPY] -> sets _JTCUDA13_EXPORTS (NAME=VALUE lines)
  local sp=${1:-} copy=${2:-} tree nvcc here real toolkit version major d f base missing=() optional=()
  if [ -z "$sp" ] || [ ! -d "$sp" ]; then
    _jtcuda13_say "usage: source scripts/jittor_cuda13_env.sh SITE_PACKAGES [JITTOR_COPY]"
    _jtcuda13_say "SITE_PACKAGES (${sp:-not given}) must be the site-packages folder that holds nvidia/"
    return 2
  fi
  sp=$(cd "$sp" && pwd -P)
  [ -d "$sp/nvidia" ] || _jtcuda13_say "warning: $sp has no nvidia/ folder: no pip CUDA libraries there"
  if [ -n "$copy" ] && [ ! -f "$copy/jittor/__init__.py" ]; then
    _jtcuda13_say "JITTOR_COPY $copy has no jittor/__init__.py (make one: python scripts/jittor_cuda13.py --copy-to DIR)"
    return 2
  fi

  # -- the real nvcc (a wrapper script is followed to the toolkit it runs) --
  nvcc=${JT_NVCC:-}
  if [ -z "$nvcc" ]; then
    for f in "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" "$sp/nvidia/cu13/bin/nvcc" "$(command -v nvcc 2>/dev/null)"; do
      if [ -n "$f" ] && [ -x "$f" ]; then nvcc=$f; break; fi
    done
  fi
  if [ -z "$nvcc" ] || [ ! -x "$nvcc" ]; then
    _jtcuda13_say "no nvcc found (tried \$JT_NVCC, \${CUDA_HOME:-/usr/local/cuda}/bin/nvcc, $sp/nvidia/cu13/bin/nvcc, PATH);"
    _jtcuda13_say "install the CUDA 13 compiler (pip install nvidia-cuda-nvcc, or a CUDA toolkit) or set JT_NVCC"
    return 1
  fi
  here=$("$nvcc" -v --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -n 1)
  if [ -n "$here" ] && [ -x "$here/nvcc" ]; then real="$here/nvcc"; else real=$(readlink -f "$nvcc"); fi
  toolkit=$(dirname "$(dirname "$real")")
  version=$("$real" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
  major=${version%%.*}
  if [ -z "$version" ]; then
    _jtcuda13_say "$real --version shows no release number"
    return 1
  fi
  [ "$major" -ge 13 ] || _jtcuda13_say "note: nvcc $version is older than 13: Jittor needs this tree only to find pip-installed libraries (and, for a cuDNN 9 among them, the cudnn9 patch)"

  # -- the merged tree --
  tree=${JT_CUDA_TREE:-${XDG_CACHE_HOME:-$HOME/.cache}/ccnet_jtcuda13}
  if [ -d "$tree" ] && [ ! -f "$tree/.ccnet_jtcuda13" ] && [ -n "$(ls -A "$tree")" ]; then
    _jtcuda13_say "JT_CUDA_TREE $tree exists and was not made by this script; choose an empty or new folder"
    return 2
  fi
  mkdir -p "$tree" || return 1
  rm -rf "${tree:?}/bin" "${tree:?}/include" "${tree:?}/lib64"
  mkdir -p "$tree/bin" "$tree/include" "$tree/lib64"
  printf 'made by scripts/jittor_cuda13_env.sh from %s and %s\n' "$real" "$sp" > "$tree/.ccnet_jtcuda13"
  printf '#!/bin/sh\n# nvcc of the merged CUDA tree (scripts/jittor_cuda13_env.sh)\nexec "%s" "$@"\n' "$real" > "$tree/bin/nvcc"
  chmod +x "$tree/bin/nvcc"
  for d in "$toolkit/include" "$toolkit/targets/x86_64-linux/include" "$sp"/nvidia/*/include; do
    _jtcuda13_link_entries "$d" "$tree/include" '*'
  done
  for d in "$toolkit/lib64" "$toolkit/lib" "$toolkit/targets/x86_64-linux/lib" "$sp"/nvidia/*/lib "$sp"/nvidia/*/lib64; do
    _jtcuda13_link_entries "$d" "$tree/lib64" '*.so*'
  done
  for f in "$tree"/lib64/*.so.*; do
    [ -e "$f" ] || continue
    base="${f%%.so.*}.so"
    [ -e "$base" ] || ln -s "${f##*/}" "$base"
  done

  # -- what Jittor will find --
  for f in cublas_v2.h:libcublas.so curand.h:libcurand.so; do
    [ -e "$tree/include/${f%%:*}" ] && [ -e "$tree/lib64/${f##*:}" ] || missing+=("${f##*:}")
  done
  for f in cudnn.h:libcudnn.so cufft.h:libcufft.so cusparse.h:libcusparse.so; do
    [ -e "$tree/include/${f%%:*}" ] && [ -e "$tree/lib64/${f##*:}" ] || optional+=("${f##*:}")
  done
  _jtcuda13_say "tree $tree: nvcc $version ($real), $(find "$tree/include" -maxdepth 1 | wc -l) headers, $(find "$tree/lib64" -maxdepth 1 | wc -l) libraries"
  [ ${#optional[@]} -eq 0 ] || _jtcuda13_say "warning: without ${optional[*]} (optional with the nvcc13 patch: no jt.fft / sparse ops; the project refuses CUDA runs without cuDNN)"
  if [ ${#missing[@]} -gt 0 ]; then
    _jtcuda13_say "Jittor cannot start without ${missing[*]} (headers and library): pip install nvidia-cublas nvidia-curand (CUDA 13 builds) into $sp"
    return 1
  fi

  _JTCUDA13_EXPORTS="nvcc_path=$tree/bin/nvcc
use_cutt=0
use_cutlass=0
use_nccl=${use_nccl:-0}
use_mkl=${use_mkl:-0}
FIX_TORCH_ERROR=0
LD_LIBRARY_PATH=$tree/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if [ "${use_nccl:-0}" = 1 ]; then
    if [ -e "$tree/include/nccl.h" ] && [ -e "$tree/lib64/libnccl.so" ]; then
      _JTCUDA13_EXPORTS+="
nccl_include_path=$tree/include
nccl_lib_path=$tree/lib64"
    else
      _jtcuda13_say "warning: use_nccl=1 but nccl.h / libnccl.so are not in the tree (pip install nvidia-nccl-cu13)"
    fi
  fi
  if [ -n "$copy" ]; then
    copy=$(cd "$copy" && pwd -P)
    _JTCUDA13_EXPORTS+="
PYTHONPATH=$copy${PYTHONPATH:+:$PYTHONPATH}"
  fi
  return 0
}

_jtcuda13_main() {
  local rc=0 line
  _JTCUDA13_EXPORTS=""
  _jtcuda13_build "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    while IFS= read -r line; do
      if [ "$_JTCUDA13_SOURCED" = 1 ]; then
        export "${line%%=*}=${line#*=}"
      else
        printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
      fi
    done <<< "$_JTCUDA13_EXPORTS"
  fi
  unset _JTCUDA13_EXPORTS
  return "$rc"
}

if (return 0 2>/dev/null); then  # sourced (return is allowed only in a sourced file or a function)
  _JTCUDA13_SOURCED=1
  _jtcuda13_main "$@"
  _jtcuda13_rc=$?
  unset _JTCUDA13_SOURCED
  unset -f _jtcuda13_say _jtcuda13_link_entries _jtcuda13_build _jtcuda13_main
  # shellcheck disable=SC2317  # return in a sourced file
  return "$_jtcuda13_rc" 2>/dev/null || true
else
  _JTCUDA13_SOURCED=0
  _jtcuda13_main "$@"
  exit $?
fi
