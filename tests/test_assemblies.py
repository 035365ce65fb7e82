"""Assemblies in the geometric engine (pieces, materials, repetition) and `segparts eval
assemblies`, on real meshes built from trimesh primitives and on the development sample."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from segparts.bench.geometric import triangle_soup
from segparts.cli import main
from segparts.engines.base import CancelToken, SegmentParams, no_progress
from segparts.engines.geometric import GeometricEngine
from segparts.mesh import validate_mesh

ASSEMBLIES = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "assemblies"


def rotation(seed: int) -> np.ndarray:
    return trimesh.transformations.random_rotation_matrix(np.random.default_rng(seed).random(3))


def car() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A body with four identical wheels (cylinders pushed into its sides) and twelve identical
    bolts (three per wheel, each in a random rigid pose). Returns vertices, faces, the piece
    kind per face (0 body, 1 wheel, 2 bolt) and the piece index per face."""
    body = trimesh.creation.box([4.0, 2.0, 1.0])
    pieces, kinds = [body], [0]
    for k, (x, y) in enumerate([(-1.3, -1.05), (1.3, -1.05), (-1.3, 1.05), (1.3, 1.05)]):
        wheel = trimesh.creation.cylinder(radius=0.5, height=0.3, sections=24)
        wheel.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
        wheel.apply_translation([x, y + 0.1 * np.sign(y), -0.3])  # intersects the body
        pieces.append(wheel)
        kinds.append(1)
        for b in range(3):
            bolt = trimesh.creation.cylinder(radius=0.05, height=0.12, sections=8)
            bolt.apply_transform(rotation(10 * k + b))  # any pose: congruent all the same
            angle = 2 * np.pi * b / 3
            bolt.apply_translation([x + 0.3 * np.cos(angle), y + 0.4 * np.sign(y), -0.3 + 0.3 * np.sin(angle)])
            pieces.append(bolt)
            kinds.append(2)
    offsets = np.cumsum([0] + [len(p.vertices) for p in pieces[:-1]])
    vertices = np.concatenate([p.vertices for p in pieces])
    faces = np.concatenate([p.faces + o for p, o in zip(pieces, offsets)])
    kind = np.repeat(kinds, [len(p.faces) for p in pieces])
    piece = np.repeat(np.arange(len(pieces)), [len(p.faces) for p in pieces])
    return vertices, faces, kind, piece


def segment(mesh):
    return GeometricEngine().segment(mesh, SegmentParams(), no_progress, CancelToken())


def test_built_assembly_gives_its_parts_and_one_repeat_group_per_set_of_copies():
    vertices, faces, kind, piece = car()
    seg = segment(validate_mesh(vertices, faces))
    labels = seg.labels
    # every piece is one part and no two pieces share one (body, 4 wheels, 12 bolts)
    for p in np.unique(piece):
        assert len(np.unique(labels[piece == p])) == 1
    assert len(np.unique(labels)) == len(np.unique(piece))
    h = seg.hierarchy
    groups = seg.info["repeats"]
    faces_of = [[np.flatnonzero(h.face_mask(node)) for node in group] for group in groups]
    kinds = sorted((len(g), int(kind[f[0][0]])) for g, f in zip(groups, faces_of))
    assert kinds == [(4, 1), (12, 2)]
    for group, members in zip(groups, faces_of):
        assert len({int(h.parent[node]) for node in group}) == 1  # the copies share a parent
        for _node, f in zip(group, members):
            assert len(np.unique(piece[f])) == 1  # each copy is one whole piece
    # cutting just above the automatic level takes all copies of a set together
    above = h.cut(scale=float(h.height[h.parent[groups[0][0]]]))
    for _group, members in zip(groups, faces_of):
        assert len({int(above[f[0]]) for f in members}) == 1


def test_material_ids_are_labels_not_numbers():
    """Renumbering the materials gives the same parts; materials split a piece at their border."""
    box = trimesh.creation.box([2.0, 1.0, 1.0])
    knob = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    knob.apply_translation([0.0, 0.0, 0.6])
    vertices = np.concatenate([box.vertices, knob.vertices])
    faces = np.concatenate([box.faces, knob.faces + len(box.vertices)])
    material = np.concatenate([(box.triangles_center[:, 0] > 0).astype(np.int32),
                               np.full(len(knob.faces), 2, np.int32)])
    labels = []
    for perm in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        mesh = validate_mesh(vertices, faces)
        mesh.material = np.asarray(perm, np.int32)[material]
        labels.append(segment(mesh).labels)
    assert all(np.array_equal(labels[0], other) for other in labels[1:])
    # the box's two materials are two parts; the knob is a third
    assert len(np.unique(labels[0])) == 3
    assert all(len(np.unique(labels[0][material == m])) == 1 for m in range(3))


def test_triangle_soup_finishes_with_few_parts():
    vertices, faces = triangle_soup(1000)
    seg = segment(validate_mesh(vertices, faces))
    assert seg.labels.shape == (1000,)
    assert seg.info["n_pieces"] == 1000
    assert int(seg.labels.max()) + 1 < 250  # a thousand bits don't stay a thousand parts


def test_eval_assemblies_command_on_two_sample_models(tmp_path, capsys):
    if not (ASSEMBLIES / "manifest.json").is_file():
        pytest.skip(f"assemblies development sample not found at {ASSEMBLIES}")
    out = tmp_path / "eval.json"
    assert main(["eval", "assemblies", str(ASSEMBLIES), "--models", "GlassHurricaneCandleHolder", "Lantern",
                 "--reference", "--quiet", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "track: geometry" in printed and "track: materials" in printed and "border length" in printed
    report = json.loads(out.read_text())
    assert len(report["models"]) == 4
    for m in report["models"]:
        assert 0 <= m["auto"] <= m["oracle"] <= 1
        ref = m["extra"]["reference"]
        assert ("materials" in ref) == (m["track"] == "materials")
        assert 0 <= m["extra"]["borders"]["on_cue"] <= 1 and m["extra"]["borders"]["length_ratio"] >= 0
    # the materials track carries the candle holder's two materials: one part each is exact
    candle = [m for m in report["models"] if m["name"] == "GlassHurricaneCandleHolder" and m["track"] == "materials"]
    assert candle[0]["extra"]["reference"]["materials"] == 1.0
    assert main(["eval", "assemblies", str(ASSEMBLIES), "--models", "NoSuchModel"]) == 2


def test_two_copies_alone_split_into_both_at_two_parts():
    """Two identical boxes: they are one repeat group whose node is the root, so asking for two
    parts gives the two boxes."""
    a = trimesh.creation.box([1.0, 1.0, 1.0])
    b = trimesh.creation.box([1.0, 1.0, 1.0])
    b.apply_translation([3.0, 0.0, 0.0])
    mesh = validate_mesh(np.concatenate([a.vertices, b.vertices]), np.concatenate([a.faces, b.faces + 8]))
    seg = segment(mesh)
    assert len(seg.info["repeats"]) == 1 and len(seg.info["repeats"][0]) == 2
    two = seg.hierarchy.cut(parts=2)
    assert len(np.unique(two[:12])) == 1 and len(np.unique(two[12:])) == 1 and two[0] != two[12]
