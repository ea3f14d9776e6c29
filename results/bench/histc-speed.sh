#!/bin/bash
# The observers' histogram, before (torch.histc; worktree /tmp/recon-after at f09a7f7) and after
# (ptqlib.quant.range_estimators.histc; worktree /tmp/histc-after), alternated in one run, one thread.
export PTQ_DATA=/work/shared/data
OUT=/work/main/results/bench
for run in a b; do  # resnet20 run b was stopped before its "after" half ended: only run a is kept for it
 for m in efficientnet_lite1:imagenet-val10:6 resnet20:cifar10-jpeg:4; do
  IFS=: read model data bits <<< "$m"
  ARGS="bench --model $model --data $data --w-bits $bits --a-bits $bits --metric mse --calib-size 256 --reps 1 --no-torch-ao --threads 1 --json"
  for v in before after; do
   dir=/tmp/recon-after; [ $v = after ] && dir=/tmp/histc-after
   cd $dir && PYTHONPATH=$dir /work/main/.venv/bin/python -m ptqlib.app.cli $ARGS 2>/dev/null > $OUT/histc-$v-$model-$run.json
  done
 done
done
