#!/usr/bin/env bash
# Sets up .venv with the tinymim stack. Idempotent: a second run only verifies.
#
# Usage:
#   bash tools/install.sh                     install into $VENV, or only verify it when it is up to date
#   bash tools/install.sh --prepare-mmcv DIR  the fast part of mmcv's source build, in DIR: fetch the sdist,
#                                             switch it to C++20 (checked), prepare its metadata in $VENV
#                                             (which needs torch already); stops before compiling
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
#   MAX_JOBS             parallel compile jobs of the mmcv source build (default: the number of cores)
#   MMCV_WITH_OPS, FORCE_CUDA, MMCV_CUDA_ARGS, TORCH_CUDA_ARCH_LIST
#                        passed through to mmcv's setup.py (FORCE_CUDA=1 with nvcc on PATH: CUDA ops)
#
# Sourcing this file defines its functions without running anything.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.29.1}
MMCV_VERSION=2.1.0
MMCV_CACHE=${MMCV_CACHE:-$HOME/.cache/tinymim/wheels}
# How long the mmcv source build took here (2-core x86-64 machine), for the message before it starts.
MMCV_BUILD_TIME="11 min on 2 free cores, 91 min with them busy"
# The C++ standard flags of mmcv's setup.py that the C++20 switch replaces.
MMCV_STD_PATTERN='-std=c\+\+1[0-9]'
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
STAMP="$VENV/.tinymim-installed"

step() {  # step "description" command...
  local desc=$1; shift
  local t0; t0=$(date +%s)
  echo "[install] $desc ..."
  "$@" || return $?
  echo "[install] $desc: done in $(( $(date +%s) - t0 ))s"
}

fail() {  # fail "what went wrong" "how to fix it"
  echo "[install] FAILED: $1" >&2
  echo "[install] FIX: $2" >&2
  exit 1
}

minsec() { printf '%dm%02ds' $(( $1 / 60 )) $(( $1 % 60 )); }

logged() {  # logged LOG "what" "fix" command...: run with its output appended to LOG; on failure show LOG's tail
  local log=$1 what=$2 fix=$3; shift 3
  echo "### $*" >>"$log"
  if ! "$@" >>"$log" 2>&1; then
    echo "[install] last lines of $log:" >&2
    tail -n 40 "$log" >&2
    fail "$what (full log: $log)" "$fix"
  fi
}

have() { "$PY" - "$@" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
name, want = sys.argv[1], sys.argv[2]
have = version(name)
sys.exit(0 if want in (have, have.split('+')[0]) else 1)  # 2.14.1 is any local build, 2.14.1+cpu only that one
PY
}

verify() { "$PY" tools/check_install.py; }

# ---------------------------------------------------------------- mmcv from source
# PyPI has only the mmcv sdist. Its setup.py imports torch and pkg_resources, so
# every pip step runs without build isolation, in the venv (torch, setuptools<82):
# an isolated build environment gets the newest setuptools, which has no
# pkg_resources, and no torch. That holds for `pip download` too, which prepares
# an sdist's metadata. torch >= 2.10 headers need C++20, and mmcv 2.1.0 asks for
# C++14/17.

mmcv_fetch_sdist() {  # DIR LOG: download and unpack mmcv's sdist into DIR
  logged "$2" "could not fetch mmcv $MMCV_VERSION's sdist" \
    "check access to the package index; the venv needs torch and setuptools<82 ('$PY -m pip install \"setuptools<82\"')" \
    "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$1"
  tar -xzf "$1/mmcv-$MMCV_VERSION.tar.gz" -C "$1"
  echo "[install] fetched mmcv-$MMCV_VERSION.tar.gz"
}

mmcv_patch_cxx20() {  # SETUP_PY: switch mmcv's C++ standard flags to C++20, and check that they were there
  local setup=$1 before after
  before=$(grep -cE -e "$MMCV_STD_PATTERN" "$setup" || true)
  [ "$before" -gt 0 ] || fail "the C++20 switch found no '-std=c++1x' flag in $setup: mmcv's setup.py changed" \
    "adapt MMCV_STD_PATTERN in tools/install.sh to how this setup.py sets the C++ standard (torch >= 2.10 needs C++20)"
  sed -i -E "s/$MMCV_STD_PATTERN/-std=c++20/g" "$setup"
  after=$(grep -cE -e "$MMCV_STD_PATTERN" "$setup" || true)
  [ "$after" -eq 0 ] && [ "$(grep -cF -e '-std=c++20' "$setup")" -ge "$before" ] \
    || fail "the C++20 switch left $after '-std=c++1x' lines in $setup" "check the sed command of mmcv_patch_cxx20"
  echo "[install] mmcv's setup.py: the C++ standard switched to C++20 on $before lines"
}

mmcv_prepare_metadata() {  # SRC LOG: prepare the patched tree's metadata as the build does, without compiling
  local src=$1 log=$2 report; report=$(dirname "$src")/mmcv-metadata.json
  logged "$log" "mmcv $MMCV_VERSION's setup.py failed before compiling" \
    "read the log's error; the venv needs torch and setuptools<82 ('$PY -m pip install \"setuptools<82\"')" \
    "${PIP[@]}" install --dry-run --ignore-installed --no-deps --no-build-isolation --report "$report" "$src"
  local name; name=$("$PY" -c 'import json, sys; m = json.load(open(sys.argv[1]))["install"][0]["metadata"]
print(m["name"], m["version"])' "$report")
  [ "$name" = "mmcv $MMCV_VERSION" ] || fail "mmcv's source would build '$name', not mmcv $MMCV_VERSION" \
    "unset MMCV_WITH_OPS (MMCV_WITH_OPS=0 builds mmcv-lite, without the compiled ops mmseg needs)"
  echo "[install] metadata prepared: $name"
}

mmcv_prepare_source() {  # DIR LOG: everything before the compile; the tree is DIR/mmcv-<version>
  mmcv_fetch_sdist "$1" "$2"
  mmcv_patch_cxx20 "$1/mmcv-$MMCV_VERSION/setup.py"
  mmcv_prepare_metadata "$1/mmcv-$MMCV_VERSION" "$2"
}

build_progress() {  # LOG T0 PID: a line every 30 s while PID runs
  local log=$1 t0=$2 pid=$3 now last=$2 step done_ total file msg
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    now=$(date +%s)
    (( now - last >= 30 )) || continue
    last=$now
    # ninja numbers its steps (one per source file, then the link): [done/total] ... FILE.cpp
    step=$(grep -E '^ *\[[0-9]+/[0-9]+\]' "$log" 2>/dev/null | tail -n 1 || true)
    if [ -n "$step" ]; then
      done_=$(sed -E 's#^ *\[([0-9]+)/.*#\1#' <<<"$step"); total=$(sed -E 's#^ *\[[0-9]+/([0-9]+)\].*#\1#' <<<"$step")
      file=$(grep -oE '[^ ]+\.(cpp|cu|cc|mm) ' <<<"$step" | tail -n 1 | tr -d ' ' || true)
      msg="step $done_/$total${file:+ (${file##*/})}, about $(minsec $(( (now - t0) * (total - done_) / done_ ))) left at this pace"
    else
      msg="last log line: $(tail -n 1 "$log" 2>/dev/null | sed -E 's/^ +//' | cut -c 1-90 || true)"
    fi
    echo "[install]   mmcv build: $(minsec $(( now - t0 ))) elapsed, $msg"
  done
}

mmcv_compile() {  # SRC OUT LOG: build the wheel into OUT, with a progress line every 30 s
  local src=$1 out=$2 log=$3 jobs=${MAX_JOBS:-$(nproc)} t0 ticker rc=0
  mkdir -p "$out"
  # torch builds extensions in parallel (MAX_JOBS) only with ninja; the venv's bin holds pip's ninja.
  export PATH="$(dirname "$PY"):$PATH"
  command -v ninja >/dev/null || logged "$log" "could not install ninja" "check access to the package index" \
    "${PIP[@]}" install ninja
  echo "[install] compiling mmcv $MMCV_VERSION's ops with MAX_JOBS=$jobs (${FORCE_CUDA:+FORCE_CUDA=$FORCE_CUDA, }measured $MMCV_BUILD_TIME)"
  echo "[install] build log: $log"
  t0=$(date +%s)
  build_progress "$log" "$t0" "$BASHPID" &
  ticker=$!
  MAX_JOBS=$jobs "${PIP[@]}" wheel -v --no-build-isolation --no-deps -w "$out" "$src" >>"$log" 2>&1 || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "[install] mmcv build failed after $(minsec $(( $(date +%s) - t0 ))); last lines of $log:" >&2
    tail -n 40 "$log" >&2
    fail "mmcv $MMCV_VERSION did not compile (full log: $log)" \
      "a missing compiler or Python headers: install g++ and python3-dev; 'Killed' or out of memory: MAX_JOBS=1; \
C++ errors about std:: features: check that the C++20 switch ran; or skip the build with a prebuilt wheel in TINYMIM_WHEELHOUSE"
  fi
  echo "[install] mmcv compiled in $(minsec $(( $(date +%s) - t0 )))"
}

build_mmcv_wheel() {  # OUT_DIR
  local out=$1 log src
  mkdir -p "$out"
  log="$out/mmcv-$MMCV_VERSION-build.log"
  : >"$log"
  src=$(mktemp -d)
  trap "rm -rf '$src'" EXIT
  mmcv_prepare_source "$src" "$log"
  mmcv_compile "$src/mmcv-$MMCV_VERSION" "$out" "$log"
  rm -rf "$src"
  trap - EXIT
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
    echo "[install] no mmcv $MMCV_VERSION $tag wheel in TINYMIM_WHEELHOUSE or $cache;" \
         "building it from source and caching it there"
    build_mmcv_wheel "$cache"
    wheel=$(ls "$cache"/mmcv-$MMCV_VERSION-$tag-*.whl | head -n 1)
  fi
  echo "[install] mmcv wheel: $wheel"
  "${PIP[@]}" install -q --no-deps "$wheel"
  "${PIP[@]}" install -q addict packaging pyyaml yapf
}

prepare_mmcv_only() {  # DIR
  local dir=$1
  "$PY" -c 'import torch' 2>/dev/null || fail "$PY has no torch; mmcv's setup.py imports it" \
    "run 'make install' (or point VENV at an environment with torch) first"
  mkdir -p "$dir"
  mmcv_prepare_source "$dir" "$dir/mmcv-prepare.log"
  echo "[install] mmcv's source is ready to compile in $dir/mmcv-$MMCV_VERSION (not compiled)"
}

main() {
  local t_all; t_all=$(date +%s)
  cd "$ROOT"
  if [ -f "$STAMP" ] && [ -z "$(find setup.py requirements -newer "$STAMP")" ] && verify >/dev/null 2>&1; then
    echo "[install] $VENV is up to date (verified in $(( $(date +%s) - t_all ))s)"
    return 0
  fi

  [ -x "$PY" ] || step "create $VENV" "$PYTHON" -m venv "$VENV"
  step "pip, setuptools<82, wheel" "${PIP[@]}" install -q --upgrade pip "setuptools<82" wheel
  if have torch "${TORCH_SPEC#*==}" && have torchvision "${TORCHVISION_SPEC#*==}"; then
    echo "[install] $TORCH_SPEC and $TORCHVISION_SPEC already present"
  else
    step "$TORCH_SPEC $TORCHVISION_SPEC${TORCH_INDEX_URL:+ (extra index $TORCH_INDEX_URL)}" \
        "${PIP[@]}" install -q ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC" "$TORCHVISION_SPEC" \
      || fail "pip could not install $TORCH_SPEC and $TORCHVISION_SPEC (its error above)" \
              "check that the package index${TORCH_INDEX_URL:+ and $TORCH_INDEX_URL} can be reached and offer this pair for Python $("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); set TORCH_SPEC, TORCHVISION_SPEC and TORCH_INDEX_URL together"
  fi
  if have mmcv "$MMCV_VERSION" && "$PY" -c "import mmcv._ext" 2>/dev/null; then
    echo "[install] mmcv $MMCV_VERSION with compiled ops already present"
  else
    step "mmcv $MMCV_VERSION (full, compiled ops)" install_mmcv
  fi
  # Pin torch/torchvision to what is installed: some dependency ranges would
  # otherwise let pip swap in another torch build that mmcv's ops do not match.
  local constraints="$VENV/tinymim-constraints.txt"
  "$PY" -c "from importlib.metadata import version as v; print(f\"torch=={v('torch')}\ntorchvision=={v('torchvision')}\nsetuptools<82\")" > "$constraints"
  step "mmengine, mmsegmentation, timm, openmim, test tools" \
    "${PIP[@]}" install -q -c "$constraints" -r requirements/runtime.txt -r requirements/tests.txt
  step "tinymim (editable)" "${PIP[@]}" install -q --no-deps --no-build-isolation -e .
  # mim looks for <dist location>/tinymim/.mim; a PEP 660 editable install keeps
  # only its dist-info in site-packages, so point site-packages/tinymim at the
  # source package (the build created tinymim/.mim's links to configs and tools).
  local site; site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  [ -e "$site/tinymim" ] || ln -s "$ROOT/tinymim" "$site/tinymim"
  # The deploy extra (ONNX export, ONNX Runtime, INT8): setup.py's extras_require['deploy'].
  step "deploy extra: onnx, onnxruntime, onnxscript" \
    "${PIP[@]}" install -q -c "$constraints" -r requirements/deploy.txt
  verify || fail "the stack is broken, see above" "the FIX lines above"
  touch "$STAMP"
  echo "[install] all done in $(( $(date +%s) - t_all ))s"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  case "${1:-}" in
    "") main ;;
    --prepare-mmcv)
      [ $# -eq 2 ] || fail "--prepare-mmcv takes one folder" "bash tools/install.sh --prepare-mmcv DIR"
      dir=$(mkdir -p "$2" && cd "$2" && pwd)
      cd "$ROOT"
      prepare_mmcv_only "$dir" ;;
    *) fail "unknown argument '$1'" "bash tools/install.sh [--prepare-mmcv DIR]; settings go in environment variables" ;;
  esac
fi
