#!/bin/bash
# AdaRound and BRECQ (the joint variant, which both versions have), before (a8e4ad8) and after, alternated in
# one run as recon-speed.sh does for QDrop; worktrees /tmp/recon-before (a8e4ad8) and /tmp/recon-after.
export PTQ_DATA=/work/shared/data
OUT=/work/main/results/bench
for run in a b c; do
 for m in adaround brecq; do
  ARGS="bench --model resnet20 --data cifar10-jpeg --w-bits 4 --a-bits 4 --calib-size 1024 --optimizer $m --iters 200 --threads 1 --json"
  cd /tmp/recon-before
  PYTHONPATH=/tmp/recon-before /work/main/.venv/bin/python -m ptqlib.cli $ARGS 2>/dev/null > $OUT/recon-speed-before-$m-4$run.json
  cd /tmp/recon-after
  PYTHONPATH=/tmp/recon-after /work/main/.venv/bin/python -m ptqlib.app.cli $ARGS --variant joint 2>/dev/null > $OUT/recon-speed-after-$m-4$run.json
 done
done
