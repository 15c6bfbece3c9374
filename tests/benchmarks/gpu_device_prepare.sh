#!/usr/bin/env bash
# Stages, here, what tests/benchmarks/gpu_device_run.sh needs on a lent GPU machine that reaches no package
# registry: .gpu-run/hosts.tgz (the ComfyUI v0.33.0 and v0.3.75 trees of .ci/setup, without their own tests) and
# .gpu-run/wheels (the pack's and the hosts' imports that the GPU machine's image lacks, for its Python 3.12; the
# image brings torch, transformers, einops, safetensors, numpy, pillow, scipy, pytest). About 25 MiB, under the
# 64 MiB a device call carries. Then, with the device tool:
#   run(command="bash tests/benchmarks/gpu_device_run.sh", carry=[".gpu-run"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash .ci/setup
STAGE=.gpu-run
rm -rf "$STAGE" && mkdir -p "$STAGE/wheels"
tar -C .comfy-ci/hosts --exclude=tests --exclude=tests-unit --exclude=.github --exclude=blueprints \
  -czf "$STAGE/hosts.tgz" comfy-0.33.0 comfy-0.3.75
download() {
  .comfy-ci/venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 -d "$STAGE/wheels" "$@"
}
LINUX=(--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
       --platform manylinux2014_x86_64)
download "${LINUX[@]}" torchsde==0.2.6 trampoline==0.1.2 kornia==0.9.0 kornia-rs==0.2.0 comfy-aimdo==0.4.13 \
  diffusers==0.42.1 importlib-metadata==10.2.0
# the pure-Python build (the manylinux one carries 58 MB of kernels the suite does not use)
download --implementation py --platform any comfy-kitchen==0.2.31
du -sh "$STAGE"
