"""SAMPart3D against the release's own outputs (`../shared/reference/golden/`, Pointcept/SAMPart3D
@ 6a508d1, fp32 CPU, seeded release-layout weights): transform chain, PTv3-object, serialization,
scale transform, grouping field, loss and gradients, HDBSCAN. The tolerances are those of the
fixtures' `check_project.py`, which were shown to catch injected bugs (README, "What the
tolerances catch")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golden import golden, golden_weights  # noqa: F401  (session fixture)
from segparts.engines.sampart3d import backbone as B, cluster as C, grouping as G
from segparts.engines.sampart3d.serialization import encode

FEATURE_TOL = 1e-3  # backbone features reach |x| = 39; the project is at 3e-5
LOSS_TOL = 1e-5
FIELD_TOL = 1e-4


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.fixture(scope="module")
def backbone_fixture():
    return golden("sampart3d_backbone.npz")


@pytest.fixture(scope="module")
def fixture_points(backbone_fixture, monkeypatch_module):
    """The project's `prepare_points` on the release's 3200 samples: one tiny triangle per sample
    (its face normal = the sample's normal), Z-up as the project's render frame, and the samples
    themselves in place of the project's own surface sampling."""
    pts = golden("sampart3d_points.npz")
    n = len(pts["coord"])
    y_up = pts["coord"]
    z_up = np.stack([y_up[:, 0], -y_up[:, 2], y_up[:, 1]], 1)  # inverse of grouping.to_y_up
    normal = np.stack([pts["normal"][:, 0], -pts["normal"][:, 2], pts["normal"][:, 1]], 1)
    t1 = np.cross(normal, np.where(np.abs(normal[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(normal, t1)
    vertices = np.stack([z_up, z_up + 1e-3 * t1, z_up + 1e-3 * t2], 1).reshape(-1, 3)
    faces = np.arange(3 * n).reshape(n, 3)
    tri = vertices[faces]
    flip = (np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) * normal).sum(1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    monkeypatch_module.setattr(G, "sample_surface", lambda v, f, count, seed: (z_up.copy(), np.arange(n)))
    return G.prepare_points(vertices, faces, face_colors=pts["color"], n_points=n, seed=0)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_transform_chain_gives_the_release_voxels_and_sample_map(fixture_points, backbone_fixture):
    ref_grid, ref_inverse = backbone_fixture["input/grid_coord"], backbone_fixture["input/inverse"]
    assert len(fixture_points.grid_coord) == len(ref_grid) == 3079
    assert set(map(tuple, ref_grid.tolist())) == set(map(tuple, fixture_points.grid_coord.tolist()))
    assert np.array_equal(ref_grid[ref_inverse], fixture_points.grid_coord[fixture_points.inverse])


def test_transform_chain_normal_and_colour_channels_match_the_release(fixture_points, backbone_fixture):
    """Where a voxel holds one sample its representative is not random: its normal (Y up) and colour
    (c / 127.5 - 1) must be the release's input features."""
    ref_grid, ref_feat = backbone_fixture["input/grid_coord"], backbone_fixture["input/feat"]
    counts = np.bincount(fixture_points.inverse, minlength=fixture_points.n_grid)
    row_of = {tuple(c): i for i, c in enumerate(ref_grid.tolist())}
    single = np.flatnonzero(counts == 1)
    ref_rows = np.array([row_of[tuple(c)] for c in fixture_points.grid_coord[single].tolist()])
    assert len(single) > 2500
    assert max_diff(fixture_points.feat[single, 3:9], ref_feat[ref_rows, 3:9]) <= 1e-6


def test_backbone_matches_the_release(golden_weights, backbone_fixture):  # noqa: F811
    model = B.load_backbone(golden_weights / "ptv3-object.pth")
    out = B.backbone_features(model, backbone_fixture["input/grid_coord"], backbone_fixture["input/feat"])
    assert max_diff(out, backbone_fixture["feat"]) <= FEATURE_TOL
    cos = F.cosine_similarity(torch.from_numpy(out), torch.from_numpy(backbone_fixture["feat"]), dim=1)
    assert cos.min().item() > 0.99999


@pytest.mark.parametrize("key", ["grid", "random", "small"])
def test_serialization_codes_are_bit_identical(key, backbone_fixture):
    ser = golden("sampart3d_serialization.npz")
    coords = backbone_fixture["input/grid_coord"] if key == "grid" else ser[f"{key}_coords"]
    depth = int(ser[f"{key}_depth"])
    for i, order in enumerate(str(x) for x in ser["orders"]):
        assert np.array_equal(encode(torch.from_numpy(coords), depth, order).numpy(), ser[f"{key}_codes"][i]), order


def test_serialized_order_and_inverse_are_identical(backbone_fixture):
    ser = B.Serialized(torch.from_numpy(backbone_fixture["input/grid_coord"]))
    assert np.array_equal(ser.order.numpy(), backbone_fixture["serialized_order"])
    assert np.array_equal(ser.inverse.numpy(), backbone_fixture["serialized_inverse"])


@pytest.fixture(scope="module")
def loss_run(golden_weights, backbone_fixture):  # noqa: F811
    """The project's field, scale transform and loss on the release's loss batch and MLP weights."""
    ref = golden("sampart3d_loss.npz")
    weights = torch.load(golden_weights / "sampart3d_grouping_mlp.pt", weights_only=True)
    field = G.GroupingField()
    linears = [m for m in field.instance_net if isinstance(m, torch.nn.Linear)] + [
        m for m in field.pos_net if isinstance(m, torch.nn.Linear)
    ]
    with torch.no_grad():
        for layer, w in zip(linears, weights["instance_net"] + weights["pos_net"], strict=True):
            layer.weight.copy_(w)
    transform = G.ScaleTransform.fit(ref["fit_scales"].astype(np.float64))
    scale = torch.from_numpy(ref["scale"]).view(-1, 1)
    larger = scale + torch.clamp(G.MAX_SCALE - scale, min=0) * torch.from_numpy(ref["rand_u"]).view(1)
    mapping = torch.from_numpy(ref["mapping"])
    bfeat = torch.from_numpy(backbone_fixture["feat"])[mapping]
    rfeat = torch.from_numpy(backbone_fixture["input/feat"])[mapping]
    at_scale = field(bfeat, rfeat, transform(scale))
    at_larger = field(bfeat, rfeat, transform(larger))
    total, parts = G.contrastive_loss(
        at_scale, at_larger, torch.from_numpy(ref["mask_id"]).long(), int(ref["n_images"])
    )
    return dict(
        ref=ref,
        transform=transform,
        scale=scale,
        larger=larger,
        at_scale=at_scale,
        total=total,
        parts=parts,
        linears=linears,
    )


def test_quantile_scale_transform_matches_the_release(loss_run):
    ref, transform = loss_run["ref"], loss_run["transform"]
    assert max_diff(transform(loss_run["scale"]).numpy()[:, 0], ref["q_scale"]) <= FIELD_TOL
    assert max_diff(transform(loss_run["larger"]).numpy()[:, 0], ref["q_larger"]) <= FIELD_TOL


def test_grouping_field_output_matches_the_release(loss_run):
    assert max_diff(loss_run["at_scale"].detach().numpy(), loss_run["ref"]["field_at_scale"]) <= FIELD_TOL


def test_loss_matches_the_release(loss_run):
    ref = loss_run["ref"]
    mine = (
        loss_run["total"].item(),
        loss_run["parts"]["loss1"],
        loss_run["parts"]["loss2"],
        loss_run["parts"]["loss3"],
    )
    official = tuple(float(ref[k]) for k in ("instance_loss", "instance_loss_1", "instance_loss_2", "instance_loss_3"))
    assert max(abs(a - b) for a, b in zip(mine, official)) <= LOSS_TOL, (mine, official)


def test_gradients_match_the_release(loss_run):
    ref, linears = loss_run["ref"], loss_run["linears"]
    grads = torch.autograd.grad(loss_run["total"], [m.weight for m in linears])
    rel = max(abs(g.norm().item() - r) / r for g, r in zip(grads, ref["grad_norm"]))
    corners = max(max_diff(g[:8, :8].numpy(), c) for g, c in zip(grads, ref["grad_corner"]))
    full = max(
        max_diff(grads[7].numpy(), ref["grad/pos_net.0"]), max_diff(grads[6].numpy(), ref["grad/instance_net.6"])
    )
    assert rel <= 1e-4 and corners <= 1e-6 and full <= 1e-6, (rel, corners, full)


def test_hdbscan_and_noise_reassignment_match_the_release_exactly():
    ref = golden("sampart3d_hdbscan.npz")
    labels = C.cluster_points(ref["features"], ref["coord"])
    assert np.array_equal(labels, ref["labels_hdbscan_reassigned"])
    assert labels.max() + 1 == 6  # epsilon 0.1 merges blobs 3a and 3b (7 clusters without it)
