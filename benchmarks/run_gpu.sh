#!/usr/bin/env bash
# The GPU tables of docs/performance.md in one run: bf16 autocast and
# torch.compile on our side, against the eager fp16 baseline (distillation)
# and mmseg's MAE backbone (segmentation), on the first visible CUDA device.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]          (default work_dirs/benchmarks_gpu)
#
# Environment (defaults in brackets):
#   PYTHON       interpreter with tinymim installed [.venv/bin/python, else python]
#   PEAK_TFLOPS  the GPU's datasheet dense bf16 peak, for the MFU column
#                [none: MFU against the measured bf16 torch.mm peak]
#   BATCH        distillation images per step [128, the recipe's per-GPU batch]
#   PAIRS, RES   distillation pairs and input sizes [l-b,b-s,s-t and 224,448]
#   LOSS_MEMORY  sizes of the relation-loss memory table [224,448,640]
#   ARCHS, PARTS segmentation models and parts [tiny,small,base and backbone,whole,slide,train]
#   CROP         segmentation crop [512]
#   WARMUP, REPEATS  untimed and timed runs per configuration [2 and 5]
#   DEVICE, COMPILE, PEAK_SIZE, IMAGES  [cuda, 1, 8192, 64]: only for trying the
#                script on a machine without a GPU (the tests run it on CPU)
#
# Each table goes to OUT_DIR/<script>.md as the script prints it, beside
# OUT_DIR/nvidia-smi.txt. Compilation happens in the warm-up runs, which
# are never timed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-work_dirs/benchmarks_gpu}
mkdir -p "$out"
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
common=(--device "${DEVICE:-cuda}" --amp --warmup "${WARMUP:-2}" --repeats "${REPEATS:-5}")
[[ ${COMPILE:-1} == 1 ]] && common+=(--compile)
peak=(--peak-size "${PEAK_SIZE:-8192}")
[[ -n ${PEAK_TFLOPS:-} ]] && peak+=(--peak-tflops "$PEAK_TFLOPS")

nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" >"$out/nvidia-smi.txt"
"$PYTHON" benchmarks/distill_step.py "${common[@]}" "${peak[@]}" --pairs "${PAIRS:-l-b,b-s,s-t}" \
    --res "${RES:-224,448}" --batch "${BATCH:-128}" --loss-memory "${LOSS_MEMORY:-224,448,640}" \
    | tee "$out/distill_step.md"
"$PYTHON" benchmarks/seg_step.py "${common[@]}" --archs "${ARCHS:-tiny,small,base}" \
    --parts "${PARTS:-backbone,whole,slide,train}" --crop "${CROP:-512}" | tee "$out/seg_step.md"
# Data-loader workers are CPU processes on a GPU machine too: measured per worker, as anywhere.
"$PYTHON" benchmarks/data_pipeline.py --images "${IMAGES:-64}" --rounds 2 | tee "$out/data_pipeline.md"
echo "tables written to $out"
