"""PTv3-object backbone: checkpoint compatibility with the release, serialization, forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segparts.engines.sampart3d.backbone import (
    N_STATE_ENTRIES,
    CheckpointMismatch,
    PointBatch,
    PTv3Object,
    Serialized,
    load_backbone,
    load_strict,
    parameter_count,
    read_state_dict,
)
from segparts.engines.sampart3d.serialization import encode

# Facts of the released checkpoint (shared/reference/sampart3d.md and the release's PTv3Object.py).
REFERENCE_SHAPES = {
    "embedding.stem.conv.weight": (32, 5, 5, 5, 9),  # spconv 2 layout (out, k, k, k, in)
    "embedding.stem.norm.running_var": (32,),
    "enc.enc1.0.weight": (64, 32),
    "enc.enc0.block0.cpe.0.weight": (32, 3, 3, 3, 32),
    "enc.enc0.block0.cpe.1.weight": (32, 32),
    "enc.enc0.block0.cpe.2.bias": (32,),
    "enc.enc0.block0.norm1.0.weight": (32,),
    "enc.enc2.block2.attn.qkv.weight": (384, 128),
    "enc.enc3.block5.attn.proj.bias": (256,),
    "enc.enc4.block15.norm2.0.weight": (384,),
    "enc.enc4.block15.mlp.0.fc1.weight": (1536, 384),
    "enc.enc4.block15.mlp.0.fc2.weight": (384, 1536),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PTv3Object().eval()


def write_released_checkpoint(model, folder):
    """A released-format file (state_dict, 'module.' prefix) with random values in `folder`."""
    path = folder / "ptv3-object.pth"
    # random values around a fresh initialisation (keeps BatchNorm variances positive, like a real file)
    state = {
        "module." + k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }
    torch.save({"state_dict": state, "epoch": 1}, path)
    return path


def ptv3_oracle_options(mesh, part, iterations: int) -> dict:
    """Engine options for a run with the PTv3 backbone and the parts' own masks (no SAM)."""
    from segparts.engines.sampart3d.masks import ProvidedMasks
    from test_sampart3d import ORACLE_OPTIONS, oracle_masks

    masks = ProvidedMasks(oracle_masks(mesh, [part], size=128))
    return dict(
        ORACLE_OPTIONS, backbone="ptv3", n_points=1500, iterations=iterations, render_size=128, mask_source=masks
    )


@pytest.fixture(scope="module")
def checkpoint_file(model, tmp_path_factory):
    """The released-format file, written once."""
    return write_released_checkpoint(model, tmp_path_factory.mktemp("ptv3"))


def test_architecture_matches_the_released_checkpoint(model):
    state = model.state_dict()
    assert len(state) == N_STATE_ENTRIES == 572
    for key, shape in REFERENCE_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert 112e6 < parameter_count(model) < 114e6  # the release: ~113M parameters
    assert not any(k.startswith("module.") for k in state)


def test_checkpoint_loads_strictly_and_gives_its_values(checkpoint_file):
    loaded = load_backbone(checkpoint_file)
    raw = torch.load(checkpoint_file, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(
        loaded.state_dict()["enc.enc4.block15.mlp.0.fc2.weight"], raw["module.enc.enc4.block15.mlp.0.fc2.weight"]
    )
    assert not loaded.training


def test_corrupted_checkpoint_is_rejected_with_the_differences(model, checkpoint_file):
    state = read_state_dict(checkpoint_file)
    missing = dict(state)
    del missing["enc.enc2.block1.attn.qkv.bias"]
    missing["enc.enc9.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatch) as err:
        load_strict(PTv3Object(), missing)
    assert "enc.enc2.block1.attn.qkv.bias" in str(err.value) and "enc.enc9.extra" in str(err.value)

    reshaped = dict(state)
    reshaped["embedding.stem.conv.weight"] = torch.zeros(32, 9, 5, 5, 5)  # spconv 1 layout
    with pytest.raises(CheckpointMismatch, match=r"embedding.stem.conv.weight: file \(32, 9, 5, 5, 5\)"):
        load_strict(PTv3Object(), reshaped)


def test_serialization_codes_equal_pointcepts():
    # Golden values computed with Pointcept/PointTransformerV3 serialization (commit 37a3ddc).
    grid = torch.tensor([[0, 0, 1], [1, 2, 3], [5, 0, 7], [200, 17, 3], [123, 45, 67]])
    depth = int(grid.max()).bit_length()
    expected = {
        "z": [1, 29, 333, 9447435, 1526959],
        "z-trans": [1, 43, 203, 4736013, 994591],
        "hilbert": [7, 22, 154, 16735754, 1193057],
        "hilbert-trans": [7, 50, 282, 7829420, 1660103],
    }
    for order, codes in expected.items():
        assert encode(grid, depth, order).tolist() == codes, order


def test_hilbert_codes_walk_a_continuous_curve():
    axis = torch.arange(8)
    grid = torch.cartesian_prod(axis, axis, axis)
    codes = encode(grid, 3, "hilbert")
    assert sorted(codes.tolist()) == list(range(512))
    walk = grid[torch.argsort(codes)]
    assert ((walk[1:] - walk[:-1]).abs().sum(dim=1) == 1).all()


def test_patches_pad_like_the_release():
    grid = torch.unique(torch.randint(0, 64, (2600, 3), generator=torch.Generator().manual_seed(1)), dim=0)
    s = Serialized(grid)
    order, k = s.patched_order(2, 1024)
    n = grid.shape[0]
    assert k == 1024 and order.shape[0] % 1024 == 0
    assert torch.equal(order[:n], s.order[2])
    # the last patch holds the last K points of the order (the tail is refilled one patch earlier)
    assert torch.equal(order[-1024:].sort().values, s.order[2][-1024:].sort().values)
    small = Serialized(grid[:500])
    order, k = small.patched_order(0, 1024)
    assert k == 500 and torch.equal(order, small.order[0])


def _object_points(n_target=1400, seed=0):
    """Grid-sampled surface points of a sphere-ish blob with 9 features (coord, normal, colour)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n_target * 2, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    grid, first = np.unique(np.floor((v + 1) / 0.02).astype(np.int64), axis=0, return_index=True)
    grid, v = grid[:n_target], v[first][:n_target]
    feat = np.concatenate([v, v, np.zeros_like(v)], axis=1).astype(np.float32)
    return torch.from_numpy(grid), torch.from_numpy(feat)


def test_forward_shape_dtype_and_point_order_invariance(model):
    grid, feat = _object_points()
    assert grid.shape[0] > 1024  # exercises the padded last patch
    with torch.no_grad():
        out = model(PointBatch(grid, feat))
        perm = torch.randperm(grid.shape[0], generator=torch.Generator().manual_seed(3))
        permuted = model(PointBatch(grid[perm], feat[perm]))
    assert out.shape == (grid.shape[0], 384) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(permuted, out[perm], atol=1e-4, rtol=1e-4)


def test_bad_input_is_refused(model):
    grid, feat = _object_points(50)
    with pytest.raises(ValueError, match="feat must be"):
        model(PointBatch(grid, feat[:, :6]))
    with pytest.raises(ValueError, match="non-negative"):
        model(PointBatch(grid - 5, feat))


def test_engine_runs_on_a_released_format_checkpoint(checkpoint_file, monkeypatch):
    """The whole engine with the backbone loaded from a file (random values) and oracle masks."""
    from segparts.engines.base import SegmentParams
    from segparts.engines.sampart3d import _FEATURE_CACHE, SAMPart3DEngine
    from test_sampart3d import four_blocks

    monkeypatch.setenv("SEGPARTS_MODELS", str(checkpoint_file.parent))
    mesh, part = four_blocks()
    options = ptv3_oracle_options(mesh, part, iterations=20)
    engine = SAMPart3DEngine()
    assert engine.availability({"mask_source": options["mask_source"]}).available
    seg = engine.segment(mesh, SegmentParams(scale=0.5, options=options))
    assert seg.labels.shape == (mesh.n_faces,) and seg.labels.min() >= 0
    feats = seg.state.backbone_feat
    assert feats.shape == (seg.state.points.n_grid, 384) and np.isfinite(feats).all() and feats.std() > 0
    assert any(v is feats for v in _FEATURE_CACHE.values())  # cached for the next run on this mesh


def test_sparse_convolution_package_is_the_one_asked_for_or_the_first_installed(monkeypatch):
    """spconv (CPU, CUDA) or spconv-triton (GPUs): SEGPARTS_SPCONV picks one, else the first found;
    a package asked for but absent is reported missing, not replaced silently."""
    import importlib.util

    from segparts.engines.sampart3d import SPCONV_ENV, SPCONV_PACKAGES, SAMPart3DEngine, spconv_package

    monkeypatch.delenv(SPCONV_ENV, raising=False)
    installed = [p for p in SPCONV_PACKAGES if importlib.util.find_spec(p) is not None]
    assert spconv_package() == (installed[0] if installed else None)
    absent = [p for p in SPCONV_PACKAGES if p not in installed]
    for package in absent:
        monkeypatch.setenv(SPCONV_ENV, package)
        assert spconv_package() is None
        missing = SAMPart3DEngine().availability({"mask_source": object()}).missing
        assert f"python package {package}" in missing
    monkeypatch.setenv(SPCONV_ENV, "spconv1")
    with pytest.raises(ValueError, match="SEGPARTS_SPCONV must be one of spconv, spconv_triton"):
        spconv_package()
