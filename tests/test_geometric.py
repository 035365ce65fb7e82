"""The geometric engine on real and constructed meshes: the merge tree and its cuts, pick,
invariance to pose/scale/triangulation, and meshes with defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from segparts.engines.base import Cancelled, CancelToken, Click, PickRequest, SegmentParams, no_progress
from segparts.engines.geometric import GeometricEngine
from segparts.mesh import validate_mesh
from segparts.metrics import rand_index_error

PRINCETON = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "princeton"
TETRA_DIRECTIONS = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)


def lobed_blob(subdivisions: int = 4):
    """One watertight piece: a ball with four limbs (tetrahedral directions) joined by smooth
    concave necks. Returns the mesh and, per face, the cosine to each limb direction."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    u = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    length = np.array([2.0, 1.6, 1.3, 1.0])  # unequal limbs: no ties between their merge costs
    radius = 1.0 + ((np.maximum(0.0, u @ TETRA_DIRECTIONS.T) ** 12) * length).sum(axis=1)
    mesh = validate_mesh(u * radius[:, None], sphere.faces)
    face_dirs = u[sphere.faces].mean(axis=1)
    return mesh, face_dirs @ TETRA_DIRECTIONS.T


def segment(mesh, **params):
    return GeometricEngine().segment(mesh, SegmentParams(**params), no_progress, CancelToken())


@pytest.fixture(scope="module")
def blob():
    mesh, cosines = lobed_blob()
    return mesh, cosines, segment(mesh)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """1 - Rand index error: 1.0 when the two labellings are the same partition."""
    return 1.0 - rand_index_error(a, b)


def test_tree_cuts_and_auto_granularity(blob):
    mesh, cosines, seg = blob
    h = seg.hierarchy
    assert seg.labels.shape == (mesh.n_faces,) and seg.labels.dtype == np.int32
    assert h.leaf_labels.shape == (mesh.n_faces,) and h.n_leaves > 50
    assert 0.0 < seg.info["auto_scale"] < 1.0
    assert np.array_equal(seg.labels, h.cut(scale=seg.info["auto_scale"]))
    for n in (1, 2, 5, 9):  # re-cutting the returned tree, no recomputation
        assert h.cut(parts=n).max() + 1 == n
    # the finest cut has at least as many parts as any coarser one
    counts = [h.cut(scale=s).max() + 1 for s in (0.0, 0.2, 0.5, 0.9, 1.0)]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 1


def test_limbs_are_parts(blob):
    mesh, cosines, seg = blob
    labels = seg.hierarchy.cut(parts=5)
    tips = [int(np.argmax(cosines[:, k])) for k in range(4)]
    body = int(np.argmin(cosines.max(axis=1)))  # the face farthest from every limb
    assert len({labels[t] for t in tips} | {labels[body]}) == 5
    # each limb part is the limb: faces well inside limb k (cos > 0.9) share its tip's label
    for k, tip in enumerate(tips):
        inside = cosines[:, k] > 0.9
        assert np.mean(labels[inside] == labels[tip]) > 0.95


def test_parts_and_scale_params():
    mesh, _ = lobed_blob(3)
    assert segment(mesh, parts=3).labels.max() + 1 == 3
    assert segment(mesh, scale=1.0).labels.max() == 0
    fine = segment(mesh, scale=0.0)
    assert fine.labels.max() + 1 == fine.hierarchy.n_leaves


def test_pick_face_and_point(blob):
    mesh, cosines, seg = blob
    engine = GeometricEngine()
    tip = int(np.argmax(cosines[:, 0]))
    res = engine.pick(mesh, seg, PickRequest([Click(face=tip)]), CancelToken())
    assert res.mask[tip]
    assert np.array_equal(res.mask, seg.labels == seg.labels[tip])  # the part at auto granularity
    parent_mask = seg.hierarchy.face_mask(res.parent)
    assert parent_mask[res.mask].all() and parent_mask.sum() > res.mask.sum()  # grow selection
    point = mesh.vertices[mesh.faces[tip]].mean(axis=0)
    by_point = engine.pick(mesh, seg, PickRequest([Click(point=tuple(point))]), CancelToken())
    assert np.array_equal(by_point.mask, res.mask)
    coarse = engine.pick(mesh, seg, PickRequest([Click(face=tip)], parts=1), CancelToken())
    assert coarse.mask.all()


def test_cancel():
    mesh, _ = lobed_blob(2)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        GeometricEngine().segment(mesh, SegmentParams(), no_progress, token)


# ---- invariances ------------------------------------------------------------------------------


def test_rigid_motion_and_uniform_scale(blob):
    mesh, _, seg = blob
    rotation = trimesh.transformations.random_rotation_matrix(np.random.default_rng(3).random(3))[:3, :3]
    for vertices in (
        mesh.vertices + [10.0, -4.0, 7.5],
        mesh.vertices @ rotation.T,
        mesh.vertices * 37.0,
        mesh.vertices * 1e-3,
    ):
        moved = segment(validate_mesh(vertices, mesh.faces))
        assert agreement(moved.labels, seg.labels) > 0.98
        assert agreement(moved.hierarchy.cut(parts=5), seg.hierarchy.cut(parts=5)) > 0.95


def retriangulations(mesh):
    """(name, mesh, group): the same surface triangulated differently; triangle i of the original
    becomes triangles group*i .. group*i+group-1 of the new one."""
    v, f = trimesh.remesh.subdivide(mesh.vertices, mesh.faces)  # every triangle into 4
    yield "subdivided", validate_mesh(v, f), 4
    centre = np.arange(mesh.n_vertices, mesh.n_vertices + mesh.n_faces)  # every triangle into 3 at its centroid
    a, b, c = mesh.faces.T
    split = np.stack([np.stack([a, b, centre], 1), np.stack([b, c, centre], 1), np.stack([c, a, centre], 1)], 1)
    vertices = np.concatenate([mesh.vertices, mesh.vertices[mesh.faces].mean(axis=1)])
    yield "centroid split", validate_mesh(vertices, split.reshape(-1, 3)), 3


def test_retriangulation_keeps_the_parts(blob):
    """On smooth necks the border may move by about one patch, but the parts stay the same."""
    mesh, cosines, seg = blob
    reference = seg.hierarchy.cut(parts=5)
    tips = [int(np.argmax(cosines[:, k])) for k in range(4)]
    for name, other, group in retriangulations(mesh):
        labels = _majority(segment(other).hierarchy.cut(parts=5), group)
        assert len({labels[t] for t in tips}) == 4, name
        assert agreement(labels, reference) > 0.85, name


def test_retriangulation_and_face_order_on_a_benchmark_mesh():
    if not PRINCETON.is_dir():
        pytest.skip(f"Princeton development sample not found at {PRINCETON}")
    from segparts.meshio import load_mesh

    mesh = load_mesh(PRINCETON / "off" / "81.off")  # an ant: creases at every joint
    reference = segment(mesh).labels
    for name, other, group in retriangulations(mesh):
        assert agreement(_majority(segment(other).labels, group), reference) > 0.95, name
    order = np.random.default_rng(0).permutation(mesh.n_faces)  # same triangles, shuffled
    shuffled = np.empty(mesh.n_faces, dtype=np.int64)
    shuffled[order] = segment(validate_mesh(mesh.vertices, mesh.faces[order])).labels
    assert agreement(shuffled, reference) > 0.95


def _majority(labels: np.ndarray, group: int) -> np.ndarray:
    """Label of each original face: the most common label among its `group` children."""
    rows = labels.reshape(-1, group)
    counts = np.stack([(rows == rows[:, [k]]).sum(axis=1) for k in range(group)], axis=1)
    return rows[np.arange(len(rows)), counts.argmax(axis=1)]


# ---- separate pieces ---------------------------------------------------------------------------


def test_pieces_merge_by_contact_and_size():
    """A big box with a small box resting on it (a knob), and a similar (not congruent) big box
    far away: the knob joins its box before the two big boxes join; coincident duplicate
    vertices are welded."""
    big = trimesh.creation.box([2.0, 2.0, 1.0])
    knob = trimesh.creation.box([0.3, 0.3, 0.3])
    knob.apply_translation([0.0, 0.0, 0.65])
    far = trimesh.creation.box([2.0, 1.6, 1.0])
    far.apply_translation([6.0, 0.0, 0.0])
    parts = [big, knob, far]
    vertices = np.concatenate([p.vertices for p in parts])
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    # duplicate every vertex of the first box's faces (as UV seams do): welding must undo it
    n_big = len(big.faces)
    faces[:n_big] += 0  # keep indices, then add unwelded copies for half of the faces
    copies = vertices[faces[: n_big // 2]].reshape(-1, 3)
    faces[: n_big // 2] = len(vertices) + np.arange(len(copies)).reshape(-1, 3)
    vertices = np.concatenate([vertices, copies])
    mesh = validate_mesh(vertices, faces)
    seg = segment(mesh)
    labels = seg.hierarchy.cut(parts=2)
    piece = np.repeat([0, 1, 2], [len(p.faces) for p in parts])
    assert len(np.unique(labels[piece == 0])) == 1  # welded: one piece, not split at seams
    assert labels[piece == 1][0] == labels[piece == 0][0] != labels[piece == 2][0]
    assert seg.info["n_pieces"] == 3
    # at the automatic level, pieces that don't touch stay apart: the far box is its own part
    auto = seg.labels
    assert not np.isin(auto[piece == 2], auto[piece != 2]).any()


def test_separate_pieces_stay_apart_at_the_automatic_level():
    """Boxes that don't touch (a roof floating above a box, two others aside) are never fused by
    the default cut, however few of them there are."""
    boxes = [
        trimesh.creation.box([2, 2, 2]),
        trimesh.creation.box([1.2] * 3),
        trimesh.creation.box([1.6] * 3),
        trimesh.creation.box([2, 2, 0.4]),
    ]
    for b, t in zip(boxes, ([0, 0, 0], [4, 0, 0], [0, 5, 0], [0, 0, 1.8])):
        b.apply_translation(t)
    mesh = validate_mesh(
        np.concatenate([b.vertices for b in boxes]), np.concatenate([b.faces + 8 * i for i, b in enumerate(boxes)])
    )
    labels = segment(mesh).labels
    assert len(np.unique(labels)) == 4
    assert all(len(np.unique(labels[12 * i : 12 * (i + 1)])) == 1 for i in range(4))


def test_intersecting_pieces_stay_whole():
    """An arm (ellipsoid) pushed into a hand (sphere), as in the demo robot: the cap of each
    piece that lies inside the other must not become a part of its own (rays for thickness and
    convexity see only their own piece), so at the automatic granularity each piece is one part."""
    arm = trimesh.creation.uv_sphere(radius=1.0, count=[16, 24])
    arm.vertices *= [0.13, 0.13, 0.52]
    arm.apply_translation([0.0, 0.0, 1.62])
    hand = trimesh.creation.uv_sphere(radius=0.17, count=[12, 24])
    hand.apply_translation([0.0, 0.0, 1.0])
    body = trimesh.creation.box([0.9, 0.55, 1.0]).subdivide().subdivide().subdivide()
    body.apply_translation([0.85, 0.0, 1.6])
    parts = [arm, hand, body]
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    mesh = validate_mesh(
        np.concatenate([p.vertices for p in parts]), np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    )
    seg = segment(mesh)
    piece = np.repeat([0, 1, 2], [len(p.faces) for p in parts])
    for k in range(3):
        assert len(np.unique(seg.labels[piece == k])) == 1, f"piece {k} split at the automatic level"


# ---- defective meshes ----------------------------------------------------------------------------


def _check_valid(mesh, seg):
    assert seg.labels.shape == (mesh.n_faces,)
    assert seg.labels.min() >= 0
    h = seg.hierarchy
    assert h.cut(parts=1).max() == 0
    assert np.array_equal(seg.labels, h.cut(scale=seg.info["auto_scale"]))


def test_degenerate_duplicate_and_non_manifold_faces():
    mesh, _ = lobed_blob(3)
    v, f = mesh.vertices, mesh.faces
    n_v = len(v)
    extra_vertices = np.array([[5.0, 5.0, 5.0], [9.0, 9.0, 9.0], [0.0, 0.0, 5.0]])
    bad_faces = np.array(
        [
            [0, 0, 1],  # repeated index
            [f[0, 0], f[0, 1], f[0, 1]],  # collapsed edge
            [n_v, n_v, n_v],  # a point
            f[10],
            f[10],
            f[11][::-1],  # duplicate faces, and a flipped duplicate
            [f[20, 0], f[20, 1], n_v + 2],  # a third face on an existing edge (non-manifold)
            [n_v, n_v + 1, n_v + 2],  # a lone far triangle, its own piece
        ]
    )
    colinear = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]) + 7.0
    vertices = np.concatenate([v, extra_vertices, colinear, np.full((5, 3), 3.0)])  # + isolated vertices
    faces = np.concatenate([f, bad_faces, [[n_v + 3, n_v + 4, n_v + 5]]])  # zero-area sliver
    bad = validate_mesh(vertices, faces)
    seg = segment(bad)
    _check_valid(bad, seg)
    # the defects don't change how the sound part of the mesh is cut
    clean = segment(mesh).hierarchy.cut(parts=4)
    sound = next(
        cut[: mesh.n_faces]
        for n in range(4, 20)
        if len(np.unique((cut := seg.hierarchy.cut(parts=n))[: mesh.n_faces])) == 4
    )
    assert agreement(sound, clean) > 0.9


def test_huge_triangle_size_variation():
    """A coarse box whose top is split into many tiny triangles: areas span ~10 orders."""
    box = trimesh.creation.box([1.0, 1.0, 1.0])
    top = np.flatnonzero(box.triangles_center[:, 2] > 0.49)
    v, f = box.vertices, box.faces
    for _ in range(6):
        v, f, idx = trimesh.remesh.subdivide(v, f, face_index=top, return_index=True)
        top = np.concatenate([idx[t] for t in top])[:16]  # keep refining a small corner
    areas = trimesh.triangles.area(v[f])
    assert areas.max() / areas.min() > 1e3
    mesh = validate_mesh(v, f)
    _check_valid(mesh, segment(mesh))


def test_tiny_and_flat_meshes():
    for vertices, faces in [
        (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float), np.array([[0, 1, 2]])),  # one triangle
        (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float), np.array([[0, 1, 2], [1, 3, 2]])),
        # nothing but degenerate faces: colinear, and a point
        (np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], float), np.array([[0, 1, 2], [1, 2, 3], [0, 0, 0]])),
    ]:
        mesh = validate_mesh(vertices, faces)
        _check_valid(mesh, segment(mesh))
    plane = trimesh.creation.box([1.0, 1.0, 1e-9])  # nearly flat, open-ish
    mesh = validate_mesh(plane.vertices, plane.faces)
    _check_valid(mesh, segment(mesh))


# ---- a benchmark mesh ----------------------------------------------------------------------------


def test_benchmark_mesh_matches_people():
    """On one real mesh the automatic cut agrees with the human segmentations about as well as
    people agree with each other (the full figure comes from `segparts eval princeton`)."""
    if not PRINCETON.is_dir():
        pytest.skip(f"Princeton development sample not found at {PRINCETON}")
    from segparts.meshio import load_mesh

    mesh = load_mesh(PRINCETON / "off" / "81.off")  # an ant: body segments and six legs
    humans = [np.loadtxt(p, dtype=np.int64) for p in sorted((PRINCETON / "seg" / "81").glob("*.seg"))]
    seg = segment(mesh)
    errors = [rand_index_error(seg.labels, g) for g in humans]
    assert np.mean(errors) < 0.1
