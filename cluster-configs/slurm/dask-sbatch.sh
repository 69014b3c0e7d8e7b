#!/bin/bash
# One Slurm allocation: the scheduler, workers and the embedding run together
# (scheduler-file pattern). Submit from the directory holding corpus/:
#   sbatch dask-sbatch.sh http://gpu1:11434 http://gpu2:11434
#SBATCH --job-name=sollol-embed
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=04:00:00
set -euo pipefail
SCHEDULER_FILE=${SCHEDULER_FILE:-$PWD/scheduler-$SLURM_JOB_ID.json}
MODEL=${MODEL:-nomic-embed-text}
CORPUS=${CORPUS:-$PWD/corpus}
OUT=${OUT:-$PWD/embedded}
# INTERFACE: the network interface Dask listens on (e.g. ib0); default: the node's address
LISTEN=()
if [ -n "${INTERFACE:-}" ]; then LISTEN=(--interface "$INTERFACE"); fi

# the scheduler on the first node, with the /sollol page in its dashboard menu
srun --nodes=1 --ntasks=1 --exclusive dask scheduler --scheduler-file "$SCHEDULER_FILE" \
    --port "${SCHEDULER_PORT:-8786}" --dashboard-address ":${DASHBOARD_PORT:-8787}" \
    --preload sollol_dask.dashboard.preload "${LISTEN[@]}" &
while [ ! -s "$SCHEDULER_FILE" ]; do sleep 1; done
# one worker per remaining node
srun --nodes=$((SLURM_JOB_NUM_NODES - 1)) --ntasks=$((SLURM_JOB_NUM_NODES - 1)) --exclusive \
    dask worker --scheduler-file "$SCHEDULER_FILE" --nthreads 2 "${LISTEN[@]}" &

ADDRESS=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['address'])" "$SCHEDULER_FILE")
NODES=()
for url in "$@"; do NODES+=(--node "$url"); done
python -c "from distributed import Client; Client('$ADDRESS').wait_for_workers(1, timeout=600)"
sollol-dask embed "$CORPUS" "$OUT" --model "$MODEL" --scheduler "$ADDRESS" --no-progress \
    "${NODES[@]}" && status=0 || status=$?
kill %1 %2 2>/dev/null || true
exit $status
