#!/usr/bin/env bash
# GPU checks and benchmarks in two parts, each fitting one 10-minute device call (the timeouts add up to <= 580 s):
#
#   bash benchmarks/gpu.sh [OUT_DIR] compile   # first: the compiled path at 320^3 (benchmarks/compile_check.py):
#       synth 3+1 cases of 320^3 -> convert -> plan/preprocess -> nnUNetv2_train TopoWarmup with nnU-Net's default
#       torch.compile on, EMA and a score round per epoch -> --c; no _orig_mod. keys in the checkpoints;
#       nnUNetv2_predict -chk checkpoint_best_score.pth; nnUNetv2_export_model_to_zip; --val --npz with
#       nnUNet_topo_config unset; step time with compile on (nnUNetTrainer vs TopoWarmup, patch 128^3)
#   bash benchmarks/gpu.sh [OUT_DIR] bench     # then, compile off as in the CPU tables:
#     1. step time and peak memory at patch 128^3, batch 2, AMP, nnU-Net's default network, for nnUNetTrainer and
#        every TopoWarmup variant, the host-device sync sites per step, and the cost of the weight EMA
#        (benchmarks/step_time.py);
#     2. the loss-cost table at patch 128^3, batch 2, AMP (benchmarks/loss_cost.py);
#     3. predict cost on 2 cases of 320^3 with nnU-Net's default network (patch 128^3): 1 model, 2 models fused,
#        2 models + rot90 TTA, against the disk route --save_probabilities + nnUNetv2_ensemble
#        (benchmarks/predict_cost.py);
#     4. the cost of one competition-score round (score_every_epochs) at 320^3: nnU-Net's sliding window of the
#        default network at patch 128 with and without mirroring, logits -> segmentation, the metric on the CPU
#        (benchmarks/score_round.py).
#   bash benchmarks/gpu.sh [OUT_DIR] volume    # whole-volume predict at scale (issue 25; about 9 minutes): tiles
#       predicted per grid tile and read amplification on a volume whose tile grid is 21x the tile cache, nnU-Net's
#       default network, patch 128^3, AMP, --deterministic, against the same run with an ample cache (labels equal)
#   bash benchmarks/gpu.sh [OUT_DIR]           # compile and bench, compile first (about 19 minutes: two device calls)
#
# Needs the package installed (`make install` or `pip install -e .`). Record the card, date and numbers in
# benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-benchmarks/out/gpu}}
PART=${2:-all}
case "$PART" in compile|bench|volume|all) ;; *) echo "unknown part '$PART': use compile, bench, volume or all" >&2; exit 2 ;; esac
mkdir -p "$OUT"
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
date -u | tee -a "$OUT/card.txt"
if [ "$PART" = volume ]; then
    # 512 x 1536 x 1536 uint8 in 128^3 chunks: 7 x 23 x 23 = 3703 tiles of 8 MiB (fp16) = 29 GiB against a 1400 MiB
    # tile cache (21x); output chunks 128 (the scroll's storage chunk)
    export nnUNet_compile=false
    timeout 560 "$PY" benchmarks/volume_scale.py --device cuda --shape 512 1536 1536 --patch 128 --chunk 128 \
        --input-chunk 128 --default-network --tile-cache-mb 1400 --cache-mb 2048 --deterministic \
        --json "$OUT/volume_scale.json" 2>&1 | tee "$OUT/volume_scale.txt"
    exit 0
fi
if [ "$PART" != bench ]; then
    # nnU-Net's default on CUDA: compile on; every step inside has its own timeout, the whole at most 580 s
    timeout 580 "$PY" benchmarks/compile_check.py --work "${WORK:-/tmp/topo_compile_check}" \
        --json "$OUT/compile_check.json" 2>&1 | tee "$OUT/compile_check.txt" || echo "compile check FAILED (see above)"
fi
[ "$PART" = compile ] && exit 0
export nnUNet_compile=false
timeout 150 "$PY" benchmarks/step_time.py --device cuda --patch 128 --iterations 20 --json "$OUT/step_time.json" \
    2>&1 | tee "$OUT/step_time.txt"
timeout 90 "$PY" benchmarks/loss_cost.py --device cuda --patch 128 --repeats 10 --json "$OUT/loss_cost.json" \
    2>&1 | tee "$OUT/loss_cost.txt"
timeout 220 "$PY" benchmarks/predict_cost.py --device cuda --size 320 --cases 2 --default-network \
    --work "$OUT/predict_cost" --json "$OUT/predict_cost.json" 2>&1 | tee "$OUT/predict_cost.txt"
timeout 120 "$PY" benchmarks/score_round.py --device cuda --full --mirroring --metric --repeats 2 \
    --json "$OUT/score_round.json" 2>&1 | tee "$OUT/score_round.txt"

# ======================================================================================================================
# Whole-volume predict (issue 19; benchmarks/volume_predict.py). Separate block: appended, not part of the list above.
#   A 1024^3 synthetic Zarr volume, nnU-Net's default network (patch 128^3, AMP), chunk 256, TTA off, in process:
#   one-case predict of the same volume vs predict_scroll (voxels/s, overhead, read amplification, tiles predicted
#   vs the grid, labels differing). The tile cache (16 GB on the card) holds a slab's tiles so each tile is predicted
#   once. Needs ~300 s and ~40 GB of host memory (one-case predict holds the whole volume in float32 several times).
timeout 300 "$PY" benchmarks/volume_predict.py --device cuda --shape 1024 1024 1024 --patch 128 --chunk 256 \
    --default-network --workers --tile-cache-mb 16000 --json "$OUT/volume_predict.json" \
    2>&1 | tee "$OUT/volume_predict.txt"
