#!/usr/bin/env bash
# The device check, on a lent GPU machine (staged here by tests/benchmarks/gpu_device_prepare.sh; carry .gpu-run):
#   1. installs the staged wheels into /tmp/site and unpacks the hosts under .comfy-ci/hosts;
#   2. the core tests on that machine's torch, the CUDA ones included (window and shared-K/V attention, replay
#      lookup, motion-module grid limits);
#   3. tests/benchmarks/gpu_suite.py on ComfyUI v0.33.0 (v0.3.75 if that host cannot boot there) in bf16, then
#      fp16 while the command has time left.
# Everything it prints and the suite's RESULTS rows land in $OUT (the device tool's folder; .gpu-run/out when
# unset): merge RESULTS-gpu.md into tests/benchmarks/RESULTS.md. Knobs for a rehearsal off the GPU machine:
# PYTHON (default python3), SUITE_ARGS (e.g. "--device cpu --tiny"), WHEELS=0 (the packages are there already).
set -uo pipefail
cd "$(dirname "$0")/../.."
START=$SECONDS
PYTHON=${PYTHON:-python3}
OUT=${OUT:-.gpu-run/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [ "${WHEELS:-1}" != 0 ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu-run/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p .comfy-ci/hosts && tar -xzf .gpu-run/hosts.tgz -C .comfy-ci/hosts || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} | tee "$OUT/machine.txt"
timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -p no:warnings tests/core -rs --junitxml="$OUT/core.xml" \
  > "$OUT/core.log" 2>&1
echo "core tests: rc=$? $(tail -1 "$OUT/core.log")"
grep -E "^(FAILED|ERROR)|cuda|CUDA" "$OUT/core.log" | head -40
read -r -a EXTRA <<< "${SUITE_ARGS:-}"
for host in 0.33.0 0.3.75; do
  timeout 280 "$PYTHON" tests/benchmarks/gpu_suite.py --host "$host" --results "$OUT/RESULTS-gpu.md" "${EXTRA[@]}" \
    2>&1 | tee "$OUT/suite-$host-bf16.log"
  status=${PIPESTATUS[0]}
  echo "suite on $host (bf16 or the args' dtype): rc=$status after $((SECONDS - START)) s"
  [ "$status" = 0 ] || continue
  if [ $((SECONDS - START)) -lt 300 ] && [ -z "${SUITE_ARGS:-}" ]; then
    timeout 240 "$PYTHON" tests/benchmarks/gpu_suite.py --host "$host" --dtype fp16 --results "$OUT/RESULTS-gpu.md" \
      2>&1 | tee "$OUT/suite-$host-fp16.log"
    echo "suite on $host (fp16): rc=${PIPESTATUS[0]} after $((SECONDS - START)) s"
  fi
  break
done
