#!/usr/bin/env bash
# GPU benchmarks in one prepared run (<= 10 minutes on one H100/H200-class card: the timeouts add up to 580 s):
#   1. step time and peak memory at patch 128^3, batch 2, AMP, nnU-Net's default network, for nnUNetTrainer and
#      every TopoWarmup variant, and the per-step cost of the weight EMA (ema_decay) (benchmarks/step_time.py);
#   2. the loss-cost table at patch 128^3, batch 2, AMP (benchmarks/loss_cost.py);
#   3. predict cost on 2 cases of 320^3 with nnU-Net's default network (patch 128^3): 1 model, 2 models fused,
#      2 models + rot90 TTA, against the disk route --save_probabilities + nnUNetv2_ensemble (benchmarks/predict_cost.py).
#   4. the cost of one competition-score round (score_every_epochs) at 320^3: nnU-Net's sliding window of the
#      default network at patch 128 with and without mirroring, logits -> segmentation, the metric on the CPU
#      (benchmarks/score_round.py).
# Usage: bash benchmarks/gpu.sh [OUT_DIR]   (needs the package installed: `make install` or `pip install -e .`)
# Record the card, date and numbers in benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-benchmarks/out/gpu}}
mkdir -p "$OUT"
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1 nnUNet_compile=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
date -u | tee -a "$OUT/card.txt"
timeout 150 "$PY" benchmarks/step_time.py --device cuda --patch 128 --iterations 20 --json "$OUT/step_time.json" \
    2>&1 | tee "$OUT/step_time.txt"
timeout 90 "$PY" benchmarks/loss_cost.py --device cuda --patch 128 --repeats 10 --json "$OUT/loss_cost.json" \
    2>&1 | tee "$OUT/loss_cost.txt"
timeout 220 "$PY" benchmarks/predict_cost.py --device cuda --size 320 --cases 2 --default-network \
    --work "$OUT/predict_cost" --json "$OUT/predict_cost.json" 2>&1 | tee "$OUT/predict_cost.txt"
timeout 120 "$PY" benchmarks/score_round.py --device cuda --full --mirroring --metric --repeats 2 \
    --json "$OUT/score_round.json" 2>&1 | tee "$OUT/score_round.txt"
