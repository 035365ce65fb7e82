"""`segparts eval partobjaverse DIR` on a small folder in PartObjaverse-Tiny's published layout,
built from ../shared/benchmarks/assemblies: its .glb files as meshes, its per-face node labels as
instance ground truth, made-up semantic labels and categories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from segparts.cli import main

ASSEMBLIES = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "assemblies"
SHAPES = {  # uid -> (asset, category)
    "0c3ca2b32545416f8f1e6f8e6d4a7c01": ("IridescenceSuzanne", "Human-Shape"),
    "1d4f0e9b8a7c4b2e9f3a6c5d8e7f6a02": ("Lantern", "Daily-Used"),
    "2e5a1f0c9b8d4c3f8a4b7d6e9f8a7b03": ("GlassHurricaneCandleHolder", "Daily-Used"),
}
MISSING = "3f6b2a1d0c9e4d4a9b5c8e7f0a9b8c04"  # listed in the JSON, no files: reported, not fatal
WRONG = "4a7c3b2e1d0f4e5b8c6d9f8a1b0c9d05"  # a mesh whose labels have the wrong length

pytestmark = pytest.mark.skipif(not ASSEMBLIES.is_dir(), reason="needs ../shared/benchmarks/assemblies")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("PartObjaverse-Tiny")
    for sub in ("PartObjaverse-Tiny_mesh", "PartObjaverse-Tiny_instance_gt", "PartObjaverse-Tiny_semantic_gt"):
        (root / sub).mkdir()
    meta: dict[str, dict] = {}
    for uid, (asset, category) in SHAPES.items():
        os.symlink(ASSEMBLIES / f"{asset}.glb", root / "PartObjaverse-Tiny_mesh" / f"{uid}.glb")
        instance = np.load(ASSEMBLIES / f"{asset}.labels.npy").astype(np.int32)
        instance[:5] = -1  # a few unlabelled faces, as in the dataset
        np.save(root / "PartObjaverse-Tiny_instance_gt" / f"{uid}.npy", instance)
        np.save(root / "PartObjaverse-Tiny_semantic_gt" / f"{uid}.npy", np.where(instance >= 0, instance // 2, -1))
        meta.setdefault(category, {})[uid] = [f"part {k}" for k in np.unique(instance[instance >= 0])]
    box = trimesh.creation.box()
    box.export(root / "PartObjaverse-Tiny_mesh" / f"{WRONG}.glb")
    np.save(root / "PartObjaverse-Tiny_instance_gt" / f"{WRONG}.npy", np.zeros(len(box.faces) + 1, np.int32))
    meta.setdefault("Electronics", {})[MISSING] = ["screen"]
    meta["Electronics"][WRONG] = ["case"]
    (root / "PartObjaverse-Tiny_semantic.json").write_text(json.dumps(meta))
    return root


def iou_per_part(pred: np.ndarray, gt: np.ndarray) -> float:
    """PartField's released per-shape score, written out plainly: each GT part (not -1), the
    best IoU of any predicted part's face mask, in percent, averaged."""
    scores = []
    for g in np.unique(gt):
        if g == -1:
            continue
        target = gt == g
        scores.append(
            max(
                (np.logical_and(pred == p, target).sum() / np.logical_or(pred == p, target).sum())
                for p in np.unique(pred)
            )
            * 100
        )
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    code = main(
        [
            "eval",
            "partobjaverse",
            str(dataset),
            "--json",
            str(work / "scores.json"),
            "--out",
            str(work / "records"),
            "--quiet",
        ]
    )
    return code, json.loads((work / "scores.json").read_text()), work


@pytest.fixture(scope="module")
def expected(dataset):
    """Scores from the engine called directly and the plain per-part IoU above."""
    from segparts.engines import create_engine
    from segparts.engines.base import CancelToken, SegmentParams, no_progress
    from segparts.meshio import load_mesh

    engine = create_engine("geometric")
    out = {}
    for uid in SHAPES:
        mesh = load_mesh(dataset / "PartObjaverse-Tiny_mesh" / f"{uid}.glb")
        gt = np.load(dataset / "PartObjaverse-Tiny_instance_gt" / f"{uid}.npy")
        seg = engine.segment(mesh, SegmentParams(), no_progress, CancelToken())
        oracle = max(iou_per_part(seg.hierarchy.cut(parts=k), gt) for k in range(2, 20))
        out[uid] = {"auto": iou_per_part(seg.labels, gt), "oracle": oracle}
    return out


def test_scores_per_shape_match_the_published_metric(run, expected):
    code, scores, _ = run
    by_uid = {s["uid"]: s for s in scores["shapes"]}
    assert set(by_uid) == set(SHAPES)
    for uid, want in expected.items():
        assert by_uid[uid]["auto"]["miou"] == pytest.approx(want["auto"]), uid
        assert by_uid[uid]["oracle"]["miou"] == pytest.approx(want["oracle"]), uid


def test_categories_and_overall_figures(run):
    _, scores, _ = run
    shapes, summary = scores["shapes"], scores["summary"]
    assert list(summary["categories"]) == ["Human-Shape", "Daily-Used"]  # the papers' order
    daily = [s["auto"]["miou"] for s in shapes if s["category"] == "Daily-Used"]
    assert summary["categories"]["Daily-Used"]["auto"]["miou"] == pytest.approx(np.mean(daily))
    assert summary["overall"]["auto"]["miou"] == pytest.approx(np.mean([s["auto"]["miou"] for s in shapes]))
    cat_means = [c["oracle"]["miou"] for c in summary["categories"].values()]
    assert summary["overall_category_mean"]["oracle"]["miou"] == pytest.approx(np.mean(cat_means))
    assert "semantic_auto_miou" in summary["overall"]


def test_bad_shapes_are_reported_and_the_rest_scored(run):
    code, scores, _ = run
    assert code == 1  # something failed
    failed = {f["key"]: f for f in scores["batch"]["failed"]}
    assert set(failed) == {MISSING, WRONG}
    assert "no such file" in failed[MISSING]["message"]
    assert "labels for a mesh of 12 faces" in failed[WRONG]["message"]


def test_a_rerun_resumes_from_the_records(run, dataset, capsys):
    _, scores, work = run
    code = main(
        [
            "eval",
            "partobjaverse",
            str(dataset),
            "--json",
            str(work / "again.json"),
            "--out",
            str(work / "records"),
            "--quiet",
            "--workers",
            "2",
        ]
    )
    again = json.loads((work / "again.json").read_text())
    assert code == 1 and again["batch"]["counts"] == {"ok": 0, "error": 2, "skipped": 3}
    assert again["summary"] == scores["summary"]


def test_not_the_layout_is_a_usage_error(tmp_path, capsys):
    assert main(["eval", "partobjaverse", str(tmp_path)]) == 2
    assert "not a PartObjaverse-Tiny folder" in capsys.readouterr().err
