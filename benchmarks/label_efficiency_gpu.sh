#!/usr/bin/env bash
# The label-efficiency protocol (benchmarks/label_efficiency.py) at BraTS-like size, in one GPU run of about
# 10 minutes: realistic ICBM152-based brains at LE_VOXEL_MM (default 1.5 mm: about 120 x 145 x 115 voxels,
# nnU-Net's own plans and patch), K = 4 labelled cases, paired seeds, scratch vs slem, 20 held-out test
# cases, paired differences with a hierarchical bootstrap CI (paired.csv), then the report.
#
# Usage, from the repository root:
#   bash benchmarks/label_efficiency_gpu.sh [WORKDIR]                  # on the lent GPU
#   LE_GPU_TINY=1 bash benchmarks/label_efficiency_gpu.sh /tmp/leg     # CPU smoke test of the same steps
# On the device, start with the install line from the header of ../shared/tools/prep_device_wheels.sh, and
# carry nilearn too (pure Python; the ICBM152 maps are inside it):
#   python3 -m pip download -q --no-deps --only-binary=:all: -d .whl nilearn
# Run it together with `GPU_CHECK_PARTS=pretrain bash benchmarks/gpu_check.sh`.
# Knobs (environment): LE_METHODS (scratch,slem), LE_SEEDS (3), LE_PRETRAIN_SEEDS (1), LE_EPOCHS (50),
# LE_ITERS (25), LE_PRETRAIN_EPOCHS (10), LE_PRETRAIN_ITERS (50), LE_VOXEL_MM, LE_CASES (24), LE_TEST_CASES (20).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/slem_label_efficiency_gpu}
PY=${PYTHON:-python3}
export nnUNet_compile=${nnUNet_compile:-f} PYTHONUNBUFFERED=1
if [ "${LE_GPU_TINY:-0}" = 1 ]; then
    DEVICE=cpu; VOXEL=${LE_VOXEL_MM:-8}; CASES=${LE_CASES:-6}; TEST=${LE_TEST_CASES:-2}; SEEDS=${LE_SEEDS:-2}
    EPOCHS=${LE_EPOCHS:-1}; ITERS=${LE_ITERS:-2}; PEPOCHS=${LE_PRETRAIN_EPOCHS:-1}; PITERS=${LE_PRETRAIN_ITERS:-2}
    FEATURES=(--features 4 8 16); PLANS=nnUNetPlans_bench; LABELED=2
else
    DEVICE=cuda; VOXEL=${LE_VOXEL_MM:-1.5}; CASES=${LE_CASES:-24}; TEST=${LE_TEST_CASES:-20}; SEEDS=${LE_SEEDS:-3}
    EPOCHS=${LE_EPOCHS:-50}; ITERS=${LE_ITERS:-25}; PEPOCHS=${LE_PRETRAIN_EPOCHS:-10}; PITERS=${LE_PRETRAIN_ITERS:-50}
    FEATURES=(--features); PLANS=nnUNetPlans; LABELED=4
fi
if ! command -v nnunet-slem >/dev/null; then  # the device installs with PYTHONPATH, without console scripts
    mkdir -p "$WORK/bin" && printf '#!/bin/sh\nexec %s -m nnunet_slem "$@"\n' "$PY" > "$WORK/bin/nnunet-slem"
    chmod +x "$WORK/bin/nnunet-slem" && export PATH="$WORK/bin:$PATH"
fi
SECONDS=0
stamp() { echo "[label_efficiency_gpu ${SECONDS}s] $*"; }
stamp "data ($CASES + $TEST cases at $VOXEL mm), planning, preprocessing"
$PY benchmarks/label_efficiency.py prepare --root "$WORK" --cases "$CASES" --test-cases "$TEST" --voxel-mm "$VOXEL" \
    "${FEATURES[@]}"
stamp "compare ${LE_METHODS:-scratch,slem}: K=$LABELED, $SEEDS seeds, $EPOCHS x $ITERS fine-tuning"
$PY benchmarks/label_efficiency.py run --root "$WORK" --methods "${LE_METHODS:-scratch,slem}" --labeled "$LABELED" \
    --plans "$PLANS" --device "$DEVICE" --seeds "$SEEDS" --pretrain-seeds "${LE_PRETRAIN_SEEDS:-1}" \
    --epochs "$EPOCHS" --iters "$ITERS" --val-iters 5 --pretrain-epochs "$PEPOCHS" --pretrain-iters "$PITERS" \
    --pretrain-batch "${LE_PRETRAIN_BATCH:-8}"
stamp "report"
$PY benchmarks/label_efficiency.py report --root "$WORK" --out "$WORK/report"
cat "$WORK"/compare/*/results.md
stamp "done"
