#!/bin/bash
# The reconstruction speed comparison: the commit before the fused step (a8e4ad8), checked out
# beside this one with `git worktree add /tmp/recon-before a8e4ad8`, then this commit, one after
# the other in one run, same command, one thread.
set -e
export PTQ_DATA=/work/shared/data
cd /tmp/recon-before
PYTHONPATH=/tmp/recon-before /work/main/.venv/bin/python -m ptqlib.cli bench --model resnet20 --data cifar10-jpeg --w-bits 4 --a-bits 4 --calib-size 1024 --optimizer qdrop --iters 200 --threads 1 --json 2>/dev/null > /work/main/results/bench/recon-speed-before.json
cd /work/main
.venv/bin/ptq bench --model resnet20 --data cifar10-jpeg --w-bits 4 --a-bits 4 --calib-size 1024 --optimizer qdrop --iters 200 --threads 1 --json 2>/dev/null > /work/main/results/bench/recon-speed-after.json
