#!/usr/bin/env bash
# Rehearse bench/gpu.sh on the CPU, so that a GPU machine's few minutes are not spent finding a missing
# package or a broken path: a fresh virtual environment gets only the packages the GPU machine's image
# has and kgpu relies on (bench/gpu_machine_packages.txt, at that image's versions where they are known),
# the bundle is built for this Python (`bench/gpu_bundle.py build`), and gpu.sh runs every phase with
# DEVICE=cpu, installing the bundle offline exactly as it would there. The phases that need an NVIDIA
# GPU (nvidia-smi, the exporter against nvidia-smi) fail here and the GPU tests skip; every other phase
# must end "ok". Then the engine's CPU tests run against that machine's transformers. About 6 minutes
# on 2 cores, most of it installing and the CPU serving runs.
#
#   bash bench/gpu_rehearsal.sh            # work folder /tmp/kgpu-gpu-rehearsal (WORK=... to change)
set -euo pipefail

cd "$(dirname "$0")/.."
WORK="${WORK:-/tmp/kgpu-gpu-rehearsal}"
# Builds the bundle: needs pip, torch, safetensors and the example model's package (the dev venv has them).
BUILDER="${BUILDER:-.venv/bin/python}"
PY="${PYTHON:-python3}"

rm -rf "$WORK"
mkdir -p "$WORK"
"$PY" -m venv "$WORK/venv"
VENV_PY="$WORK/venv/bin/python"
PYV="$("$VENV_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# The GPU image's versions of the packages whose behaviour kgpu depends on most (torch: the CPU build
# this machine has; the image's 2.11 is a CUDA build).
declare -A PINNED=([torch]=2.13.0 [transformers]=5.17.0 [sentence-transformers]=6.0.1 [tokenizers]=0.23.2)
requirements=()
for name in $("$BUILDER" -m bench.gpu_bundle machine-side --python-version "$PYV"); do
    requirements+=("$name${PINNED[$name]:+==${PINNED[$name]}}")
done
echo "the GPU machine's side, in $WORK/venv: ${requirements[*]}"
"$VENV_PY" -m pip install -q "${requirements[@]}"

"$BUILDER" -m bench.gpu_bundle build --out "$WORK/whl" --python-version "$PYV"

status=0
PYTHON="$VENV_PY" DEVICE=cpu DTYPE=float32 QUICK=1 WHEELS="$WORK/whl" SITE="$WORK/site" OUT="$WORK/out" \
    DURATION="${DURATION:-1}" bash bench/gpu.sh || status=$?

# Every phase but those that read an NVIDIA GPU must have ended "ok".
echo
if grep -v -E '^(nvidia-smi|nvidia-smi-after|telemetry) ' "$WORK/out/gpu-summary.txt" | grep -v ' ok ' ; then
    echo "rehearsal FAILED: the phases above did not end ok (logs in $WORK/out)"
    exit 1
fi

# The engine's CPU tests against the GPU machine's transformers and torch's neighbours: the engine
# reads transformers' masks and encoder internals, which change between releases.
echo "=== the engine's tests with the GPU machine's packages"
PYTHONPATH="$WORK/site:$PWD/src" "$VENV_PY" -m pytest -q -p no:cacheprovider \
    tests/serving/test_engine.py tests/serving/test_unpadded.py tests/serving/test_small_models.py tests/gpu
echo "rehearsal ok in ${SECONDS}s (gpu.sh exit $status): every phase that needs no GPU ended ok and the engine's tests passed; logs in $WORK/out"
