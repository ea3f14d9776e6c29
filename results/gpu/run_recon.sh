#!/bin/bash
# On the GPU machine, from the repo root: LANES lanes (default 4) sharing the bundle's
# reconstruction jobs (lane k takes jobs k, k + LANES, ...: the bundle is in priority order) until
# LANE_SECONDS have passed, tests/test_gpu.py beside them. Everything is written under $OUT as it
# happens, so a run stopped by its time limit keeps what it did.
T=${LANE_SECONDS:-480}
N=${LANES:-4}
cd "$(dirname "$0")/../.." || exit 1
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import sys, torch; print(sys.version, torch.__version__, torch.cuda.is_available())"; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
start=$(date +%s); deadline=$((start + T)); pids=()
for k in $(seq 0 $((N - 1))); do
  timeout $((T + 20)) python3 results/gpu/recon_lanes.py --bundle .gpu/recon-jobs.pt --lane $k --lanes $N \
      --out $OUT/lane$k.pt --deadline $deadline ${SMOKE_ITERS:+--iters $SMOKE_ITERS} 2>&1 | sed -u "s/^/[$k] /" >> $OUT/lanes.log &
  pids+=($!)
done
timeout 200 python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider > $OUT/test_gpu.log 2>&1 &
tests=$!
(while sleep 20; do echo "$(( $(date +%s) - start )) s: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"; done) > $OUT/smi.txt 2>&1 &
smi=$!
wait $tests; echo "test_gpu rc=$? after $(( $(date +%s) - start )) s"; tail -4 $OUT/test_gpu.log
wait "${pids[@]}"; kill $smi
echo "lanes ended after $(( $(date +%s) - start )) s"
grep -h "job\|Error\|error\|Warn" $OUT/lanes.log | tail -40
ls -la $OUT
