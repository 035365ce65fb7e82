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

device=auto
[ "${SEGPARTS_DEVICE:-}" = cpu ] && device=cpu

# the project, its light dependencies and the test tools (bpy 5.0.1 needs Python 3.11; ruff and mypy
# for `make lint`); no torch yet
"${pip[@]}" install -q -e ".[bench,batch,test]"

# the learned engines' stack, the same way the add-on's "Set up Backend" installs it: torch in the
# build for this machine first (TORCH_INDEX_URL picks a wheel index when the default one would serve
# the wrong build), then spconv, hydra-core/iopath, and sam2 from source without torchvision
echo "setup: installing the learned engines' stack (segparts setup --learned --device $device)"
"$VENV/bin/python" -m segparts setup --learned --device "$device" --torch-version "$TORCH_VERSION"

has_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then has_gpu=1; fi
[ "$device" = cpu ] && has_gpu=0
if [ $has_gpu = 0 ] && "${pip[@]}" list 2>/dev/null | grep -qi nvidia; then
  echo "setup: warning: CUDA packages were installed on a machine without an NVIDIA GPU:" >&2
  "${pip[@]}" list 2>/dev/null | grep -i nvidia >&2
  echo "setup: re-run with TORCH_INDEX_URL set to PyTorch's CPU wheel index" >&2
fi
echo "setup: done ($VENV)"
