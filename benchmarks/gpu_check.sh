#!/usr/bin/env bash
# One GPU performance check, meant for a single ~10-minute run on one H100 (nnU-Net's wheels installed):
#
#   1. a BraTS-sized synthetic dataset with our own generator (8 cases of 4 x 140x170x140),
#   2. nnU-Net plans and preprocesses it (3d_fullres; patch ~128^3),
#   3. (a) SLeMTrainer_noPretrain vs nnUNetTrainer: seconds per iteration end to end (real data loader) and
#          on one fixed on-GPU batch, and peak GPU memory (benchmarks/gpu_check.py trainer), plus the CFB's
#          parameter and fixed-batch cost on the bare networks (benchmarks/cfb_overhead.py);
#      (b) pretraining end to end vs compute bound (benchmarks/pretrain_throughput.py);
#   4. a table of ratios next to the goals: step time <= 1.05, memory <= 1.10, pretraining >= 0.90.
#
# Usage, from the repository root:
#   bash benchmarks/gpu_check.sh [WORKDIR]              # the real check (CUDA)
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh /tmp/gc  # CPU smoke test of the same steps, tiny sizes
# On the lent device, start with the install line from the header of ../shared/tools/prep_device_wheels.sh
# (then PYTHONPATH carries this checkout; `python -m nnunet_slem` stands in for the `nnunet-slem` script).
# Knobs (environment): GPU_CHECK_ITERS, GPU_CHECK_PRETRAIN_STEPS, GPU_CHECK_CASES, GPU_CHECK_SHAPE,
# GPU_CHECK_NP (planning processes), nnUNet_n_proc_DA (augmentation workers), nnUNet_compile (default off:
# compilation would eat a third of the budget and both trainers are compared without it),
# GPU_CHECK_PARTS (default "trainer pretrain"; "pretrain" alone skips part (a)),
# GPU_CHECK_TRANSFER (default "auto"; e.g. "auto float32" measures the pretraining once per transfer dtype).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/slem_gpu_check}
PY=${PYTHON:-python3}
ID=${GPU_CHECK_DATASET_ID:-990}
CONFIG=3d_fullres
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    DEVICE=cpu; SHAPE=${GPU_CHECK_SHAPE:-40 48 40}; CASES=${GPU_CHECK_CASES:-5}  # 5: nnU-Net splits 5 folds
    ITERS=${GPU_CHECK_ITERS:-3}; WARMUP=1; PRETRAIN_STEPS=${GPU_CHECK_PRETRAIN_STEPS:-3}; NP=${GPU_CHECK_NP:-2}
    export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-0}
else
    DEVICE=cuda; SHAPE=${GPU_CHECK_SHAPE:-140 170 140}; CASES=${GPU_CHECK_CASES:-8}
    ITERS=${GPU_CHECK_ITERS:-40}; WARMUP=8; PRETRAIN_STEPS=${GPU_CHECK_PRETRAIN_STEPS:-40}; NP=${GPU_CHECK_NP:-8}
    export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-12}
fi
export nnUNet_raw=$WORK/nnUNet_raw nnUNet_preprocessed=$WORK/nnUNet_preprocessed nnUNet_results=$WORK/nnUNet_results
export nnUNet_compile=${nnUNet_compile:-f} PYTHONUNBUFFERED=1
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
SECONDS=0
stamp() { echo "[gpu_check ${SECONDS}s] $*"; }

stamp "dataset: $CASES cases of 4 x $SHAPE"
# shellcheck disable=SC2086  # SHAPE is three numbers
$PY -m nnunet_slem make-dataset -d "$ID" --shape $SHAPE --cases "$CASES" --test-cases 0 --overwrite >/dev/null
stamp "plan and preprocess ($CONFIG)"
# planning calls torch.set_num_threads(nnUNet_n_proc_DA), which must not be 0 there
nnUNet_n_proc_DA=$NP nnUNetv2_plan_and_preprocess -d "$ID" -c "$CONFIG" -np "$NP" >"$WORK/plan_and_preprocess.log" 2>&1 \
    || { tail -40 "$WORK/plan_and_preprocess.log"; exit 1; }
PLANS=nnUNetPlans
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    PLANS=nnUNetPlans_gpucheck_tiny
    $PY benchmarks/gpu_check.py tiny-plans -d "$ID" -p nnUNetPlans -o "$PLANS" >/dev/null
fi

PARTS=${GPU_CHECK_PARTS:-trainer pretrain}
for trainer in nnUNetTrainer SLeMTrainer_noPretrain; do
    [[ " $PARTS " == *" trainer "* ]] || break
    out=trainer_$([ "$trainer" = nnUNetTrainer ] && echo nnUNetTrainer || echo SLeM)
    stamp "(a) $trainer: $ITERS iterations end to end, $ITERS on a fixed batch"
    $PY benchmarks/gpu_check.py trainer -d "$ID" -tr "$trainer" -p "$PLANS" -c "$CONFIG" -device "$DEVICE" \
        --iters "$ITERS" --warmup "$WARMUP" --out "$WORK/$out.json" >"$WORK/$out.log" 2>&1 \
        || { tail -40 "$WORK/$out.log"; exit 1; }
done
if [[ " $PARTS " == *" trainer "* ]]; then
    stamp "(a) bare networks (cfb_overhead.py)"
    $PY benchmarks/cfb_overhead.py --plans "$nnUNet_preprocessed"/Dataset"$ID"_*/"$PLANS".json -c "$CONFIG" \
        -device "$DEVICE" --steps "$ITERS" 2>&1 | tee "$WORK/cfb_overhead.txt" | grep -v '^RESULT'
fi
out=pretrain_throughput.txt  # the first dtype listed is the one the report's ratio uses
for transfer in ${GPU_CHECK_TRANSFER:-auto}; do
    [ "$out" = pretrain_throughput.txt ] || out=pretrain_throughput_$transfer.txt
    stamp "(b) pretraining throughput ($PRETRAIN_STEPS steps each, transfer dtype $transfer)"
    $PY benchmarks/pretrain_throughput.py -d "$ID" -c "$CONFIG" -p "$PLANS" -device "$DEVICE" \
        --steps "$PRETRAIN_STEPS" --transfer-dtype "$transfer" 2>&1 | tee "$WORK/$out" | grep -v '^RESULT'
    out=next
done
stamp "report"
$PY benchmarks/gpu_check.py report "$WORK"
stamp "done"
