"""2D <-> 3D lifting: masks drawn from the face-id buffer of meshes with known parts must lift
back to those parts; votes, clicks and post-processing on small meshes with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from segparts import lifting
from segparts.mesh import validate_mesh
from segparts.render import (
    geosam2_rig,
    look_at,
    normalize_for_rendering,
    perspective,
    render_views,
    rig_from_matrices,
    sampart3d_rig,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PRINCETON = SHARED / "benchmarks" / "princeton"


def parts_mesh():
    """A table-like object: top slab, four legs, a ball on top; returns (Mesh, face -> part)."""
    pieces = [trimesh.creation.box(extents=(1.0, 0.6, 0.08)).apply_translation((0, 0, 0.3))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = trimesh.creation.cylinder(radius=0.05, height=0.6, sections=12)
            pieces.append(leg.apply_translation((0.4 * sx, 0.22 * sy, 0.0)))
    pieces.append(trimesh.creation.icosphere(subdivisions=2, radius=0.15).apply_translation((0.1, 0, 0.49)))
    part = np.concatenate([np.full(len(p.faces), i) for i, p in enumerate(pieces)])
    tm = trimesh.util.concatenate(pieces)
    v, _ = normalize_for_rendering(tm.vertices)
    return validate_mesh(v, tm.faces), part


def masks_from_parts(views, part):
    return np.where(views.face_id >= 0, part[np.maximum(views.face_id, 0)], -1).astype(np.int32)


def miou(pred, gt):
    ious = []
    for p in np.unique(gt):
        g = gt == p
        q = pred == p
        ious.append((g & q).sum() / (g | q).sum())
    return float(np.mean(ious))


def test_masks_from_known_parts_lift_back_exactly():
    mesh, part = parts_mesh()
    rig = geosam2_rig(size=256)
    views = render_views(mesh, rig, outputs=("face_id", "depth", "alpha"))
    labels = lifting.lift_masks(mesh, rig, views, masks_from_parts(views, part))
    seen = labels >= 0
    assert seen.mean() > 0.8
    assert (labels[seen] == part[seen]).mean() > 0.995
    filled = lifting.postprocess_labels(mesh, labels, min_fraction=0.0)
    assert (filled >= 0).all()
    assert miou(filled, part) >= 0.99


def test_masks_from_known_parts_lift_back_on_a_benchmark_mesh():
    if not PRINCETON.is_dir():
        pytest.skip(f"Princeton benchmark sample not found at {PRINCETON}")
    tm = trimesh.load(PRINCETON / "off" / "110.off", process=False)  # a chair: thin legs, flat parts
    gt = np.loadtxt(PRINCETON / "seg" / "110" / "110_0.seg", dtype=np.int64)
    v, _ = normalize_for_rendering(tm.vertices)
    mesh = validate_mesh(v, tm.faces)
    rig = geosam2_rig(size=512)
    views = render_views(mesh, rig, outputs=("face_id", "depth", "alpha"))
    labels = lifting.lift_masks(mesh, rig, views, masks_from_parts(views, gt))
    seen = labels >= 0
    assert (labels[seen] == gt[seen]).mean() > 0.99
    filled = lifting.postprocess_labels(mesh, labels, min_fraction=0.0, split_disconnected=False)
    assert miou(filled, gt) >= 0.99


def test_visibility_uses_depth_so_hidden_samples_do_not_vote():
    # two parallel squares, the far one hidden behind the near one from a camera on +Z
    near = trimesh.creation.box(extents=(1.0, 1.0, 0.02)).apply_translation((0, 0, 0.5))
    far = trimesh.creation.box(extents=(0.5, 0.5, 0.02)).apply_translation((0, 0, -0.5))
    tm = trimesh.util.concatenate([near, far])
    mesh = validate_mesh(tm.vertices, tm.faces)
    rig = rig_from_matrices(look_at((0, 0, 3.0), up=(0, 1, 0)), perspective(np.radians(40)), 64, 64)
    views = render_views(mesh, rig, outputs=("face_id", "depth", "alpha"))
    samples = lifting.face_visible_samples(mesh, rig, views)
    vis = samples.face_visible()[0]
    assert not vis[12:].any()  # the far box is completely hidden
    top = np.flatnonzero(tm.face_normals[:12, 2] > 0.9)
    assert vis[top].all()
    # a mask everywhere labels only what the camera sees
    labels = lifting.lift_masks(mesh, rig, views, np.zeros((1, 64, 64), np.int32), samples=samples)
    assert (labels[top] == 0).all() and (labels[12:] == -1).all()
    px = samples.pixel
    assert px.shape == (1, len(samples.points), 2) and px.min() >= 0 and px.max() < 64


def test_mode_by_group_matches_brute_force_and_prefers_smaller_label_on_ties():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 50, 2000)
    values = rng.integers(-1, 6, 2000)
    got = lifting.mode_by_group(groups, values, 60)
    for g in range(60):
        vals = values[(groups == g) & (values >= 0)]
        if len(vals) == 0:
            assert got[g] == -1
        else:
            counts = np.bincount(vals)
            assert got[g] == np.flatnonzero(counts == counts.max())[0]
    # the sort-based path for large label ids gives the same answer
    big = np.where(values >= 0, values * 10_000_000, -1)
    np.testing.assert_array_equal(lifting.mode_by_group(groups, big, 60), np.where(got >= 0, got * 10_000_000, -1))
    assert lifting.mode_by_group(np.array([0, 0, 1]), np.array([2, 1, -1]), 2).tolist() == [1, -1]


def test_paint_masks_puts_smaller_objects_on_top_and_prompted_last():
    big = np.zeros((2, 8, 8), bool)
    big[:, :6, :6] = True
    small = np.zeros((2, 8, 8), bool)
    small[:, 2:4, 2:4] = True
    out = lifting.paint_masks({7: small, 3: big})
    assert out[0, 2, 2] == 7 and out[0, 0, 0] == 3 and out[0, 7, 7] == -1
    out = lifting.paint_masks({7: small, 3: big}, first=[3])
    assert out[0, 2, 2] == 3
    assert (lifting.paint_masks({}, shape=(1, 2, 2)) == -1).all()


def test_views_for_click_ranks_the_facing_view_first_and_maps_back(monkeypatch):
    cross = np.cross

    def cross_of_3d_vectors_only(a, b, *args, **kwargs):  # as numpy >= 2.x: 2-D vectors are an error
        if np.shape(a)[-1] != 3 or np.shape(b)[-1] != 3:
            raise ValueError("Both input arrays must be (arrays of) 3-dimensional vectors")
        return cross(a, b, *args, **kwargs)

    monkeypatch.setattr(np, "cross", cross_of_3d_vectors_only)
    tm = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    mesh = validate_mesh(tm.vertices, tm.faces)
    rig = sampart3d_rig(size=96)
    views = render_views(mesh, rig, outputs=("face_id", "depth", "alpha"))
    top = int(np.flatnonzero(tm.face_normals[:, 2] > 0.9)[0])
    ranked = lifting.views_for_click(mesh, rig, views, face=top)
    assert ranked, "the top face is seen by the upper ring"
    seen_by = {k for k, _ in ranked}
    assert seen_by == set(range(8))  # elevations +25/+40 see it, the lower ring does not
    assert ranked[0][0] % 2 == 1  # a +40 degree view sees the top face largest
    for k, (x, y) in ranked:
        assert lifting.pixel_to_face(views, k, x, y) == top
    point = tm.triangles_center[top]
    by_point = lifting.views_for_click(mesh, rig, views, point=point)
    assert {k for k, _ in by_point} == seen_by and by_point[0][0] % 2 == 1
    with pytest.raises(ValueError):
        lifting.views_for_click(mesh, rig, views)


def test_face_adjacency_of_a_cube_and_across_split_vertices():
    tm = trimesh.creation.box()
    mesh = validate_mesh(tm.vertices, tm.faces)
    adj = lifting.face_adjacency(mesh)
    assert len(adj) == 18  # 12 triangles x 3 edges / 2
    # the same cube with every triangle's vertices duplicated stays connected when welding
    split = validate_mesh(tm.vertices[tm.faces].reshape(-1, 3), np.arange(36).reshape(12, 3))
    assert len(lifting.face_adjacency(split)) == 18
    assert len(lifting.face_adjacency(split, weld=False)) == 0


def grid_mesh(n=10):
    """n x n grid of quads (2 triangles each) in the plane z = 0; face i's cell is i // 2."""
    ys, xs = np.mgrid[0 : n + 1, 0 : n + 1]
    v = np.c_[xs.ravel(), ys.ravel(), np.zeros(xs.size)].astype(float)
    cells = np.array([(y * (n + 1) + x) for y in range(n) for x in range(n)])
    a, b, c, d = cells, cells + 1, cells + n + 2, cells + n + 1
    faces = np.stack([np.stack([a, b, c], 1), np.stack([a, c, d], 1)], 1).reshape(-1, 3)
    return validate_mesh(v, faces)


def test_postprocess_removes_specks_fills_and_splits():
    n = 10
    mesh = grid_mesh(n)
    cell_x = (np.arange(2 * n * n) // 2) % n
    labels = np.where(cell_x < 5, 0, 1)
    truth = labels.copy()
    labels[[40, 41]] = 1  # a 2-face speck of label 1 inside label 0
    labels[[120, 121, 122]] = -1  # a hole
    out = lifting.postprocess_labels(mesh, labels, min_fraction=0.05, split_disconnected=False)
    np.testing.assert_array_equal(out, truth)
    # without speck removal the speck survives; splitting gives it a label of its own
    out = lifting.postprocess_labels(mesh, labels, min_fraction=0.0, split_disconnected=True)
    assert out[40] == out[41] and out[40] not in (0, 1)
    assert (out[cell_x >= 5] == 1).all()
    # nearest-centroid fill reaches faces the majority fill cannot (no labelled neighbours, 0 rounds)
    sparse = np.full(2 * n * n, -1)
    sparse[0], sparse[-1] = 4, 9
    out = lifting.postprocess_labels(
        mesh, sparse, min_fraction=0.0, fill_iterations=0, k_nearest=1, split_disconnected=False
    )
    centre = mesh.vertices[mesh.faces].mean(axis=1)
    nearer_first = np.linalg.norm(centre - centre[0], axis=1) < np.linalg.norm(centre - centre[-1], axis=1)
    np.testing.assert_array_equal(out, np.where(nearer_first, 4, 9))
    assert (lifting.postprocess_labels(mesh, np.full(2 * n * n, -1)) == -1).all()
    with pytest.raises(ValueError):
        lifting.postprocess_labels(mesh, np.zeros(3))
    # three nearest labels all different: the nearest wins, or the smallest (the release's torch.mode)
    three = np.full(2 * n * n, -1)
    three[[0, 100, 199]] = [7, 3, 5]
    kw = dict(min_fraction=0.0, fill_iterations=0, k_nearest=3, split_disconnected=False)
    near = lifting.postprocess_labels(mesh, three, **kw)
    smallest = lifting.postprocess_labels(mesh, three, nearest_ties="smallest", **kw)
    assert near[1] == 7 and (smallest[three < 0] == 3).all()
    with pytest.raises(ValueError, match="nearest_ties"):
        lifting.postprocess_labels(mesh, three, nearest_ties="random")


def test_lift_masks_rejects_bad_masks():
    mesh, _ = parts_mesh()
    rig = geosam2_rig(size=32)
    views = render_views(mesh, rig, outputs=("face_id", "depth", "alpha"))
    with pytest.raises(ValueError, match="shape"):
        lifting.lift_masks(mesh, rig, views, np.zeros((12, 16, 16), np.int32))
    with pytest.raises(ValueError, match="integer"):
        lifting.lift_masks(mesh, rig, views, np.zeros((12, 32, 32), np.float32))


def test_visible_pixel_counts_and_face_pixels_agree_with_the_buffer():
    mesh, part = parts_mesh()
    rig = sampart3d_rig(size=64)
    views = render_views(mesh, rig, outputs=("face_id",))
    counts = lifting.visible_pixel_counts(views, mesh.n_faces)
    assert counts.shape == (16, mesh.n_faces) and counts.sum() == (views.face_id >= 0).sum()
    f = int(np.argmax(counts.sum(axis=0)))
    pixels = lifting.face_pixels(views, f)
    assert [len(p) for p in pixels] == counts[:, f].tolist()
    k = int(np.argmax(counts[:, f]))
    assert all(lifting.pixel_to_face(views, k, x, y) == f for x, y in pixels[k])


def test_unlabelled_pixels_abstain_or_vote_for_nothing():
    mesh, part = parts_mesh()
    rig = geosam2_rig(size=128)
    views = render_views(mesh, rig, outputs=("face_id", "depth", "alpha"))
    masks = masks_from_parts(views, part)
    masks[:8][masks[:8] == 0] = -1  # the top slab is unlabelled in 8 of the 12 views
    samples = lifting.face_visible_samples(mesh, rig, views)
    abstain = lifting.lift_masks(mesh, rig, views, masks, samples=samples)
    vote = lifting.lift_masks(mesh, rig, views, masks, samples=samples, unlabelled_votes=True)
    top = part == 0
    seen_late = samples.face_visible()[8:].any(axis=0)  # seen labelled by the last 4 views
    assert (abstain[top & seen_late] == 0).mean() > 0.99
    assert (vote[top] == -1).mean() > 0.5 > (abstain[top] == -1).mean()  # outvoted by "no label"
    others = ~top & (abstain >= 0)
    np.testing.assert_array_equal(vote[others & (vote >= 0)], abstain[others & (vote >= 0)])


def test_vote_table_and_sort_paths_agree():
    mesh, part = parts_mesh()
    rig = geosam2_rig(size=96)
    views = render_views(mesh, rig, outputs=("face_id", "depth", "alpha"))
    rng = np.random.default_rng(2)
    noisy = np.where(rng.random(part.shape) < 0.3, rng.integers(0, 6, part.shape), part)  # disagreeing views
    masks = masks_from_parts(views, noisy)
    masks[rng.random(masks.shape) < 0.2] = -1
    samples = lifting.face_visible_samples(mesh, rig, views)
    for unlabelled_votes in (False, True):
        small = lifting.lift_masks(mesh, rig, views, masks, samples=samples, unlabelled_votes=unlabelled_votes)
        huge = np.where(masks >= 0, masks * 40_000_000, -1)  # label ids too large for the count table
        big = lifting.lift_masks(mesh, rig, views, huge, samples=samples, unlabelled_votes=unlabelled_votes)
        np.testing.assert_array_equal(np.where(small >= 0, small * 40_000_000, -1), big)
