#!/bin/bash
# Train CCNet with Slurm on N nodes x G GPUs: one train.py process per GPU, started by mpirun (Open MPI)
# or by srun --mpi=pmix, synchronised BatchNorm and a GLOBAL batch split over all processes.
#
#   mkdir -p logs && sbatch scripts/slurm_train.sh                     # the settings below
#   sbatch --nodes=4 scripts/slurm_train.sh --iters 60000               # extra flags go to train.py
#   RUN_DIR=/shared/work_dirs/van_b2 MODEL=ccnet_van_b2 PRETRAINED=/shared/pretrained/van_b2.pkl \
#       sbatch --export=ALL scripts/slurm_train.sh --opt adamw
#
# Submit it again (or keep #SBATCH --requeue) to continue: when RUN_DIR holds checkpoint_last.pkl the run
# resumes from it, which works only with the same number of processes (nodes x GPUs) as before.
# Every rank prints one "rank R/N on HOST: ... CUDA_VISIBLE_DEVICES=... GPU ..." line at the start: check
# that no two ranks on one host name the same GPU. DRY_RUN=1 prints the launch command and runs nothing.
#
#SBATCH --job-name=ccnet
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
# (Slurm does not create the folder of --output: make logs/ in the submission folder first.)

set -euo pipefail

# -- what to train --------------------------------------------------------------------------
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$PWD}}              # this repository, on a filesystem every node mounts
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DATASET=${DATASET:-cityscapes}
DATA_PATH=${DATA_PATH:-$REPO/data/$DATASET}
MODEL=${MODEL:-ccnet_resnet101}
PRETRAINED=${PRETRAINED:-$REPO/pretrained/resnet101_deep.pkl}
# The run folder must be on a SHARED filesystem (NFS, Lustre, GPFS ...) that every node mounts at the same
# path: rank 0 writes the checkpoints and log there, and a resumed job (on any nodes) reads them back.
RUN_DIR=${RUN_DIR:-$REPO/work_dirs/${MODEL}_${DATASET}}

# -- how to start the processes ---------------------------------------------------------------
LAUNCHER=${LAUNCHER:-mpirun}   # mpirun (Open MPI inside the allocation) or srun (srun --mpi=pmix)
# GPU_BIND=rank: a wrapper gives each rank only its own GPU (CUDA_VISIBLE_DEVICES from its local rank) and
#   turns NCCL off (use_nccl=0): Jittor assigns GPUs to MPI ranks itself only through NCCL, and with one
#   visible GPU per process its NCCL set-up falls back to MPI anyway; gradients are then all-reduced by MPI.
# GPU_BIND=nccl: every rank sees all GPUs of its node; Jittor's NCCL set-up picks GPU <local rank> and
#   all-reduces on the GPUs (faster when NCCL is available).
GPU_BIND=${GPU_BIND:-rank}

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

# -- train.py's arguments: a fresh run, or the continuation of the one in RUN_DIR ---------------------------
if [[ -f "$RUN_DIR/checkpoint_last.pkl" ]]; then
    # --resume keeps the saved configuration (same process count!); only a few flags may be given anew
    TRAIN_ARGS=(--resume "$RUN_DIR" --no-progress "$@")
else
    # -b is the GLOBAL batch: it must be divisible by the $NPROCS processes (8 = 2 nodes x 4 GPUs x 1)
    TRAIN_ARGS=(--dataset "$DATASET" --data-path "$DATA_PATH" --model "$MODEL" --pretrained "$PRETRAINED"
                --output-dir "$RUN_DIR" --no-progress "$@")
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
     "GPU_BIND=$GPU_BIND, run folder $RUN_DIR"
export GPU_BIND
if [[ "$LAUNCHER" == mpirun ]]; then
    # Open MPI reads the Slurm allocation itself; -x forwards what the ranks need from this environment.
    LAUNCH=(mpirun -np "$NPROCS" --map-by "ppr:$PER_NODE:node" --bind-to none
            -x PATH -x LD_LIBRARY_PATH -x GPU_BIND -x PYTHONUNBUFFERED=1)
else
    LAUNCH=(srun --mpi=pmix --ntasks="$NPROCS" --ntasks-per-node="$PER_NODE" --kill-on-bad-exit=1)
fi
COMMAND=("${LAUNCH[@]}" bash -c "$WRAPPER" rank-wrapper "$PYTHON" train.py "${TRAIN_ARGS[@]}")
if [[ "${DRY_RUN:-0}" == 1 ]]; then        # DRY_RUN=1: print the launch command (wrapper elided), run nothing
    echo "${LAUNCH[*]} bash -c <wrapper> rank-wrapper $PYTHON train.py ${TRAIN_ARGS[*]}"
    exit 0
fi
mkdir -p "$RUN_DIR"
"${COMMAND[@]}"
