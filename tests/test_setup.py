"""The set-up installs the right stack for the machine (DESIGN: CPU build, no CUDA packages)."""

import importlib.metadata
import shutil
import subprocess
import sys

import pytest


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


@pytest.mark.skipif(has_nvidia_gpu(), reason="machine has an NVIDIA GPU: CUDA packages are expected")
def test_cpu_machine_has_no_cuda_packages():
    names = sorted(d.metadata["Name"] for d in importlib.metadata.distributions())
    assert [n for n in names if "nvidia" in n.lower()] == []
    import torch

    assert torch.version.cuda is None, "a CUDA build of torch was installed on a CPU machine"


def test_sam2_model_imports_without_torchvision():
    assert importlib.util.find_spec("torchvision") is None, "torchvision must not be installed"
    code = "import sam2.build_sam, sam2.modeling.sam2_base; import sys; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_serve_import_is_light():
    """`segparts serve` must start fast: importing the server and CLI must not pull in torch."""
    code = (
        "import sys, segparts.cli; segparts.cli.build_parser(); "
        "import segparts.server; assert 'torch' not in sys.modules, 'torch imported at start-up'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
