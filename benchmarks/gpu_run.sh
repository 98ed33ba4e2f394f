#!/usr/bin/env bash
# The project on a GPU, in one script (well under 10 minutes on an H100/H200):
#
#   kernels       benchmarks/gpu_check.py with the machine's Python (PyTorch + CuPy + nvcc):
#                 the op's CUDA kernels (and the earlier ones, for comparison) against a
#                 float64 PyTorch reference, each product timed alone (GB/s, TFLOP/s, % of
#                 the card's peaks), the attention timed against PyTorch's bmm and einsum
#   jittor-setup  a venv (--system-site-packages, so the machine's PyTorch stays as it is)
#                 with Jittor 1.3.11 from wheels/ (see scripts/fetch_gpu_wheels.sh), the
#                 patches its nvcc and cuDNN need (scripts/jittor_cuda13.py: nvcc13 for
#                 nvcc >= 13, cudnn9 for cuDNN >= 9), and the CUDA environment
#                 (scripts/jittor_cuda13_env.sh) -- no internet needed
#   jittor-build  the first `import jittor` with CUDA: Jittor compiles its core and its
#                 CUDA extern libraries (the longest step, once per machine)
#   jittor-op     benchmarks/gpu_jittor_check.py op: the op inside Jittor, CUDA against CPU,
#                 then impl="kernel" against impl="reference" timed (what impl="auto" should run)
#   amp-numerics  benchmarks/gpu_amp_check.py: float16 and float32 weight gradients of a
#                 64->64 3x3 convolution on [2, 64, 193, 193] against a float64 reference,
#                 and the decision whether the fp32-accum patch is needed; then one R-101
#                 training step (769x769, batch 2) in float32 and with --amp: time, peak memory
#   amp-fp32-accum  [off by default: --only amp-fp32-accum] the same gradient check on a copy
#                 of the venv's Jittor with scripts/jittor_cuda13/fp32-accum.patch, its own
#                 compile cache (${JITTOR_HOME}_fp32_accum: Jittor builds itself again there,
#                 minutes), compared with amp-numerics' result when there is one
#   bench-train   the official CCNet R-101 training step, 769x769, batch 2, float32
#                 (benchmarks/bench_model.py)
#   nccl-vs-mpi   benchmarks/gpu_nccl_check.py: that training step under mpirun -np <GPUs>
#                 (-np 1 with one GPU), the gradients all-reduced by NCCL (use_nccl=1) and by
#                 MPI through the CPU (use_nccl=0); both times and their ratio. Needs Open MPI
#                 and an NCCL (found in the CUDA tree, $NCCL_HOME, /usr, the pip package)
#   bench-amp     [STEP 3b] benchmarks/bench_model_vs_torch.py --device cuda [--amp], only if
#                 that file exists and takes --device (mixed precision and the PyTorch
#                 comparison); otherwise the record says "not available"
#   bench-infer   R-101 inference of one 1024x2048 image (bench_model.py)
#   eval-timing   R-101 evaluation of one 1024x2048 image, whole and sliding window
#                 (769 crops, stride 513: 8 windows) (gpu_jittor_check.py eval)
#   demo          train.py on the demo dataset (ccnet_demo, short run) on the GPU, then evaluate.py
#   collect       one JSON in benchmarks/results/ (GPU, driver, CUDA, cuDNN, Jittor, PyTorch
#                 versions, date, every step's record) and a short table
#
# Without a visible NVIDIA GPU it prints one "skip" line per step and exits 0.
# Every step runs under a time limit, cut to what is left of --deadline; a step
# that fails is recorded and the next ones go on (those that need Jittor are
# skipped when Jittor could not start). Logs and step records: $WORK.
#
#   bash benchmarks/gpu_run.sh                       # every step but amp-fp32-accum (off by default)
#   bash benchmarks/gpu_run.sh --dry-run             # print the steps and their commands
#   bash benchmarks/gpu_run.sh --only kernels,jittor-op --deadline 300
#   bash benchmarks/gpu_run.sh --copy-to "$OUT"      # also copy the record and the logs there
#
# Environment: SYS_PYTHON (python3: the Python with PyTorch, CuPy and the pip CUDA
# libraries), GPU_VENV (work_dirs/gpu_venv), WHEELS (wheels), WORK (work_dirs/gpu_run),
# JITTOR_HOME (work_dirs/gpu_jittor_home: Jittor's compile cache, kept between runs),
# JT_CUDA_TREE (work_dirs/gpu_jtcuda13), DEMO_ITERS (300), BENCH_VS_TORCH_ARGS.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd -P)

STEPS=(kernels jittor-setup jittor-build jittor-op amp-numerics amp-fp32-accum bench-train nccl-vs-mpi bench-amp
       bench-infer eval-timing demo collect)
JITTOR_STEPS=" jittor-build jittor-op amp-numerics amp-fp32-accum bench-train nccl-vs-mpi bench-amp bench-infer eval-timing demo "
OFF_BY_DEFAULT=" amp-fp32-accum "  # run only when --only names them
declare -A LIMIT=([kernels]=240 [jittor-setup]=120 [jittor-build]=480 [jittor-op]=360 [amp-numerics]=360
                  [amp-fp32-accum]=520 [bench-train]=300 [nccl-vs-mpi]=300 [bench-amp]=300 [bench-infer]=240
                  [eval-timing]=240 [demo]=300 [collect]=60)

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

DRY=0 ONLY="" DEADLINE=${DEADLINE:-570} COPY_TO="" OUT_JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --only) ONLY=${2:?--only needs a comma-separated list of steps}; shift ;;
    --only=*) ONLY=${1#*=} ;;
    --deadline) DEADLINE=${2:?--deadline needs seconds}; shift ;;
    --deadline=*) DEADLINE=${1#*=} ;;
    --copy-to) COPY_TO=${2:?--copy-to needs a folder}; shift ;;
    --copy-to=*) COPY_TO=${1#*=} ;;
    --out) OUT_JSON=${2:?--out needs a file}; shift ;;
    --out=*) OUT_JSON=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_run: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$DEADLINE" in ''|*[!0-9]*) echo "gpu_run: --deadline must be a number of seconds" >&2; exit 2 ;; esac
if [ -n "$ONLY" ]; then
  for s in ${ONLY//,/ }; do
    case " ${STEPS[*]} " in *" $s "*) ;; *) echo "gpu_run: unknown step $s; steps: ${STEPS[*]}" >&2; exit 2 ;; esac
  done
fi

SYS_PYTHON=${SYS_PYTHON:-python3}
GPU_VENV=${GPU_VENV:-work_dirs/gpu_venv}
WHEELS=${WHEELS:-wheels}
WORK=${WORK:-work_dirs/gpu_run}
DEMO_ITERS=${DEMO_ITERS:-300}
DEMO_DATA=${DEMO_DATA:-data/demo_cityscapes}
export JITTOR_HOME=${JITTOR_HOME:-$ROOT/work_dirs/gpu_jittor_home}
export JT_CUDA_TREE=${JT_CUDA_TREE:-$ROOT/work_dirs/gpu_jtcuda13}
VPY="$GPU_VENV/bin/python"
case "$WORK" in /*) ABS_WORK=$WORK ;; *) ABS_WORK=$ROOT/$WORK ;; esac
export GPU_VENV_PYTHON="$ROOT/$VPY"
[ "${GPU_VENV#/}" != "$GPU_VENV" ] && export GPU_VENV_PYTHON="$VPY"
BENCH_VS_TORCH_ARGS=${BENCH_VS_TORCH_ARGS:---models ccnet_resnet101 --train-size 769 769 --eval-size 1024 2048 --batch 2 --json $WORK/bench_vs_torch.json}

selected() {  # STEP: is it to run? (jittor-setup comes with any step that needs Jittor)
  local s
  if [ -z "$ONLY" ]; then
    case "$OFF_BY_DEFAULT" in *" $1 "*) return 1 ;; esac
    return 0
  fi
  case ",$ONLY," in *",$1,"*) return 0 ;; esac
  if [ "$1" = jittor-setup ]; then
    for s in ${ONLY//,/ }; do case "$JITTOR_STEPS" in *" $s "*) return 0 ;; esac; done
  fi
  return 1
}

# The same test as jittor_env.has_cuda_gpu(). (GPU_RUN_ASSUME_GPU=1: for testing this script's set-up
# steps on a machine without a GPU; the GPU steps then fail and are recorded as such.)
gpu_visible() {
  [ "${GPU_RUN_ASSUME_GPU:-0}" = 1 ] && return 0
  case "${CUDA_VISIBLE_DEVICES-unset}" in ""|-1) return 1 ;; esac
  compgen -G "/dev/nvidia[0-9]*" >/dev/null && return 0
  [ -d /proc/driver/nvidia/gpus ] && [ -n "$(ls -A /proc/driver/nvidia/gpus 2>/dev/null)" ]
}

# -- the commands of each step (printed by --dry-run) --------------------------------
describe() {
  case "$1" in
    kernels) echo "$SYS_PYTHON benchmarks/gpu_check.py --skip-jittor --out $WORK/kernels.json" ;;
    jittor-setup) echo "$SYS_PYTHON -m venv --system-site-packages $GPU_VENV; install numpy/six/astunparse wheels and the jittor sdist from $WHEELS/ (offline); $VPY scripts/jittor_cuda13.py --venv $GPU_VENV; source scripts/jittor_cuda13_env.sh <site-packages with nvidia/>" ;;
    jittor-build) echo "$VPY -c 'import jittor_env, jittor; jittor.flags.use_cuda = 1; ...'   (Jittor compiles its CUDA backend)" ;;
    jittor-op) echo "$VPY benchmarks/gpu_jittor_check.py op --json $WORK/jittor_op.json" ;;
    amp-numerics) echo "$VPY benchmarks/gpu_amp_check.py --json $WORK/amp_numerics.json" ;;
    amp-fp32-accum) echo "$VPY scripts/jittor_cuda13.py --venv $GPU_VENV --copy-to $ABS_WORK/jittor_fp32_accum --with fp32-accum; JITTOR_HOME=${JITTOR_HOME}_fp32_accum PYTHONPATH=$ABS_WORK/jittor_fp32_accum $VPY benchmarks/gpu_amp_check.py --parts conv --json $WORK/amp_fp32_accum.json [--baseline $WORK/amp_numerics.json]" ;;
    nccl-vs-mpi) echo "$VPY benchmarks/gpu_nccl_check.py --json $WORK/nccl_vs_mpi.json   (mpirun -np <visible GPUs>, use_nccl=1 then 0; skipped without mpirun/mpicc)" ;;
    bench-train) echo "$VPY benchmarks/bench_model.py --device cuda --models ccnet_resnet101 --modes train --train-size 769 769 --batch 2 --json $WORK/bench_train.json" ;;
    bench-amp) echo "[STEP 3b] if benchmarks/bench_model_vs_torch.py exists and takes --device: $VPY benchmarks/bench_model_vs_torch.py --device cuda [--amp if it takes it] $BENCH_VS_TORCH_ARGS; else recorded as not available" ;;
    bench-infer) echo "$VPY benchmarks/bench_model.py --device cuda --models ccnet_resnet101 --modes infer --size 1024 2048 --batch 1 --json $WORK/bench_infer.json" ;;
    eval-timing) echo "$VPY benchmarks/gpu_jittor_check.py eval --model ccnet_resnet101 --dataset cityscapes --size 1024 2048 --json $WORK/eval_timing.json" ;;
    demo) echo "$VPY -m datasets.demo --root $DEMO_DATA (if missing); $VPY train.py --dataset demo --model ccnet_demo --iters $DEMO_ITERS ... --output-dir $WORK/demo_run; $VPY evaluate.py --checkpoint $WORK/demo_run/checkpoint_last.pkl ..." ;;
    collect) echo "$SYS_PYTHON benchmarks/gpu_jittor_check.py collect --work $WORK --out ${OUT_JSON:-benchmarks/results/gpu_run_<gpu>_<date>.json}" ;;
  esac
}

if [ "$DRY" = 1 ]; then
  echo "gpu_run: steps (limit in seconds, cut to what is left of --deadline $DEADLINE):"
  for s in "${STEPS[@]}"; do
    if selected "$s"; then
      printf '  %-14s %4ss  %s\n' "$s" "${LIMIT[$s]}" "$(describe "$s")"
    elif [ -z "$ONLY" ]; then
      printf '  %-14s %4ss  [off by default: --only %s] %s\n' "$s" "${LIMIT[$s]}" "$s" "$(describe "$s")"
    fi
  done
  exit 0
fi

if ! gpu_visible; then
  for s in "${STEPS[@]}"; do
    if selected "$s"; then echo "gpu_run: skip $s: no NVIDIA GPU visible"; fi
  done
  exit 0
fi

# -- step records --------------------------------------------------------------------
mkdir -p "$WORK"
[ -n "$ONLY" ] || rm -f "$WORK/steps.jsonl"  # a full run starts a fresh record; --only adds to it
T0=$SECONDS
JITTOR_READY=0

json_str() {  # TEXT as a JSON string: colour codes (Jittor's log lines) and other control characters dropped
  local s
  s=$(printf '%s' "$1" | sed $'s/\x1b\\[[0-9;]*[A-Za-z]//g' | tr -d '\000-\010\013-\037')
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\t'/ }; s=${s//$'\n'/ | }; printf '"%s"' "$s"
}

record() {  # NAME STATUS SECONDS RC LOG JSON NOTE
  printf '{"name": %s, "status": %s, "seconds": %s, "rc": %s, "log": %s, "json": %s, "note": %s}\n' \
    "$(json_str "$1")" "$(json_str "$2")" "$3" "${4:-null}" "$(json_str "$5")" "$(json_str "$6")" \
    "$(json_str "$7")" >> "$WORK/steps.jsonl"
  printf 'gpu_run: %-14s %-8s %5ss  %s\n' "$1" "$2" "$3" "$7"
}

skip() { record "$1" skipped 0 "" "" "" "$2"; }

RESERVE=45  # seconds of the deadline kept for collect, which always runs
left() { echo $(( DEADLINE - RESERVE - (SECONDS - T0) )); }

run_step() {  # NAME JSON COMMAND...: run under the step's limit; record status, log, result file
  local name=$1 json=$2 t rc start note status log="$WORK/$1.log"
  shift 2
  t=${LIMIT[$name]}
  [ "$name" != collect ] && [ "$(left)" -lt "$t" ] && t=$(left)
  if [ "$t" -lt 20 ]; then skip "$name" "not started: the --deadline ($DEADLINE s) is used up"; return 1; fi
  echo "gpu_run: $name (limit $t s): $*" | tee "$log"
  start=$SECONDS
  timeout --kill-after=15 "$t" "$@" >> "$log" 2>&1
  rc=$?
  # a step's last "summary: " line (gpu_amp_check.py, gpu_nccl_check.py) becomes its record's note
  if [ "$rc" = 0 ]; then status=ok; note=$(grep '^summary: ' "$log" | tail -n 1 | cut -c10-309)
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; note="stopped after $t s"
  else status=failed; note="exit $rc: $(tail -n +2 "$log" | grep -v '^\s*$' | tail -n 3 | cut -c1-300)"; fi
  [ -n "$json" ] && [ ! -f "$json" ] && json=""
  record "$name" "$status" $((SECONDS - start)) "$rc" "$log" "$json" "$note"
  [ "$rc" = 0 ]
}

# -- jittor-setup ----------------------------------------------------------------------
find_one() { compgen -G "$1" | head -n 1; }

setup_jittor() {  # runs in this shell: the environment it exports is for the later steps
  local start=$SECONDS log="$WORK/jittor-setup.log" tag missing=() numpy_ok site cuda_site sdist tmp mods
  : > "$log"
  note() { echo "$*" | tee -a "$log"; }
  fail() { record jittor-setup failed $((SECONDS - start)) 1 "$log" "" "$1"; return 1; }
  tag=$("$SYS_PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null) \
    || { fail "$SYS_PYTHON does not run (set SYS_PYTHON)"; return 1; }
  if [ ! -x "$VPY" ]; then
    note "creating $GPU_VENV (--system-site-packages) with $SYS_PYTHON"
    "$SYS_PYTHON" -m venv --system-site-packages "$GPU_VENV" >> "$log" 2>&1 \
      || { rm -rf "$GPU_VENV"; "$SYS_PYTHON" -m venv --system-site-packages --without-pip "$GPU_VENV" >> "$log" 2>&1; } \
      || { fail "could not create the venv $GPU_VENV with $SYS_PYTHON -m venv"; return 1; }
  fi
  "$VPY" -m pip --version >> "$log" 2>&1 || { fail "no pip in $GPU_VENV nor in $SYS_PYTHON's site-packages"; return 1; }
  site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

  # What Jittor needs besides the machine's packages: each from wheels/ (scripts/fetch_gpu_wheels.sh)
  # only if the venv cannot import it yet. numpy: Jittor 1.3.11 needs numpy < 2.
  local spec module glob wheel wheels=()
  numpy_ok=$("$VPY" -c 'import numpy; print(int(int(numpy.__version__.split(".")[0]) < 2))' 2>/dev/null || echo 0)
  if [ "$numpy_ok" != 1 ]; then
    wheel=$(find_one "$WHEELS/numpy-1.26*-$tag-$tag-*manylinux*x86_64*.whl")
    if [ -n "$wheel" ]; then wheels+=("$wheel"); else missing+=("a numpy 1.26 wheel for $tag (numpy-1.26.*-$tag-$tag-manylinux*_x86_64.whl)"); fi
  fi
  for spec in six:six astunparse:astunparse tqdm:tqdm PIL:pillow; do
    module=${spec%%:*} glob=${spec#*:}
    "$VPY" -c "import $module" 2>/dev/null && continue
    wheel=$(find_one "$WHEELS/$glob-*.whl")
    if [ -n "$wheel" ]; then wheels+=("$wheel"); else missing+=("$glob ($glob-*.whl; Jittor imports $module)"); fi
  done
  sdist=$(find_one "$WHEELS/jittor-1.3.11*.tar.gz")
  [ -f "$site/jittor/__init__.py" ] || [ -n "$sdist" ] || missing+=("the Jittor sdist (jittor-1.3.11.0.tar.gz)")
  if [ ${#missing[@]} -gt 0 ]; then
    fail "$WHEELS/ lacks: $(IFS=';'; echo "${missing[*]}") -- run scripts/fetch_gpu_wheels.sh on a machine with internet and bring $WHEELS/ along"
    return 1
  fi
  if [ -f "$WHEELS/SHA256SUMS" ]; then
    (cd "$WHEELS" && sha256sum --quiet -c SHA256SUMS) >> "$log" 2>&1 || { fail "$WHEELS/SHA256SUMS does not match the files"; return 1; }
  fi
  if [ ${#wheels[@]} -gt 0 ]; then
    note "installing from $WHEELS/ (offline, into the venv only): ${wheels[*]##*/}"
    "$VPY" -m pip install -q --disable-pip-version-check --no-index --no-deps "${wheels[@]}" >> "$log" 2>&1 \
      || { fail "pip install of the wheels failed (see $log)"; return 1; }
  fi
  if [ ! -f "$site/jittor/__init__.py" ]; then
    # Jittor's setup.py only copies python/jittor and python/jittor_utils (the C++ is compiled at import):
    # unpacking them is the same install, without setuptools or a build environment.
    note "installing Jittor from $sdist into $site"
    tmp=$(mktemp -d)
    tar -xzf "$sdist" -C "$tmp" || { rm -rf "$tmp"; fail "cannot unpack $sdist"; return 1; }
    cp -r "$tmp"/jittor-*/python/jittor "$tmp"/jittor-*/python/jittor_utils "$site/" \
      && mkdir -p "$site/jittor-1.3.11.0.dist-info" \
      && printf 'Metadata-Version: 2.1\nName: jittor\nVersion: 1.3.11.0\n' > "$site/jittor-1.3.11.0.dist-info/METADATA" \
      && echo gpu_run.sh > "$site/jittor-1.3.11.0.dist-info/INSTALLER"
    rm -rf "$tmp"
    [ -f "$site/jittor/__init__.py" ] || { fail "installing Jittor into $site failed"; return 1; }
  fi
  # what Jittor's first import compiles against
  command -v "${cc_path:-g++}" >/dev/null 2>&1 || { fail "no C++ compiler (g++): Jittor compiles itself at import"; return 1; }
  "$VPY" -c 'import os, sysconfig; assert os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null \
    || { fail "Python.h not found for $VPY: Jittor needs the Python development headers (python3-dev)"; return 1; }
  mods=$("$VPY" -c 'import importlib.util as u; print(" ".join(m for m in ("cv2",) if u.find_spec(m) is None))')
  [ -z "$mods" ] || note "warning: the venv cannot import cv2 (opencv-python-headless): datasets/transforms.py imports it, so bench-*, eval-timing and demo will fail"

  # the CUDA environment: the site-packages of the machine's Python that holds nvidia/
  cuda_site=$("$SYS_PYTHON" -c '
import importlib.util, os
spec = importlib.util.find_spec("nvidia")
for d in (list(spec.submodule_search_locations) if spec else []):
    if any(os.path.isdir(os.path.join(d, s)) for s in ("cu13", "cublas", "cudnn", "cuda_runtime")):
        print(os.path.dirname(d)); break' 2>/dev/null)
  if [ -n "$cuda_site" ]; then
    note "CUDA libraries from $cuda_site"
    local env_rc=0
    # shellcheck source=/dev/null  # (scripts/jittor_cuda13_env.sh: sets nvcc_path, LD_LIBRARY_PATH, use_* here)
    source scripts/jittor_cuda13_env.sh "$cuda_site" 2> "$WORK/cuda_env.txt" || env_rc=$?
    tee -a "$log" < "$WORK/cuda_env.txt"
    [ "$env_rc" = 0 ] || { fail "scripts/jittor_cuda13_env.sh failed: $(tail -n 2 "$WORK/cuda_env.txt")"; return 1; }
  else
    note "no pip CUDA libraries (nvidia/) for $SYS_PYTHON: Jittor uses its own CUDA search"
    export use_cutt=${use_cutt:-0} use_cutlass=${use_cutlass:-0} use_nccl=${use_nccl:-0} use_mkl=${use_mkl:-0} FIX_TORCH_ERROR=0
  fi
  # the CUDA-13 patch (does nothing for CUDA 11/12); asks the nvcc of $nvcc_path, set just above
  "$VPY" scripts/jittor_cuda13.py --venv "$GPU_VENV" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || { fail "scripts/jittor_cuda13.py failed: $(tail -n 1 "$log")"; return 1; }

  record jittor-setup ok $((SECONDS - start)) 0 "$log" "" "$("$VPY" -c 'import importlib.metadata as m; print("jittor", m.version("jittor"))' 2>/dev/null), nvcc_path=${nvcc_path:-default}${mods:+; missing modules: $mods}"
}

# -- the steps -------------------------------------------------------------------------
echo "gpu_run: GPU $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1); deadline $DEADLINE s; work folder $WORK"

if selected kernels; then
  run_step kernels "$WORK/kernels.json" "$SYS_PYTHON" benchmarks/gpu_check.py --skip-jittor --out "$WORK/kernels.json"
fi

if selected jittor-setup; then
  setup_jittor && JITTOR_READY=1
fi

need_jittor() {  # NAME: skip the step when Jittor is not ready
  if [ "$JITTOR_READY" != 1 ]; then skip "$1" "Jittor's CUDA backend did not come up (see jittor-setup / jittor-build)"; return 1; fi
}

if selected jittor-build && need_jittor jittor-build; then
  # log_silent=0: Jittor's own messages go to the log (jittor_env hides them by default)
  run_step jittor-build "" env log_silent=0 "$VPY" -c 'import time; t = time.time()
import jittor_env, jittor as jt
assert jt.has_cuda, "jt.has_cuda is False: Jittor did not set up CUDA (see above)"
jt.flags.use_cuda = 1
print("jittor-cuda-ok", float((jt.ones((64, 64)) @ jt.ones((64, 64))).sum()), "in %.0f s" % (time.time() - t))' \
    || JITTOR_READY=0
fi

if selected jittor-op && need_jittor jittor-op; then
  run_step jittor-op "$WORK/jittor_op.json" env log_silent=0 "$VPY" benchmarks/gpu_jittor_check.py op --json "$WORK/jittor_op.json"
fi

# float16 gradient numerics (does Jittor need fp32-accum?) and what --amp saves
if selected amp-numerics && need_jittor amp-numerics; then
  run_step amp-numerics "$WORK/amp_numerics.json" env log_silent=0 "$VPY" benchmarks/gpu_amp_check.py \
    --json "$WORK/amp_numerics.json"
fi

# The gradient check on a copy of Jittor with fp32-accum (its own compile cache: the whole of Jittor is built
# again there, so it is off by default); compared with amp-numerics' record of this work folder if there is one.
if selected amp-fp32-accum && need_jittor amp-fp32-accum; then
  baseline=()
  [ -f "$WORK/amp_numerics.json" ] && baseline=(--baseline "$WORK/amp_numerics.json")
  # shellcheck disable=SC2016  # the inner script's variables are its own
  run_step amp-fp32-accum "$WORK/amp_fp32_accum.json" bash -c '
    set -e
    VPY=$1 VENV=$2 COPY=$3 HOME_DIR=$4 OUT=$5
    shift 5
    "$VPY" scripts/jittor_cuda13.py --venv "$VENV" --copy-to "$COPY" --with fp32-accum
    JITTOR_HOME=$HOME_DIR PYTHONPATH=$COPY${PYTHONPATH:+:$PYTHONPATH} log_silent=0 \
      "$VPY" benchmarks/gpu_amp_check.py --parts conv --json "$OUT" "$@"' \
    amp-fp32-accum "$VPY" "$GPU_VENV" "$ABS_WORK/jittor_fp32_accum" "${JITTOR_HOME}_fp32_accum" \
    "$WORK/amp_fp32_accum.json" "${baseline[@]}"
fi

if selected bench-train && need_jittor bench-train; then
  run_step bench-train "$WORK/bench_train.json" "$VPY" benchmarks/bench_model.py --device cuda --models ccnet_resnet101 \
    --modes train --train-size 769 769 --batch 2 --json "$WORK/bench_train.json"
fi

# the all-reduce of that training step: NCCL against MPI through the CPU
if selected nccl-vs-mpi && need_jittor nccl-vs-mpi; then
  if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1; then
    skip nccl-vs-mpi "not available: Open MPI (mpirun and mpicc, which Jittor builds its MPI module with) is not installed"
  else
    run_step nccl-vs-mpi "$WORK/nccl_vs_mpi.json" "$VPY" benchmarks/gpu_nccl_check.py --json "$WORK/nccl_vs_mpi.json"
  fi
fi

# [STEP 3b] mixed precision and the PyTorch comparison, through benchmarks/bench_model_vs_torch.py: run only
# when that script exists and takes --device (it is being written); --amp is added when it takes that too.
# Its other arguments are BENCH_VS_TORCH_ARGS (default above). Otherwise the record says "not available".
if selected bench-amp && need_jittor bench-amp; then
  vs_help=""
  [ -f benchmarks/bench_model_vs_torch.py ] && vs_help=$("$VPY" benchmarks/bench_model_vs_torch.py --help 2>/dev/null)
  if [ -z "$vs_help" ]; then
    skip bench-amp "not available: benchmarks/bench_model_vs_torch.py does not exist (or does not run)"
  elif ! grep -q -- "--device" <<< "$vs_help"; then
    skip bench-amp "not available: benchmarks/bench_model_vs_torch.py has no --device option yet"
  else
    vs_amp=()
    grep -q -- "--amp" <<< "$vs_help" && vs_amp=(--amp)
    # shellcheck disable=SC2086  # BENCH_VS_TORCH_ARGS is a list of words
    run_step bench-amp "$WORK/bench_vs_torch.json" "$VPY" benchmarks/bench_model_vs_torch.py --device cuda "${vs_amp[@]}" \
      $BENCH_VS_TORCH_ARGS
  fi
fi

if selected bench-infer && need_jittor bench-infer; then
  run_step bench-infer "$WORK/bench_infer.json" "$VPY" benchmarks/bench_model.py --device cuda --models ccnet_resnet101 \
    --modes infer --size 1024 2048 --batch 1 --json "$WORK/bench_infer.json"
fi

if selected eval-timing && need_jittor eval-timing; then
  run_step eval-timing "$WORK/eval_timing.json" "$VPY" benchmarks/gpu_jittor_check.py eval --model ccnet_resnet101 \
    --dataset cityscapes --size 1024 2048 --json "$WORK/eval_timing.json"
fi

if selected demo && need_jittor demo; then
  rm -f "$WORK/demo_results.json"
  # shellcheck disable=SC2016  # the inner script's variables are its own
  run_step demo "$WORK/demo_results.json" bash -c '
    set -e
    VPY=$1 DATA=$2 RUN=$3 ITERS=$4 OUT=$5
    [ -f "$DATA/val.lst" ] || "$VPY" -m datasets.demo --root "$DATA"
    "$VPY" train.py --dataset demo --model ccnet_demo --data-path "$DATA" --iters "$ITERS" --batch-size 8 \
      --crop-size 128 --workers 4 --eval-interval 0 --snapshot-interval "$ITERS" --print-freq 50 --seed 0 \
      --output-dir "$RUN" --overwrite --no-progress
    "$VPY" evaluate.py --checkpoint "$RUN/checkpoint_last.pkl" --dataset demo --data-path "$DATA" --workers 4 \
      --output-dir "$RUN/eval_val" --no-progress
    cp "$RUN/eval_val/results.json" "$OUT"' demo "$VPY" "$DEMO_DATA" "$WORK/demo_run" "$DEMO_ITERS" "$WORK/demo_results.json"
fi

if selected collect; then
  if [ -z "$OUT_JSON" ]; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 | tr -cs 'A-Za-z0-9' '_' | sed 's/^_*//; s/_*$//')
    OUT_JSON="benchmarks/results/gpu_run_${gpu:-gpu}_$(date +%Y-%m-%d).json"
  fi
  run_step collect "" "$SYS_PYTHON" benchmarks/gpu_jittor_check.py collect --work "$WORK" --out "$OUT_JSON" --python "$SYS_PYTHON"
  grep -v '^gpu_run: collect' "$WORK/collect.log" | grep -v '^\[' || true
fi

if [ -n "$COPY_TO" ]; then
  mkdir -p "$COPY_TO/gpu_run"
  cp "$WORK"/*.json "$WORK"/*.jsonl "$WORK"/*.log "$COPY_TO/gpu_run/" 2>/dev/null || true
  [ -n "$OUT_JSON" ] && [ -f "$OUT_JSON" ] && cp "$OUT_JSON" "$COPY_TO/"
  echo "gpu_run: copied the records and logs to $COPY_TO"
fi
echo "gpu_run: done in $((SECONDS - T0)) s"
exit 0
