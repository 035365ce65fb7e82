#!/usr/bin/env bash
# The learned engines' CUDA paths on an NVIDIA machine that has torch but no registry access:
# install the wheels carried in .whl/ (see docs/performance.md for how they are fetched), then run
# the CUDA tests and the GPU benchmarks. Logs and JSON go to ${OUT:-gpu-out}/. Each step has its
# own time limit, so a slow one leaves the others' figures.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/backend PYTHONUNBUFFERED=1
export TRITON_PRINT_AUTOTUNING=1  # spconv-triton autotunes each new shape once: show it in the logs
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date +%T))"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "    exit $? after $SECONDS s in all"
  tail -n 25 "$OUT/$name.log"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} >"$OUT/device.log" 2>&1
cat "$OUT/device.log"
# Triton kernels (spconv-triton) compile on first use and stay in ~/.triton/cache: the first run of
# the SAMPart3D bench pays that, the second shows the warm figures; the tests then run warm.
step geosam2 60 python3 -m segparts bench geosam2 --device cuda --clicks 5 --json "$OUT/geosam2.json"
step sampart3d 170 python3 -m segparts bench sampart3d --device cuda --mask-model sam2.1-hiera-large \
  --mask-views 2 --train-iterations 50 --runs 2 --json "$OUT/sampart3d.json"
step tests 150 python3 -m pytest tests/test_cuda.py -v -p no:cacheprovider -rs --durations=0
