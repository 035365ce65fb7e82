#!/usr/bin/env bash
# Creates .venv and installs the backend, the learned engines' stack and the test tools.
# CPU machines get the CPU build of torch and no CUDA packages; machines with an NVIDIA GPU get
# the CUDA stack (see README "GPU notes"). Idempotent: re-running only installs what changed.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; install Python 3.11 (Blender 4.2-5.0's Python) or set PYTHON=" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip setuptools wheel

has_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then has_gpu=1; fi
[ "${SEGPARTS_DEVICE:-}" = cpu ] && has_gpu=0

# torch first: everything after it must not replace it. TORCH_INDEX_URL picks a wheel index
# (PyTorch's cpu or cuXXX index) when the default index would serve the wrong build.
torch_args=("torch==$TORCH_VERSION")
[ -n "${TORCH_INDEX_URL:-}" ] && torch_args+=(--index-url "$TORCH_INDEX_URL")
echo "setup: installing torch $TORCH_VERSION ($([ $has_gpu = 1 ] && echo CUDA || echo CPU) machine)"
"${pip[@]}" install -q "${torch_args[@]}"

if [ $has_gpu = 1 ]; then
  "${pip[@]}" install -q "spconv-cu120"
  # nvdiffrast is optional (the renderer falls back to Embree ray casting without it)
  "${pip[@]}" install -q nvdiffrast 2>/dev/null || echo "setup: nvdiffrast not installed (optional)"
else
  "${pip[@]}" install -q "spconv==2.3.8"
fi

# the project, its light dependencies and the test tools (bpy 5.0.1 needs Python 3.11)
"${pip[@]}" install -q -e ".[ml,bench,batch,test]"

# sam2 from its source distribution without its torchvision requirement (it would pull a
# multi-GB torch build); the backend never imports sam2's torchvision-dependent modules.
if ! "$VENV/bin/python" -c "import sam2" 2>/dev/null; then
  SAM2_BUILD_CUDA=0 "${pip[@]}" install -q --no-build-isolation --no-deps "sam2==1.1.0"
fi

if [ $has_gpu = 0 ] && "${pip[@]}" list 2>/dev/null | grep -qi nvidia; then
  echo "setup: warning: CUDA packages were installed on a machine without an NVIDIA GPU:" >&2
  "${pip[@]}" list 2>/dev/null | grep -i nvidia >&2
  echo "setup: re-run with TORCH_INDEX_URL set to PyTorch's CPU wheel index" >&2
fi
echo "setup: done ($VENV)"
