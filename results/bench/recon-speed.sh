#!/bin/bash
# The reconstruction speed comparison: the commit before the reconstruction work (a8e4ad8) and
# this one, each checked out beside the working tree (`git worktree add --detach /tmp/recon-before
# a8e4ad8`, `git worktree add --detach /tmp/recon-after <this commit>`), run alternately in one
# run (before, after, before, after: the machine is shared), same command, one thread. The old
# commit's command line is `python -m ptqlib.cli`; this one's is the `ptq` entry point.
set -e
export PTQ_DATA=/work/shared/data
ARGS="bench --model resnet20 --data cifar10-jpeg --w-bits 4 --a-bits 4 --calib-size 1024 --optimizer qdrop --iters 200 --threads 1 --json"
OUT=/work/main/results/bench
for run in 3a 3b 3c; do
  cd /tmp/recon-before
  PYTHONPATH=/tmp/recon-before /work/main/.venv/bin/python -m ptqlib.cli $ARGS 2>/dev/null > $OUT/recon-speed-before-$run.json
  cd /tmp/recon-after
  PYTHONPATH=/tmp/recon-after /work/main/.venv/bin/ptq $ARGS 2>/dev/null > $OUT/recon-speed-after-$run.json
done
