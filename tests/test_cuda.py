"""The CUDA paths of the learned engines (skipped without an NVIDIA GPU; run on one as in
docs/performance.md). Each compares what the GPU computes with a formula or with the CPU, so a
device-placement, dtype or kernel fault shows as a failure, not only as a crash."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _dense_submanifold(weight, bias, coords, feats, size):
    """A submanifold convolution by dense conv3d: spconv 2's layout (cout, k, k, k, cin) is a
    cross-correlation over the index columns (docs/sampart3d.md), as conv3d's (cout, cin, k, k, k)."""
    grid = torch.zeros(1, feats.shape[1], size, size, size, dtype=feats.dtype, device=feats.device)
    x, y, z = coords.long().unbind(1)
    grid[0, :, x, y, z] = feats.T
    k = weight.shape[1]
    out = torch.nn.functional.conv3d(grid, weight.permute(0, 4, 1, 2, 3), bias, padding=k // 2)
    return out[0, :, x, y, z].T


@pytest.mark.parametrize("package", ["spconv", "spconv_triton"])
def test_sparse_convolution_on_cuda_equals_dense_conv3d(package, monkeypatch):
    """The backbone's stem (5x5x5, 9 -> 32 channels) with either sparse-convolution package: the
    released weights mean the same thing in both, or the checkpoint would load into a wrong net."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    from segparts.engines.sampart3d import SPCONV_ENV, backbone

    monkeypatch.setenv(SPCONV_ENV, package)
    spconv = backbone._spconv()
    assert spconv.__name__.startswith(package)
    torch.manual_seed(0)
    size = 24
    coords = torch.unique(torch.randint(0, size, (3000, 3)), dim=0).int().cuda()
    feats = torch.randn(len(coords), 9, device="cuda")
    conv = spconv.SubMConv3d(9, 32, kernel_size=5, bias=True, indice_key="stem").cuda()
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
        indices = torch.cat([torch.zeros_like(coords[:, :1]), coords], dim=1).contiguous()
        sparse = spconv.SparseConvTensor(feats, indices, [size, size, size], batch_size=1)
        got = conv(sparse).features.float()
        want = _dense_submanifold(conv.weight.float(), conv.bias.float(), coords, feats, size)
    scale = want.abs().max()
    assert got.shape == want.shape
    assert (got - want).abs().max() / scale < 1e-2  # tf32 at worst


def test_backbone_on_cuda_is_finite_and_ignores_point_order():
    from segparts.engines.sampart3d.backbone import PointBatch, PTv3Object
    from test_sampart3d_backbone import _object_points

    torch.manual_seed(0)
    model = PTv3Object().eval().cuda()
    grid, feat = (t.cuda() for t in _object_points())
    perm = torch.randperm(len(grid), device="cuda")
    with torch.no_grad():
        out = model(PointBatch(grid, feat))
        permuted = model(PointBatch(grid[perm], feat[perm]))
    assert out.is_cuda and out.shape == (len(grid), 384) and torch.isfinite(out).all()
    torch.testing.assert_close(permuted, out[perm], atol=2e-3, rtol=2e-3)


def test_sampart3d_on_cuda_recovers_the_parts_from_oracle_masks(tmp_path, monkeypatch):
    """The whole engine on the GPU (backbone from a released-format file with random values, field
    training, clustering): the four blocks come back as with the CPU."""
    from segparts.engines.base import SegmentParams
    from segparts.engines.sampart3d import SAMPart3DEngine
    from segparts.engines.sampart3d.backbone import PTv3Object
    from segparts.metrics import miou
    from test_sampart3d import four_blocks
    from test_sampart3d_backbone import ptv3_oracle_options, write_released_checkpoint

    torch.manual_seed(0)
    write_released_checkpoint(PTv3Object(), tmp_path)
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path))
    mesh, part = four_blocks()
    options = ptv3_oracle_options(mesh, part, iterations=200)
    seg = SAMPart3DEngine("cuda").segment(mesh, SegmentParams(scale=0.5, options=options))
    assert seg.labels.shape == (mesh.n_faces,)
    assert miou(seg.labels, part) > 0.8


def test_geosam2_encoder_on_cuda_in_bf16_matches_the_cpu():
    """The release runs GeoSAM2 under bf16 autocast on CUDA: its fused image features stay within
    bf16 error of the float32 CPU model's with the same weights."""
    from segparts.engines.geosam2.model import build_model

    torch.manual_seed(0)
    cpu = build_model(image_size=256, device="cpu").eval()
    gpu = build_model(image_size=256, device="cuda").eval()
    gpu.load_state_dict(cpu.state_dict())
    normal = torch.rand(1, 3, 256, 256) * 2 - 1
    point = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        want = cpu.forward_image(normal, point)["vision_features"]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = gpu.forward_image(normal.cuda(), point.cuda())["vision_features"].float().cpu()
    rel = (got - want).norm() / want.norm()
    assert torch.isfinite(got).all() and rel < 0.05, rel


def test_geosam2_clicks_on_cuda_give_a_part_of_the_mesh():
    from segparts.engines.base import CancelToken, Click, PickRequest
    from segparts.engines.geosam2 import GeoSAM2Engine
    from test_geosam2_engine import _parts_mesh

    torch.manual_seed(0)
    mesh, _ = _parts_mesh()
    engine = GeoSAM2Engine("cuda", image_size=256, weights="random")
    s = engine.session(mesh)
    face = int(np.unique(s.views.face_id[s.views.face_id >= 0])[0])
    result = engine.pick(mesh, None, PickRequest([Click(face=face, positive=True)]), CancelToken())
    assert result.mask.shape == (mesh.n_faces,) and result.mask.dtype == bool
    assert next(engine.model().parameters()).is_cuda
