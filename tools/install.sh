#!/usr/bin/env bash
# Sets up .venv with the tinymim stack. Idempotent: a second run only verifies.
#
# Environment:
#   VENV                 venv folder (default .venv)
#   PYTHON               interpreter used to create the venv (default python3)
#   TORCH_SPEC           torch requirement (default torch==2.14.1)
#   TORCHVISION_SPEC     torchvision requirement (default torchvision==0.29.1)
#   TORCH_INDEX_URL      extra index for other CUDA builds of torch (optional)
#   TINYMIM_WHEELHOUSE   folder with a prebuilt mmcv 2.1.0 wheel for this stack (optional)
#   MMCV_CACHE           where source-built mmcv wheels are cached, per torch version
#                        (default ~/.cache/tinymim/wheels; wheels go to torch-<version>/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.29.1}
MMCV_VERSION=2.1.0
MMCV_CACHE=${MMCV_CACHE:-$HOME/.cache/tinymim/wheels}
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
STAMP="$VENV/.tinymim-installed"
T_ALL=$(date +%s)

step() {  # step "description" command...
  local desc=$1; shift
  local t0; t0=$(date +%s)
  echo "[install] $desc ..."
  "$@"
  echo "[install] $desc: done in $(( $(date +%s) - t0 ))s"
}

have() { "$PY" - "$@" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
name, want = sys.argv[1], sys.argv[2]
sys.exit(0 if version(name).split('+')[0] == want else 1)
PY
}

verify() { "$PY" tools/check_install.py; }

build_mmcv_wheel() {  # build_mmcv_wheel OUT_DIR
  # PyPI has only the mmcv sdist. It builds against torch >= 2.10 only as C++20,
  # and only without build isolation (it imports torch in setup.py).
  local out=$1 src; src=$(mktemp -d)
  "${PIP[@]}" download --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$src"
  tar -xzf "$src"/mmcv-$MMCV_VERSION.tar.gz -C "$src"
  sed -i -E 's/-std=c\+\+(14|17)/-std=c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
  mkdir -p "$out"
  MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel --no-build-isolation --no-deps \
      -w "$out" "$src/mmcv-$MMCV_VERSION"
  rm -rf "$src"
}

install_mmcv() {
  # Only a wheel for this Python; the cache is kept per torch version, since
  # mmcv's compiled ops are tied to the torch they were built against.
  local tag torch_ver cache wheel=""
  tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  torch_ver=$("$PY" -c 'from importlib.metadata import version; print(version("torch"))')
  cache="$MMCV_CACHE/torch-$torch_ver"
  for dir in ${TINYMIM_WHEELHOUSE:+"$TINYMIM_WHEELHOUSE"} "$cache"; do
    [ -d "$dir" ] || continue
    wheel=$(ls "$dir"/mmcv-$MMCV_VERSION-$tag-$tag-linux_*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$wheel" ] && break
  done
  if [ -z "$wheel" ]; then
    echo "[install] no mmcv $MMCV_VERSION $tag wheel in TINYMIM_WHEELHOUSE or $cache; building from source (~30 min on 2 cores)"
    build_mmcv_wheel "$cache"
    wheel=$(ls "$cache"/mmcv-$MMCV_VERSION-$tag-*.whl | head -n 1)
  fi
  echo "[install] mmcv wheel: $wheel"
  "${PIP[@]}" install -q --no-deps "$wheel"
  "${PIP[@]}" install -q addict packaging pyyaml yapf
}

if [ -f "$STAMP" ] && [ -z "$(find setup.py requirements -newer "$STAMP")" ] && verify >/dev/null 2>&1; then
  echo "[install] $VENV is up to date (verified in $(( $(date +%s) - T_ALL ))s)"
  exit 0
fi

[ -x "$PY" ] || step "create $VENV" "$PYTHON" -m venv "$VENV"
step "pip, setuptools<82, wheel" "${PIP[@]}" install -q --upgrade pip "setuptools<82" wheel
if have torch "${TORCH_SPEC#*==}" && have torchvision "${TORCHVISION_SPEC#*==}"; then
  echo "[install] $TORCH_SPEC and $TORCHVISION_SPEC already present"
else
  step "$TORCH_SPEC $TORCHVISION_SPEC" "${PIP[@]}" install -q ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      "$TORCH_SPEC" "$TORCHVISION_SPEC"
fi
if have mmcv "$MMCV_VERSION" && "$PY" -c "import mmcv._ext" 2>/dev/null; then
  echo "[install] mmcv $MMCV_VERSION with compiled ops already present"
else
  step "mmcv $MMCV_VERSION (full, compiled ops)" install_mmcv
fi
# Pin torch/torchvision to what is installed: some dependency ranges would
# otherwise let pip swap in another torch build that mmcv's ops do not match.
CONSTRAINTS="$VENV/tinymim-constraints.txt"
"$PY" -c "from importlib.metadata import version as v; print(f\"torch=={v('torch')}\ntorchvision=={v('torchvision')}\nsetuptools<82\")" > "$CONSTRAINTS"
step "mmengine, mmsegmentation, timm, openmim, test tools" \
  "${PIP[@]}" install -q -c "$CONSTRAINTS" -r requirements/runtime.txt -r requirements/tests.txt
step "tinymim (editable)" "${PIP[@]}" install -q --no-deps --no-build-isolation -e .
# mim looks for <dist location>/tinymim/.mim; a PEP 660 editable install keeps
# only its dist-info in site-packages, so point site-packages/tinymim at the
# source package (the build created tinymim/.mim's links to configs and tools).
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
[ -e "$SITE/tinymim" ] || ln -s "$ROOT/tinymim" "$SITE/tinymim"
# The deploy extra (ONNX export, ONNX Runtime, INT8): setup.py's extras_require['deploy'].
step "deploy extra: onnx, onnxruntime, onnxscript" \
  "${PIP[@]}" install -q -c "$CONSTRAINTS" -r requirements/deploy.txt
if ! verify; then
  echo "[install] the stack is broken, see above" >&2
  exit 1
fi
touch "$STAMP"
echo "[install] all done in $(( $(date +%s) - T_ALL ))s"
