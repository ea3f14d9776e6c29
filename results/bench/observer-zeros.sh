#!/bin/bash
# The observer's zero count before and after: the commit before the change checked out beside the
# working tree (`git worktree add --detach /tmp/obs-before 02a1f50`), each run alternately with the
# same command, one thread (the machine is shared); results in observer-zeros.txt.
export PTQ_DATA=/work/shared/data PTQ_CACHE=/work/cache OMP_NUM_THREADS=1
ARGS="bench --model efficientnet_lite1 --data imagenet-val10 --w-bits 6 --a-bits 6 --threads 1 --reps 1 --no-torch-ao --json"
for run in a b; do
  cd /tmp/obs-before && PYTHONPATH=/tmp/obs-before /work/main/.venv/bin/python -m ptqlib.app.cli $ARGS 2>/dev/null > /tmp/obs-before-$run.json
  cd /work/main && PYTHONPATH=/work/main /work/main/.venv/bin/python -m ptqlib.app.cli $ARGS 2>/dev/null > /tmp/obs-after-$run.json
done
