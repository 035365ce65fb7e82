"""The benchmark harness: `segparts eval princeton` and `segparts bench geometric` as a user runs
them, and the reference yardsticks (people vs people, best person, best leaf grouping)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from segparts.cli import main
from segparts.eval.princeton import reference_scores, score_against_humans
from segparts.meshgraph import face_adjacency

PRINCETON = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "princeton"


def needs_sample():
    if not PRINCETON.is_dir():
        pytest.skip(f"Princeton development sample not found at {PRINCETON}")


def strip(n_faces: int) -> np.ndarray:
    """Faces of a triangle strip 0-1-2-3-... (face i shares an edge with face i + 1)."""
    return np.array([[i, i + 1, i + 2] for i in range(n_faces)])


def test_reference_scores_by_hand():
    pairs, _ = face_adjacency(strip(8))
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    ref = reference_scores([a, a], pairs, leaf_labels=np.arange(8))
    assert ref["humans"]["miou"] == 1.0 and ref["best_human"]["miou"] == 1.0
    assert ref["best_leaf_grouping"]["miou"] == 1.0  # one face per leaf can copy anyone
    ref = reference_scores([a, b], pairs, leaf_labels=np.zeros(8, int))
    # a vs b: a's parts {0..3} and {4..7}; b's best matches give IoU 2/4 and 4/6 (and symmetric)
    assert ref["humans"]["miou"] == pytest.approx((0.5 + 4 / 6) / 2)
    # a as a prediction: 1.0 against itself and (2/4 + 4/6) / 2 against b -- so does b
    assert ref["best_human"]["miou"] == pytest.approx((1.0 + (0.5 + 4 / 6) / 2) / 2)
    # one leaf: every grouping is the one-part answer (IoU 4/8 with a's parts, 2/8 and 6/8 with b's)
    one_part = score_against_humans(np.zeros(8, int), [a, b], pairs)
    assert ref["best_leaf_grouping"] == one_part and one_part["miou"] == pytest.approx(0.5)
    # leaves of two faces follow both people exactly, so the ceiling is the best person
    ref = reference_scores([a, b], pairs, leaf_labels=np.repeat(np.arange(4), 2))
    assert ref["best_leaf_grouping"]["miou"] == pytest.approx(ref["best_human"]["miou"])


def folded_sheet() -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 2 grid of unit squares folded 90 degrees (a valley) along x = 2."""
    xs, ys = np.meshgrid(np.arange(5.0), np.arange(3.0), indexing="ij")
    z = np.where(xs > 2, xs - 2, 0.0)
    vertices = np.stack([np.minimum(xs, 2.0).ravel(), ys.ravel(), z.ravel()], axis=1)
    idx = np.arange(15).reshape(5, 3)
    quads = [(idx[i, j], idx[i + 1, j], idx[i + 1, j + 1], idx[i, j + 1]) for i in range(4) for j in range(2)]
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    return vertices, faces


def test_border_figures_by_hand():
    from segparts.eval.borders import border_figures, human_border_figures
    from segparts.mesh import validate_mesh

    vertices, faces = folded_sheet()
    mesh = validate_mesh(vertices, faces)
    x, _, z = mesh.vertices[mesh.faces].mean(axis=1).T
    on_fold = (z > 0).astype(int)  # the border runs along the fold: length 2
    off_fold = (x > 1).astype(int)  # a border across the flat half: length 2, on no cue
    assert border_figures(mesh, on_fold, off_fold) == {"on_cue": 1.0, "length_ratio": pytest.approx(1.0)}
    assert border_figures(mesh, off_fold, on_fold)["on_cue"] == 0.0
    both = np.where(z > 0, 2, (x > 1).astype(int))  # both borders: twice the length
    figures = human_border_figures(mesh, both, [on_fold, off_fold])
    assert figures == {"on_cue": 0.5, "people_on_cue": 0.5, "length_ratio": pytest.approx(2.0)}
    # a reference with no border inside the piece gives no ratio
    assert np.isnan(border_figures(mesh, both, np.zeros(len(faces), int))["length_ratio"])


def test_eval_princeton_command_on_two_models(tmp_path, capsys):
    needs_sample()
    out = tmp_path / "eval.json"
    assert (
        main(
            ["eval", "princeton", str(PRINCETON), "--models", "81", "224", "--reference", "--quiet", "--json", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "ALL models" in printed and "best grouping of leaves" in printed
    report = json.loads(out.read_text())
    models = report["models"]
    assert [m["model_id"] for m in models] == ["81", "224"]
    for m in models:
        for which in ("auto", "oracle"):
            assert 0.0 <= m[which]["rand_index_error"] <= 1.0 and 0.0 < m[which]["miou"] <= 1.0
        assert m["oracle"]["miou"] >= m["auto"]["miou"]  # the automatic cut is one of the levels
        ref = m["extra"]["reference"]
        assert ref["best_human"]["miou"] >= ref["humans"]["miou"]
    overall = report["summary"]["overall"]
    assert overall["oracle"]["miou"] == pytest.approx(np.mean([m["oracle"]["miou"] for m in models]))
    assert report["summary"]["reference"]["best_leaf_grouping"]["n_models"] == 2
    assert "borders at the automatic level" in printed
    for m in models:
        b = m["extra"]["borders"]
        assert 0.0 <= b["on_cue"] <= 1.0 and 0.0 <= b["people_on_cue"] <= 1.0 and b["length_ratio"] > 0
    ratios = sorted(m["extra"]["borders"]["length_ratio"] for m in models)
    assert report["summary"]["borders"]["length_ratio_median"] == pytest.approx(np.mean(ratios))


def test_eval_rejects_a_folder_that_is_not_the_benchmark(tmp_path, capsys):
    assert main(["eval", "princeton", str(tmp_path)]) != 0
    assert "not a Princeton benchmark folder" in capsys.readouterr().err


def test_bench_geometric_command_writes_table_json_and_plot(tmp_path, capsys):
    needs_sample()
    sample = tmp_path / "sample"
    (sample / "off").mkdir(parents=True)
    shutil.copy(PRINCETON / "off" / "81.off", sample / "off" / "81.off")
    (sample / "manifest.csv").write_text("model_id,category,n_faces\n81,Ant,12736\n")
    plot, rows = tmp_path / "time.png", tmp_path / "rows.json"
    assert (
        main(
            [
                "bench",
                "geometric",
                "--dir",
                str(sample),
                "--targets",
                "12000",
                "50000",
                "--repeats",
                "1",
                "--soups",
                "200",
                "--plot",
                str(plot),
                "--json",
                str(rows),
            ]
        )
        == 0
    )
    assert "peak MB" in capsys.readouterr().out
    report = json.loads(rows.read_text())
    soup = report["soups"]
    assert len(soup) == 1 and soup[0]["triangles"] == 200 and soup[0]["seconds"] > 0
    assert 0 < soup[0]["max_cancel_gap_s"] <= soup[0]["seconds"] + 1
    data = report["meshes"]
    assert len(data) == 2 and data[1]["faces"] > 3 * data[0]["faces"]  # the second is subdivided
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 0 and r["pick_ms"] >= 0 for r in data)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
