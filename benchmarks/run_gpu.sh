#!/usr/bin/env bash
# The GPU tables of docs/performance.md in one run: bf16 autocast and
# torch.compile on our side, against the eager baseline in bf16 (distillation)
# and mmseg's MAE backbone (segmentation), on the first visible CUDA device.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]          (default work_dirs/benchmarks_gpu)
#
# Environment (defaults in brackets):
#   PYTHON       interpreter with tinymim installed [.venv/bin/python, else python]
#   PEAK_TFLOPS  the GPU's datasheet dense bf16 peak, for the MFU column
#                [none: MFU against the measured bf16 torch.mm peak]
#   BATCH        distillation images per step [128, the recipe's per-GPU batch]
#   PAIRS, RES   distillation pairs and input sizes [b-s,l-b,s-t and 224,448]
#   LOSS_MEMORY  sizes of the relation-loss memory table [224,448,640]
#   ARCHS, PARTS segmentation models and parts [base,small,tiny and backbone,whole,slide,train]
#   CROP         segmentation crop [512]
#   WARMUP, REPEATS  untimed and timed runs per configuration [2 and 5]
#   ROUNDS       alternating fresh processes per side; each figure is their range [3]
#   DEVICE, COMPILE, PEAK_SIZE, IMAGES  [cuda, 1, 8192, 64]: only for trying the
#                script on a machine without a GPU (the tests run it on CPU)
#
# Each table goes to OUT_DIR/<script>.md as the script prints it, beside
# OUT_DIR/nvidia-smi.txt. Compilation happens in the warm-up runs, which
# are never timed. Before timing a distillation configuration, the script
# checks that the eager baseline computes our loss and gradients. A configuration that fails (e.g. out of memory) is a
# "failed: <error>" row and the others still run; so does the next script
# after a failed one. The exit status says whether anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-work_dirs/benchmarks_gpu}
mkdir -p "$out"
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
common=(--device "${DEVICE:-cuda}" --amp --warmup "${WARMUP:-2}" --repeats "${REPEATS:-5}" --rounds "${ROUNDS:-3}")
[[ ${COMPILE:-1} == 1 ]] && common+=(--compile)
peak=(--peak-size "${PEAK_SIZE:-8192}")
[[ -n ${PEAK_TFLOPS:-} ]] && peak+=(--peak-tflops "$PEAK_TFLOPS")

if [[ ${DEVICE:-cuda} == cuda ]]; then  # fail at once, not after the CPU-only table
    "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device is visible to torch")'
fi
status=0
table() {  # table NAME ARGS...: benchmarks/NAME.py ARGS, printed and written to OUT_DIR/NAME.md
    local name=$1
    shift
    "$PYTHON" "benchmarks/$name.py" "$@" | tee "$out/$name.md" || { echo "[run_gpu] $name: failed" >&2; status=1; }
}

nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" >"$out/nvidia-smi.txt"
# B->S first: the pair the targets name, in case the device time runs out.
table distill_step "${common[@]}" "${peak[@]}" --pairs "${PAIRS:-b-s,l-b,s-t}" \
    --res "${RES:-224,448}" --batch "${BATCH:-128}" --loss-memory "${LOSS_MEMORY:-224,448,640}"
table seg_step "${common[@]}" --archs "${ARCHS:-base,small,tiny}" \
    --parts "${PARTS:-backbone,whole,slide,train}" --crop "${CROP:-512}"
# Data-loader workers are CPU processes on a GPU machine too: measured per worker, as anywhere.
table data_pipeline --images "${IMAGES:-64}" --rounds "${ROUNDS:-3}"
echo "tables written to $out"
exit $status
