"""Assemblies in the geometric engine (pieces, materials, repetition) and `segparts eval
assemblies`, on real meshes built from trimesh primitives and on the development sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.cluster.hierarchy import linkage

from segparts.bench.geometric import triangle_soup
from segparts.cli import main
from segparts.engines.base import CancelToken, SegmentParams, no_progress
from segparts.engines.geometric import GeometricEngine
from segparts.engines.geometric.assembly import file_blocks, gather_copies, split_by_repeated_subassemblies
from segparts.engines.geometric.segmenter import auto_scale
from segparts.eval.assemblies import HEIGHTS, ModelResult, held_out
from segparts.hierarchy import Hierarchy, roots_and_depths
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


def two_cars() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two `car()`s side by side, 10 apart. Returns vertices, faces, the piece kind per face and
    the car (0, 1) per face."""
    vertices, faces, kind, _ = car()
    both = np.concatenate([vertices, vertices + [10.0, 0.0, 0.0]])
    return both, np.concatenate([faces, faces + len(vertices)]), np.r_[kind, kind], np.repeat([0, 1], len(faces))


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


def test_copies_in_repeated_subassemblies_are_gathered_inside_each():
    """Two identical cars side by side: each car's wheels (and bolts) are gathered under a node
    of their own car, so two parts are the two cars; the repeat group still lists all eight
    wheels (Select Similar takes every copy)."""
    vertices, faces, kind, which_car = two_cars()
    seg = segment(validate_mesh(vertices, faces))
    h = seg.hierarchy
    two = h.cut(parts=2)
    assert all(len(np.unique(two[which_car == c])) == 1 for c in (0, 1)) and len(np.unique(two)) == 2
    kinds = {int(kind[h.face_mask(group[0])][0]): group for group in seg.info["repeats"]}
    assert sorted(len(g) for g in kinds.values()) == [2, 8, 24]  # bodies, wheels, bolts
    for shape in (1, 2):  # wheels, bolts
        parents = {int(h.parent[node]) for node in kinds[shape]}
        assert len(parents) == 2  # one node per car
        for node in parents:
            assert len(np.unique(which_car[h.face_mask(node)])) == 1


def test_copies_split_only_over_subassemblies_that_repeat():
    """Four wheels that the tree joins in two pairs, one pair with the body: the pairs' nodes
    differ in area (one holds the body), so all four are gathered as one set; with a body of
    no area the two nodes are alike and each pair is a set of its own."""
    parent = [5, 5, 6, 7, 7, 6, 8, 8, -1]  # 5 = body + wheel 1, 6 = 5 + wheel 2, 7 = wheels 3-4
    leaf_area = {"body": [10.0, 1, 1, 1, 1], "no body": [0.0, 1, 1, 1, 1]}
    for body, expected in (("body", [[1, 2, 3, 4]]), ("no body", [[1, 2], [3, 4]])):
        h = Hierarchy(np.arange(5), np.asarray(parent), np.r_[np.zeros(5), 0.6, 0.7, 0.65, 1.0])
        node_area = h.subtree_sums(np.asarray(leaf_area[body]))
        assert split_by_repeated_subassemblies(parent, [1, 2, 3, 4], node_area) == expected


@pytest.mark.parametrize("bolt_material", ["the wheels'", "the body's"])
def test_bolts_of_a_shared_material_stay_parts(bolt_material):
    """Twelve copies of a bolt in the material of the pieces they sit on or near: the shared
    material doesn't join them to those pieces (a shape repeated by the dozen is hardware)."""
    vertices, faces, kind, piece = car()
    mesh = validate_mesh(vertices, faces)
    mesh.material = np.asarray([0, 1, 1 if bolt_material == "the wheels'" else 0], np.int32)[kind]
    labels = segment(mesh).labels
    assert all(len(np.unique(labels[piece == p])) == 1 for p in np.unique(piece))
    assert len(np.unique(labels)) == len(np.unique(piece))  # body, 4 wheels, 12 bolts


def test_material_ids_are_labels_not_numbers():
    """Renumbering the materials gives the same parts; materials split a piece at their border."""
    box = trimesh.creation.box([2.0, 1.0, 1.0])
    knob = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    knob.apply_translation([0.0, 0.0, 0.6])
    vertices = np.concatenate([box.vertices, knob.vertices])
    faces = np.concatenate([box.faces, knob.faces + len(box.vertices)])
    material = np.concatenate(
        [(box.triangles_center[:, 0] > 0).astype(np.int32), np.full(len(knob.faces), 2, np.int32)]
    )
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
    assert (
        main(
            [
                "eval",
                "assemblies",
                str(ASSEMBLIES),
                "--models",
                "GlassHurricaneCandleHolder",
                "Lantern",
                "--reference",
                "--quiet",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "track: geometry" in printed and "track: materials" in printed and "border length" in printed
    report = json.loads(out.read_text())
    assert len(report["models"]) == 4
    for m in report["models"]:
        assert 0 <= m["auto"] <= m["oracle"] <= 1
        ref = m["extra"]["reference"]
        assert ("materials" in ref) == (m["track"] == "materials")
        ratio = m["extra"]["borders"]["length_ratio"]
        assert 0 <= m["extra"]["borders"]["on_cue"] <= 1 and (np.isnan(ratio) or ratio >= 0)
    level = int(np.argmin(np.abs(HEIGHTS - auto_scale())))
    for m in report["models"]:
        # cut at the engine's own level, the tree gives the automatic result
        assert len(m["extra"]["heights"]) == len(HEIGHTS) and m["extra"]["heights"][level] == pytest.approx(m["auto"])
    for track in ("geometry", "materials"):
        summary = report["summary"][track]
        assert 0 <= summary["held_out"] <= 1 and 0 <= summary["best_fixed"] <= 1
    assert "leave one model out" in printed
    # the materials track carries the candle holder's two materials: one part each is exact
    candle = [m for m in report["models"] if m["name"] == "GlassHurricaneCandleHolder" and m["track"] == "materials"]
    assert candle[0]["extra"]["reference"]["materials"] == 1.0
    assert main(["eval", "assemblies", str(ASSEMBLIES), "--models", "NoSuchModel"]) == 2


def test_held_out_cuts_each_model_at_the_height_best_for_the_others():
    """Three models whose scores peak at different heights: each left-out model is scored at
    the others' best height, never at its own."""
    peaks = {"a": 10, "b": 10, "c": 200}

    def result(name, track):
        scores = np.full(len(HEIGHTS), 0.1)
        scores[peaks[name]] = 0.9 if track == "geometry" else 0.8
        scores[150] = 0.5  # second best for everyone
        return ModelResult(name, track, 10, 2, 0.0, 0.5, 2, 0.9, 2, {"heights": scores.tolist()})

    results = [result(n, t) for n in peaks for t in ("geometry", "materials")]
    figures = held_out(results)
    # without a, b and c disagree (10 vs 200) and 150 is best for both together: a scores 0.5 there
    # (b alike); without c, a and b agree on 10, where c scores 0.1
    assert figures["geometry"]["held_out"] == pytest.approx((0.5 + 0.5 + 0.1) / 3)
    assert figures["materials"]["held_out"] == pytest.approx((0.5 + 0.5 + 0.1) / 3)
    assert figures["geometry"]["best_fixed_height"] == HEIGHTS[10]
    assert figures["geometry"]["best_fixed"] == pytest.approx((0.9 + 0.9 + 0.1) / 3)
    assert held_out(results[:2]) == {}  # one model: nothing to leave out


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


def join(pieces: list[trimesh.Trimesh]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, faces and the piece index per face of pieces joined into one mesh."""
    offsets = np.cumsum([0] + [len(p.vertices) for p in pieces[:-1]])
    vertices = np.concatenate([p.vertices for p in pieces])
    faces = np.concatenate([p.faces + o for p, o in zip(pieces, offsets)])
    return vertices, faces, np.repeat(np.arange(len(pieces)), [len(p.faces) for p in pieces])


def test_pieces_of_one_material_find_each_other_past_a_crowd_between_them():
    """Two small halves of a leather cover (material 0) with a grid of tiny rivets of another
    material (1) packed into the slit between them, beside a large base (material 2): every
    nearest neighbour of a half is a rivet, yet the halves are one part (they share a material
    and nearly touch) and neither the rivets nor the base are in it."""
    base = trimesh.creation.box([10.0, 10.0, 1.0])
    base.apply_translation([0.0, 0.0, -4.0])
    left = trimesh.creation.box([1.0, 1.0, 1.0])
    right = trimesh.creation.box([1.0, 1.0, 1.0])
    right.apply_translation([1.15, 0.0, 0.0])  # a slit of 0.15
    rivets = []
    for y in np.linspace(-0.45, 0.45, 8):
        for z in np.linspace(-0.45, 0.45, 8):
            rivet = trimesh.creation.icosphere(subdivisions=1, radius=0.025)
            rivet.apply_translation([0.575, y, z])
            rivets.append(rivet)
    vertices, faces, piece = join([left, right, base] + rivets)
    mesh = validate_mesh(vertices, faces)
    mesh.material = np.select([piece < 2, piece == 2], [0, 2], 1).astype(np.int32)
    labels = segment(mesh).labels
    assert labels[piece == 0][0] == labels[piece == 1][0]
    assert not np.isin(labels[piece >= 2], labels[piece == 0][0]).any()


def test_copies_stay_parts_even_when_they_share_the_material_of_what_they_sit_on():
    """Eight identical bolts of the plate's own material, screwed into it, each about 5% of the
    area: each copy is a part (a shared material does not fold repeated pieces into their support,
    while a lone piece of that size would join it)."""
    plate = trimesh.creation.box([2.0, 1.0, 0.2])
    bolts = []
    for k in range(8):
        bolt = trimesh.creation.cylinder(radius=0.12, height=0.4, sections=12)
        bolt.apply_translation([-0.75 + 0.5 * (k % 4), -0.25 + 0.5 * (k // 4), 0.15])
        bolts.append(bolt)
    handle = trimesh.creation.box([0.3, 0.3, 0.3])  # another material, so the material says something
    handle.apply_translation([0.0, 3.0, 0.0])
    vertices, faces, piece = join([plate] + bolts + [handle])
    mesh = validate_mesh(vertices, faces)
    mesh.material = (piece == 9).astype(np.int32)
    seg = segment(mesh)
    assert len({int(seg.labels[piece == p][0]) for p in range(9)}) == 9
    assert [len(group) for group in seg.info["repeats"]] == [8]


def chain_and_balls() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A block with a chain of six interlocking rings hanging from it and four identical balls
    lying apart on it. Returns vertices, faces, the piece kind per face (0 block, 1 link, 2 ball)
    and the piece index per face."""
    block = trimesh.creation.box([4.0, 2.0, 1.0])
    pieces, kinds = [block], [0]
    for k in range(6):  # each link turned a quarter about the chain's axis and through the last
        link = trimesh.creation.torus(major_radius=0.3, minor_radius=0.06, major_sections=24, minor_sections=8)
        link.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
        if k % 2:
            link.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 0, 1]))
        link.apply_translation([0.0, 0.0, -0.3 - 0.5 * k])  # tubes of neighbours overlap a little
        pieces.append(link)
        kinds.append(1)
    for x in (-1.5, -0.8, 0.8, 1.5):
        ball = trimesh.creation.icosphere(subdivisions=2, radius=0.2)
        ball.apply_translation([x, 0.0, 0.7])
        pieces.append(ball)
        kinds.append(2)
    vertices, faces, piece = join(pieces)
    return vertices, faces, np.asarray(kinds)[piece], piece


def test_copies_touching_into_a_chain_are_one_part_and_copies_apart_stay_parts():
    """Links of a chain (copies that touch one another into one whole) are one part at the
    automatic level, each link a part just below it; balls lying apart on the block stay a part
    each. Both sets are repeat groups whose copies share a parent."""
    vertices, faces, kind, piece = chain_and_balls()
    seg = segment(validate_mesh(vertices, faces))
    chain = np.unique(seg.labels[kind == 1])
    assert len(chain) == 1 and not np.isin(seg.labels[kind != 1], chain).any()
    assert len({int(seg.labels[piece == p][0]) for p in np.unique(piece[kind == 2])}) == 4
    h = seg.hierarchy
    groups = {int(kind[h.face_mask(group[0])][0]): group for group in seg.info["repeats"]}
    assert sorted(len(g) for g in groups.values()) == [4, 6]
    links = groups[1]
    assert len({int(h.parent[node]) for node in links}) == 1
    below = h.cut(scale=float(h.height[links].max()))  # the finest cut that still holds whole links
    assert len(np.unique(below[kind == 1])) == 6


def test_copies_a_narrow_gap_apart_stay_parts():
    """A row of eight bars on a large base, half a bar's width apart (the bars of a commutator,
    keys): the gap is far below the sample spacing of the whole mesh, where the bars would count
    as touching, but clear against the bars themselves, so each bar stays a part."""
    base = trimesh.creation.box([20.0, 20.0, 1.0])
    bars = []
    for k in range(8):
        bar = trimesh.creation.box([0.2, 0.2, 1.0])
        bar.apply_translation([0.3 * k, 0.0, 1.0])
        bars.append(bar)
    vertices, faces, piece = join([base] + bars)
    seg = segment(validate_mesh(vertices, faces))
    assert len({int(seg.labels[piece == p][0]) for p in range(1, 9)}) == 8
    assert [len(group) for group in seg.info["repeats"]] == [8]


def test_one_material_everywhere_is_no_cue():
    """A mesh whose faces all share one material (or one group) segments exactly as the bare
    geometry: the add-on leaves such a cue out, and files that carry it must give the same parts."""
    vertices, faces, _, _ = car()
    bare = segment(validate_mesh(vertices, faces))
    for cue in ("material", "group"):
        mesh = validate_mesh(vertices, faces, **{cue: np.full(len(faces), 7, np.int32)})
        seg = segment(mesh)
        np.testing.assert_array_equal(seg.labels, bare.labels)
        np.testing.assert_array_equal(seg.hierarchy.parent, bare.hierarchy.parent)


def test_eval_assemblies_in_worker_processes_matches_sequential_and_writes_sheets(tmp_path):
    if not (ASSEMBLIES / "manifest.json").is_file():
        pytest.skip(f"assemblies development sample not found at {ASSEMBLIES}")
    from PIL import Image

    runs = {}
    for name, extra in (("sequential", []), ("workers", ["--workers", "2", "--out", str(tmp_path / "records")])):
        out = tmp_path / f"{name}.json"
        args = [
            "eval",
            "assemblies",
            str(ASSEMBLIES),
            "--models",
            "GlassHurricaneCandleHolder",
            "--quiet",
            "--json",
            str(out),
            "--sheets",
            str(tmp_path / name),
            *extra,
        ]
        assert main(args) == 0
        runs[name] = json.loads(out.read_text())
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in runs["sequential"]["models"]]
    assert strip == [{k: v for k, v in m.items() if k != "seconds"} for m in runs["workers"]["models"]]
    assert len(runs["workers"]["batch"]["workers"]) == 2 and runs["workers"]["batch"]["mode"] != "sequential"
    for track in ("geometry", "materials"):
        sheet = Image.open(tmp_path / "workers" / f"GlassHurricaneCandleHolder.{track}.png")
        pixels = np.asarray(sheet.convert("RGB"))
        top, bottom = pixels[: pixels.shape[0] // 2], pixels[pixels.shape[0] // 2 :]
        # two rows of views, each showing the object (not just background)
        assert sheet.height > 100 and not np.array_equal(top, bottom[: len(top)])
        assert (np.abs(top.astype(int) - 255).sum(axis=2) > 30).mean() > 0.01
    # a rerun with the records and the same options skips the scored models
    assert (
        main(
            [
                "eval",
                "assemblies",
                str(ASSEMBLIES),
                "--models",
                "GlassHurricaneCandleHolder",
                "--quiet",
                "--out",
                str(tmp_path / "records"),
                "--sheets",
                str(tmp_path / "workers"),
                "--json",
                str(tmp_path / "again.json"),
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["batch"]["counts"].get("skipped") == 2


def boxes_in_a_row() -> list[trimesh.Trimesh]:
    """Four boxes of different sizes in a row, half a unit apart: separate pieces that stay
    separate parts when nothing else joins them."""
    out = []
    for k, extents in enumerate([(1.0, 1.0, 1.0), (1.0, 1.0, 0.5), (1.0, 0.8, 1.0), (0.6, 1.0, 1.0)]):
        box = trimesh.creation.box(extents)
        box.apply_translation([1.5 * k, 0.0, 0.0])
        out.append(box)
    return out


def interleave(faces_a: np.ndarray, faces_b: np.ndarray) -> np.ndarray:
    out = np.empty((len(faces_a) + len(faces_b), 3), dtype=faces_a.dtype)
    out[0::2], out[1::2] = faces_a, faces_b
    return out


def test_pieces_whose_faces_interleave_in_the_file_are_one_part():
    """A joined object keeps each original object's faces in one run: boxes 0 and 1 written into
    each other's run are one object, so are boxes 2 and 3; written one after another (or with
    every face shuffled, where the order says nothing) each box stays a part."""
    vertices, faces, piece = join(boxes_in_a_row())
    by_piece = [faces[piece == p] for p in range(4)]
    woven = np.concatenate([interleave(by_piece[0], by_piece[1]), interleave(by_piece[2], by_piece[3])])
    woven_piece = np.concatenate([np.tile([0, 1], 12), np.tile([2, 3], 12)])
    blocks = file_blocks(woven)
    assert blocks is not None and len(np.unique(blocks)) == 2
    labels = segment(validate_mesh(vertices, woven)).labels
    assert len(np.unique(labels)) == 2
    assert all(len(np.unique(labels[np.isin(woven_piece, pair)])) == 1 for pair in ([0, 1], [2, 3]))
    assert file_blocks(faces) is not None and len(np.unique(file_blocks(faces))) == 4
    assert len(np.unique(segment(validate_mesh(vertices, faces)).labels)) == 4
    shuffled = np.random.default_rng(1).permutation(len(faces))
    assert file_blocks(faces[shuffled]) is None
    labels = segment(validate_mesh(vertices, faces[shuffled])).labels
    assert len(np.unique(labels)) == 4 and all(len(np.unique(labels[piece[shuffled] == p])) == 1 for p in range(4))


def test_a_piece_of_two_materials_written_in_two_runs_makes_no_block_welded_or_not():
    """Files keep one run of faces per material (glTF primitives), so a piece of two materials
    appears twice, with other objects between. Split at the material border (glTF) it is two loose
    parts, each in one run; welded (Blender after Merge by Distance) it is one loose part whose
    faces span the file. Loose parts are taken per material, so both give the same blocks and
    parts, and the boxes between stay parts of their own."""
    vertices, faces, piece = join(boxes_in_a_row())
    top = (piece == 0) & (trimesh.triangles.normals(vertices[faces])[0][:, 2] > 0.5)
    material = np.where(top, 0, piece + 1)  # the top 0, the rest of box 0 1, boxes 1-3 2-4
    runs = [(piece == 0) & ~top, piece == 1, piece == 2, top, piece == 3]
    order = np.concatenate([np.flatnonzero(run) for run in runs])
    welded_faces, material, piece = faces[order], material[order], piece[order]
    # the glTF form: the top's corners get vertices of their own
    top_corners = np.unique(welded_faces[material == 0])
    split_vertices = np.concatenate([vertices, vertices[top_corners]])
    renumber = np.arange(len(vertices))
    renumber[top_corners] = len(vertices) + np.arange(len(top_corners))
    split_faces = np.where((material == 0)[:, None], renumber[welded_faces], welded_faces)

    blocks = [file_blocks(f, [material]) for f in (welded_faces, split_faces)]
    assert blocks[0] is not None and np.array_equal(blocks[0], blocks[1])
    spanning = file_blocks(welded_faces)  # without the materials: box 0 takes in boxes 1 and 2
    assert spanning is not None and len(np.unique(spanning[piece < 3])) == 1
    welded = segment(validate_mesh(vertices, welded_faces, material=material)).labels
    split = segment(validate_mesh(split_vertices, split_faces, material=material)).labels
    assert np.array_equal(welded, split)
    for box in (1, 2, 3):
        assert len(np.unique(welded[piece == box])) == 1
        assert not set(welded[piece == box].tolist()) & set(welded[piece != box].tolist())


def test_gathering_copies_keeps_a_tree_whose_groups_are_siblings_just_above_or_under_the_level():
    rng = np.random.default_rng(0)
    for seed in range(40):
        n_leaves = 30
        z = linkage(np.random.default_rng(seed).normal(size=(n_leaves, 3)), "single")
        parent = np.full(2 * n_leaves - 1, -1)
        parent[z[:, :2].astype(int)] = n_leaves + np.arange(n_leaves - 1)[:, None]
        height = np.r_[np.zeros(n_leaves), z[:, 2]]
        # two groups of leaves (copies): taking them out leaves chains of one-child nodes behind
        picked = rng.permutation(n_leaves)[:7]
        groups = [picked[:3], picked[3:]]
        level = float(np.median(z[:, 2]))
        as_one = [True, False] if seed % 2 else None  # the first group one part at the level
        new_parent, new_height, renamed = gather_copies(parent, height, n_leaves, groups, level, as_one=as_one)
        kids = np.bincount(new_parent[new_parent >= 0], minlength=len(new_parent))
        assert (new_parent < 0).sum() == 1
        assert (kids[n_leaves:] >= 2).all()  # no node is left with fewer than two children
        internal = np.arange(n_leaves, len(new_parent))
        assert (new_parent[internal[new_parent[internal] >= 0]] > internal[new_parent[internal] >= 0]).all()
        for group, nodes in zip(groups, renamed):
            assert nodes == group.tolist()  # leaves keep their ids
            top = new_parent[nodes]
            assert len(set(top.tolist())) == 1 and kids[top[0]] == len(group)  # siblings, alone
            above = new_parent[top[0]]
            if as_one and nodes == renamed[0]:  # one part at the level: its node is under it
                assert new_height[top[0]] < level
            elif above >= 0 and new_height[above] > level:  # else it sits just under its ancestor
                assert new_height[top[0]] >= level
        has_parent = new_parent >= 0
        assert (new_height[has_parent] <= new_height[new_parent[has_parent]]).all()
        assert roots_and_depths(new_parent)[1].max() < len(new_parent)
