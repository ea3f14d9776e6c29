#!/bin/bash
# On the GPU machine, from the repo root: CUDA tests, then L lanes of Lite0 BRECQ pairs for T seconds.
L=${LANES:-12}; T=${LANE_SECONDS:-500}
cd "$(dirname "$0")/.." || exit 1
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PTQ_DATA=$PWD/.gpu/data PTQ_CACHE=/tmp/ptqcache PTQ_DEVICE=cuda
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:$PWD/.gpu/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import sys, torch, torchvision, PIL, pandas, scipy; print(sys.version, torch.__version__, torchvision.__version__, PIL.__version__, pandas.__version__, scipy.__version__)"; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
# decode the data once, so that the lanes start from the cache
python3 -c "from ptqlib.data import load_split as l; l('imagenet-val10','test'); l('imagenet-val10','train')" 2>&1 | tail -2
mkdir -p /tmp/st /tmp/logs
start=$(date +%s); pids=()
for k in $(seq 0 $((L-1))); do
  timeout $T python3 .gpu/lanes.py --lane $k --lanes $L --store /tmp/st/lane$k.sqlite > /tmp/logs/lane$k.log 2>&1 &
  pids+=($!)
done
timeout 200 python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider > $OUT/test_gpu.log 2>&1
echo "test_gpu rc=$? after $(( $(date +%s) - start )) s"; tail -3 $OUT/test_gpu.log
(while sleep 60; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done) > /tmp/logs/smi.txt &
smi=$!
wait "${pids[@]}"; kill $smi
echo "lanes ended after $(( $(date +%s) - start )) s"
cat /tmp/logs/lane*.log /tmp/logs/smi.txt > $OUT/lanes.log
grep -h "seed" /tmp/logs/lane*.log | tail -40
python3 .gpu/merge.py $OUT/gpu.sqlite /tmp/st/lane*.sqlite
ls -la $OUT
