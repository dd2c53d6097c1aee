#!/usr/bin/env bash
# The benches on a CUDA machine: EchoSafe's cost at real answer lengths (bench_overhead), its reflection decoded one
# token per pass against jump-forward (bench_reflection), micro-batching throughput (bench_batching) and memory
# retrieval (bench_retrieval, on GPU faiss where a GPU build is installed); then the measured EchoSafe@B8 / Base@B8
# beside the roofline ESTIMATE for this GPU (gpu_compare.py -> gpu_ratio_<tag>.json; comparable when INNER is a real
# model, e.g. INNER=Qwen2.5-VL-7B with its weights in the local cache).
# The tiny random-weight models are built on the machine itself; nothing is downloaded. JSON lands in $OUT.
#
#   bash benchmarks/gpu_check.sh             # on the GPU; refuses to start without one
#   DEVICE=cpu bash benchmarks/gpu_check.sh  # the same runs on the CPU (GPUs hidden), for a side-by-side
#   bash benchmarks/gpu_check.sh --dry-run   # every command at a toy size, on whatever device there is, into a
#                                            # scratch folder: checks the script end to end in about a minute
#
# Settings (environment): PYTHON (default python), OUT (default benchmarks/results), INNER (default TinyQwen2VL),
# ITEMS (32, overhead bench), BATCH_ITEMS (48, batching bench), ANSWER_TOKENS (256), SIZES (retrieval bank sizes,
# "1000 10000 100000 1000000"), DIM (896), GPU_PROFILE (h100 | h200 | ...: default from the device name, else h100),
# ROOFLINE_MODEL (default INNER when task_configs/model_shapes.yaml has it, else Qwen2.5-VL-7B).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
INNER=${INNER:-TinyQwen2VL}
DEVICE=${DEVICE:-cuda}
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY=1
elif [[ $# -gt 0 ]]; then
  echo "usage: [DEVICE=cpu] bash benchmarks/gpu_check.sh [--dry-run]" >&2
  exit 2
fi

case "$DEVICE" in
  cuda) ;;
  cpu) export CUDA_VISIBLE_DEVICES="" ;;
  *) echo "DEVICE=$DEVICE: expected cuda or cpu" >&2; exit 2 ;;
esac

if [[ $DRY == 1 ]]; then
  OUT=${OUT:-$(mktemp -d)}
  ITEMS=2 BATCH_ITEMS=4 ANSWER_TOKENS=8 SIZES="1000" DIM=${DIM:-64}
  OVERHEAD_EXTRA=(--block 2) BATCHING_EXTRA=(--sizes 1 2 --repeats 1) RETRIEVAL_EXTRA=(--queries 20 --inserts 50)
  TAG=dry
else
  OUT=${OUT:-benchmarks/results}
  ITEMS=${ITEMS:-32} BATCH_ITEMS=${BATCH_ITEMS:-48} ANSWER_TOKENS=${ANSWER_TOKENS:-256}
  SIZES=${SIZES:-"1000 10000 100000 1000000"} DIM=${DIM:-896}
  OVERHEAD_EXTRA=() BATCHING_EXTRA=() RETRIEVAL_EXTRA=()
  TAG=$DEVICE
  if [[ $DEVICE == cuda ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device; run DEVICE=cpu for the CPU figures or --dry-run to check the script" >&2
    exit 1
  fi
fi
mkdir -p "$OUT"

"$PYTHON" - <<'EOF'
import faiss, torch
gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
print(f"gpu_check: torch {torch.__version__}, cuda {torch.cuda.is_available()}, faiss {faiss.__version__} ({gpus} GPUs)")
EOF

set -x
"$PYTHON" benchmarks/bench_overhead.py --inner "$INNER" --items "$ITEMS" --answer-tokens "$ANSWER_TOKENS" \
  "${OVERHEAD_EXTRA[@]}" --out "$OUT/overhead_${TAG}_${ANSWER_TOKENS}.json"
"$PYTHON" benchmarks/bench_reflection.py --inner "$INNER" --items "$ITEMS" --answer-tokens "$ANSWER_TOKENS" \
  "${OVERHEAD_EXTRA[@]}" --out "$OUT/reflection_${TAG}_${ANSWER_TOKENS}.json"
"$PYTHON" benchmarks/bench_batching.py --inner "$INNER" --items "$BATCH_ITEMS" \
  "${BATCHING_EXTRA[@]}" --out "$OUT/batching_${TAG}_tiny.json"
# shellcheck disable=SC2086  # SIZES is a list
"$PYTHON" benchmarks/bench_retrieval.py --sizes $SIZES --dim "$DIM" --gpu "${RETRIEVAL_EXTRA[@]}" \
  --out "$OUT/retrieval_${TAG}.json"
BLOCK=8
[[ $DRY == 1 ]] && BLOCK=2
GPU_PROFILE=${GPU_PROFILE:-$("$PYTHON" -c "import torch; n = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''; print('h200' if 'H200' in n else 'h100')")}
ROOFLINE_MODEL=${ROOFLINE_MODEL:-$("$PYTHON" -c "import sys; from vlmeval_echosafe.report.flops import load_shapes; print(sys.argv[1] if sys.argv[1] in load_shapes()[0] else 'Qwen2.5-VL-7B')" "$INNER")}
"$PYTHON" -m vlmeval_echosafe.report.roofline --gpu "$GPU_PROFILE" --model "$ROOFLINE_MODEL" --batch "$BLOCK" \
  --answer-tokens "$ANSWER_TOKENS" --bench "$OUT/overhead_${TAG}_${ANSWER_TOKENS}.json" --json "$OUT/roofline_${TAG}.json"
"$PYTHON" benchmarks/gpu_compare.py --overhead "$OUT/overhead_${TAG}_${ANSWER_TOKENS}.json" --gpu "$GPU_PROFILE" \
  --model "$ROOFLINE_MODEL" --out "$OUT/gpu_ratio_${TAG}.json"
set +x
echo "gpu_check: results in $OUT"
