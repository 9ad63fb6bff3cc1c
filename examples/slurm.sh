#!/bin/bash
# A sweep spread over a Slurm job array: each array task runs one shard of
# the job file into its own folder; --resume makes a requeued task skip the
# jobs it already finished. After the array: `chimera batch merge sweep/shard-*`
# writes sweep/index.md, sweep/index.csv and sweep/merged.json (listing any
# job no shard finished).
#
#   sbatch --array=0-3 examples/slurm.sh examples/jobs.toml
#   sbatch --dependency=afterany:<array job id> --wrap 'chimera batch merge sweep/shard-*'
#
#SBATCH --job-name=chimera-sweep
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=sweep/slurm-%A_%a.out

set -euo pipefail
JOBS=${1:-examples/jobs.toml}
I=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} + 1))
N=${SLURM_ARRAY_TASK_COUNT:?run as a job array: sbatch --array=0-3 $0}
mkdir -p sweep
exec chimera batch "$JOBS" --shard "$I/$N" --output-dir "sweep/shard-$I" --resume
