#!/bin/bash
# Train CCNet with Slurm on N nodes x G GPUs: one train.py process per GPU, started by mpirun (Open MPI)
# or by srun --mpi=pmix, synchronised BatchNorm and a GLOBAL batch split over all processes.
#
#   mkdir -p logs && sbatch scripts/slurm_train.sh                     # the settings below
#   sbatch --nodes=4 scripts/slurm_train.sh --iters 60000               # extra flags go to train.py
#   RUN_DIR=/shared/work_dirs/van_b2 MODEL=ccnet_van_b2 PRETRAINED=/shared/pretrained/van_b2.pkl \
#       sbatch --export=ALL scripts/slurm_train.sh --opt adamw
#
# Time limit and preemption: Slurm sends SIGUSR1 to this script 10 minutes before the time limit
# (--signal=B:USR1@600); it passes the signal on to the training processes, which finish the step they are
# in, write a checkpoint of it and stop (status 138), and the job requeues itself (scontrol requeue;
# REQUEUE=0 turns that off). A SIGTERM to this script (scancel, preemption) is passed on the same way.
# When RUN_DIR holds checkpoint_last.pkl the run resumes from it (a requeued or resubmitted job), which works
# only with the same number of processes (nodes x GPUs) as before.
# Every rank prints one "rank R/N on HOST: ... CUDA_VISIBLE_DEVICES=... GPU ..." line at the start: check
# that no two ranks on one host name the same GPU. DRY_RUN=1 prints the launch commands and runs nothing.
#
# Before the training processes start, one process per node imports Jittor (WARM_UP=1, the default): Jittor
# compiles its core, CUDA, MPI and NCCL parts once per host name (its cache path includes it), so on a new
# node the ranks would otherwise all wait for one of them on a lock. Put Jittor's cache on node-local disk
# (export JITTOR_HOME=/local/scratch/$USER/jittor before sbatch; see README, "Clusters").
#
#SBATCH --job-name=ccnet
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out
# (Slurm does not create the folder of --output: make logs/ in the submission folder first.)

set -euo pipefail

# -- what to train --------------------------------------------------------------------------
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$PWD}}              # this repository, on a filesystem every node mounts
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DATASET=${DATASET:-cityscapes}
DATA_PATH=${DATA_PATH:-$REPO/data/$DATASET}
MODEL=${MODEL:-ccnet_resnet101}
PRETRAINED=${PRETRAINED-$REPO/pretrained/resnet101_deep.pkl}   # PRETRAINED="": no backbone weights
# The run folder must be on a SHARED filesystem (NFS, Lustre, GPFS ...) that every node mounts at the same
# path: rank 0 writes the checkpoints and log there, and a resumed job (on any nodes) reads them back.
RUN_DIR=${RUN_DIR:-$REPO/work_dirs/${MODEL}_${DATASET}}

# -- how to start the processes ---------------------------------------------------------------
LAUNCHER=${LAUNCHER:-mpirun}   # mpirun (Open MPI inside the allocation) or srun (srun --mpi=pmix)
read -r -a MPIRUN_EXTRA <<< "${MPIRUN_ARGS:-}"   # more mpirun options, e.g. MPIRUN_ARGS=--allow-run-as-root
# GPU_BIND=nccl (default): every rank sees all GPUs of its node; Jittor's NCCL set-up picks GPU <local rank>
#   and the gradients and SyncBN statistics are all-reduced on the GPUs. Jittor 1.3.11 builds its NCCL ops
#   against nccl_include_path / nccl_lib_path (else it downloads NCCL 2.8.4's source, which fails offline);
#   they are taken from the environment or found below ($NCCL_HOME, $NCCL_ROOT, $CUDA_HOME, /usr, the venv's
#   nvidia-nccl wheel).
# GPU_BIND=rank (fallback, when no NCCL can be used): a wrapper gives each rank only its own GPU
#   (CUDA_VISIBLE_DEVICES from its local rank) and turns NCCL off (use_nccl=0); every all-reduce then goes
#   through the CPU (Jittor's MPI op: a device synchronisation and two host copies per gradient and per
#   BatchNorm statistic), which benchmarks/gpu_run.sh's nccl-vs-mpi step measures.
GPU_BIND=${GPU_BIND:-nccl}
WARM_UP=${WARM_UP:-1}

NODES=${SLURM_JOB_NUM_NODES:-1}
PER_NODE=${SLURM_NTASKS_PER_NODE:-1}
PER_NODE=${PER_NODE%%(*}                             # "4(x2)" -> 4
NPROCS=${SLURM_NTASKS:-$((NODES * PER_NODE))}
if [[ -n "${SLURM_GPUS_ON_NODE:-}" && "$SLURM_GPUS_ON_NODE" != "$PER_NODE" ]]; then
    echo "error: $PER_NODE tasks per node but $SLURM_GPUS_ON_NODE GPUs per node; set --ntasks-per-node to" \
         "the GPUs per node (one process per GPU)" >&2
    exit 2
fi
case "$LAUNCHER" in
    mpirun|srun) ;;
    *) echo "error: LAUNCHER must be mpirun or srun, got '$LAUNCHER'" >&2; exit 2;;
esac
case "$GPU_BIND" in rank|nccl) ;; *) echo "error: GPU_BIND must be rank or nccl, got '$GPU_BIND'" >&2; exit 2;; esac

# -- NCCL for GPU_BIND=nccl: a folder with include/nccl.h and libnccl.so ------------------------------------
find_nccl() {
    local site root lib
    site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
    for root in "${NCCL_HOME:-}" "${NCCL_ROOT:-}" "${CUDA_HOME:-}" /usr/local/cuda /usr ${site:+"$site/nvidia/nccl"}; do
        [[ -n "$root" && -f "$root/include/nccl.h" ]] || continue
        for lib in "$root/lib" "$root/lib64" "$root/lib/$(uname -m)-linux-gnu"; do
            if [[ -f "$lib/libnccl.so" ]]; then
                echo "$root/include $lib"
                return 0
            elif [[ -f "$lib/libnccl.so.2" ]]; then
                echo "error: $lib has libnccl.so.2 but no libnccl.so, which Jittor links against: run" \
                     "ln -s libnccl.so.2 $lib/libnccl.so (or set GPU_BIND=rank)" >&2
                return 1
            fi
        done
    done
    echo "error: GPU_BIND=nccl but no NCCL found (include/nccl.h and libnccl.so under \$NCCL_HOME, \$NCCL_ROOT," \
         "\$CUDA_HOME, /usr or the venv's nvidia-nccl wheel): module load nccl, pip install nvidia-nccl-cu12, or set" \
         "nccl_include_path and nccl_lib_path; GPU_BIND=rank runs without NCCL (all-reduce through the CPU, slower)" >&2
    return 1
}
if [[ "$GPU_BIND" == nccl ]]; then
    export use_nccl=1
    if [[ -z "${nccl_include_path:-}" || -z "${nccl_lib_path:-}" ]]; then
        found=$(find_nccl) || exit 2
        read -r nccl_include_path nccl_lib_path <<< "$found"
        export nccl_include_path nccl_lib_path
    fi
else
    export use_nccl=0   # the warm-up too: with use_nccl unset Jittor would fetch NCCL's source under MPI
fi

# -- train.py's arguments: a fresh run, or the continuation of the one in RUN_DIR ---------------------------
if [[ -f "$RUN_DIR/checkpoint_last.pkl" ]]; then
    # --resume keeps the saved configuration (same process count!); only a few flags may be given anew
    TRAIN_ARGS=(--resume "$RUN_DIR" --no-progress "$@")
else
    # -b is the GLOBAL batch: it must be divisible by the $NPROCS processes (8 = 2 nodes x 4 GPUs x 1)
    TRAIN_ARGS=(--dataset "$DATASET" --data-path "$DATA_PATH" --model "$MODEL"
                ${PRETRAINED:+--pretrained "$PRETRAINED"} --output-dir "$RUN_DIR" --no-progress "$@")
fi

# -- the per-rank wrapper: run by every process before train.py -----------------------------------
# Local rank: Open MPI's under mpirun, Slurm's under srun. Under srun the OMPI_COMM_WORLD_* variables are
# set from Slurm's, because Jittor (and jittor_env.py) recognise an MPI run by OMPI_COMM_WORLD_SIZE.
# shellcheck disable=SC2016  # expanded by each rank, not here
WRAPPER='
local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:?neither mpirun nor srun started this process}}
if [[ -z "${OMPI_COMM_WORLD_SIZE:-}" ]]; then
    export OMPI_COMM_WORLD_SIZE=$SLURM_NTASKS OMPI_COMM_WORLD_RANK=$SLURM_PROCID \
           OMPI_COMM_WORLD_LOCAL_RANK=$SLURM_LOCALID OMPI_COMM_WORLD_LOCAL_SIZE=${SLURM_NTASKS_PER_NODE%%(*}
fi
IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-}"
if [[ "$GPU_BIND" == rank ]]; then
    if (( ${#gpus[@]} == 1 )); then
        :                                    # Slurm already bound one GPU to this task
    elif (( ${#gpus[@]} > 1 )); then
        export CUDA_VISIBLE_DEVICES=${gpus[$local_rank]}   # the local_rank-th of the GPUs Slurm gave the job
    else
        export CUDA_VISIBLE_DEVICES=$local_rank
    fi
    export use_nccl=0
    device=$CUDA_VISIBLE_DEVICES
else
    local_size=${OMPI_COMM_WORLD_LOCAL_SIZE:-1}
    if (( ${#gpus[@]} == 1 && local_size > 1 )); then
        # Jittor would put every rank of the node on that one GPU and fall back to MPI
        echo "error: rank $OMPI_COMM_WORLD_RANK sees one GPU (CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES) but" \
             "GPU_BIND=nccl needs every rank to see all GPUs of its node: drop --gpus-per-task / --gpu-bind, or" \
             "set GPU_BIND=rank" >&2
        exit 2
    fi
    device=${gpus[$local_rank]:-$local_rank}             # the GPU the NCCL set-up of Jittor picks
fi
gpu=$(nvidia-smi -i "$device" --query-gpu=index,name,uuid --format=csv,noheader 2>/dev/null \
      || echo "not found by nvidia-smi")
echo "rank $OMPI_COMM_WORLD_RANK/$OMPI_COMM_WORLD_SIZE on $(hostname): local rank $local_rank," \
     "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}, GPU $device: $gpu"
exec "$@"
'

cd "$REPO"
echo "job ${SLURM_JOB_ID:-?}: $NODES node(s) x $PER_NODE process(es) = $NPROCS, launcher $LAUNCHER," \
     "GPU_BIND=$GPU_BIND${nccl_lib_path:+ (NCCL $nccl_lib_path)}, JITTOR_HOME=${JITTOR_HOME:-unset}, run folder $RUN_DIR"
export GPU_BIND
# one process per node, then one per GPU
if [[ "$LAUNCHER" == mpirun ]]; then
    # Open MPI reads the Slurm allocation itself; -x forwards what the ranks need from this environment.
    FORWARD=(-x PATH -x LD_LIBRARY_PATH -x GPU_BIND -x PYTHONUNBUFFERED=1)
    for name in use_nccl nccl_include_path nccl_lib_path JITTOR_HOME nvcc_path cc_path; do
        if [[ -n "${!name+set}" ]]; then FORWARD+=(-x "$name"); fi
    done
    WARM=(mpirun -np "$NODES" --map-by ppr:1:node --bind-to none "${MPIRUN_EXTRA[@]}" "${FORWARD[@]}")
    LAUNCH=(mpirun -np "$NPROCS" --map-by "ppr:$PER_NODE:node" --bind-to none "${MPIRUN_EXTRA[@]}" "${FORWARD[@]}")
else
    WARM=(srun --mpi=pmix --ntasks="$NODES" --ntasks-per-node=1 --kill-on-bad-exit=1)
    LAUNCH=(srun --mpi=pmix --ntasks="$NPROCS" --ntasks-per-node="$PER_NODE" --kill-on-bad-exit=1)
fi
WARM_COMMAND=("${WARM[@]}" "$PYTHON" -c "import jittor_env, jittor, socket; print('warm-up: Jittor ready on', socket.gethostname(), flush=True)")
COMMAND=("${LAUNCH[@]}" bash -c "$WRAPPER" rank-wrapper "$PYTHON" train.py "${TRAIN_ARGS[@]}")
if [[ "${DRY_RUN:-0}" == 1 ]]; then        # DRY_RUN=1: print the launch commands (wrapper elided), run nothing
    if [[ "$WARM_UP" == 1 ]]; then echo "${WARM_COMMAND[*]}"; fi
    echo "${LAUNCH[*]} bash -c <wrapper> rank-wrapper $PYTHON train.py ${TRAIN_ARGS[*]}"
    exit 0
fi
mkdir -p "$RUN_DIR"
if [[ "$WARM_UP" == 1 ]]; then
    "${WARM_COMMAND[@]}" || { echo "error: the warm-up (one 'import jittor' per node) failed; its output is above" >&2; exit 2; }
fi
# The launcher runs in the background so that this shell can pass Slurm's signals on while it waits.
"${COMMAND[@]}" &
launcher=$!
pass_on() {
    echo "slurm_train: $1: asking the training processes to checkpoint and stop"
    kill -USR1 "$launcher" 2>/dev/null || true
}
trap 'pass_on SIGUSR1' USR1
trap 'pass_on SIGTERM' TERM
status=0
while :; do
    wait "$launcher" && status=0 || status=$?
    kill -0 "$launcher" 2>/dev/null || break    # wait was cut short by a signal: wait again
done
trap - USR1 TERM
if (( status == 138 )) && [[ -n "${SLURM_JOB_ID:-}" && "${REQUEUE:-1}" == 1 ]]; then
    echo "slurm_train: the run stopped at a checkpoint in $RUN_DIR; requeueing job $SLURM_JOB_ID (it resumes there)"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
