"""GeoSAM2 engine end to end on CPU with random weights (no released checkpoint here).

Test-only settings: image_size 128 (the release renders and encodes at 1024) and
weights="random"; everything else (rendering, ring propagation, lifting) is the real path.
"""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from segparts.engines.base import CancelToken, Click, EngineUnavailable, PickRequest, SegmentParams
from segparts.engines.geosam2 import GeoSAM2Engine
from segparts.mesh import Mesh


def _parts_mesh() -> tuple[Mesh, np.ndarray]:
    """A body, a head on top and an arm on the side: three known parts."""
    body = trimesh.creation.box((1.0, 0.6, 0.8))
    head = trimesh.creation.icosphere(subdivisions=2, radius=0.25)
    head.apply_translation((0, 0, 0.65))
    arm = trimesh.creation.cylinder(radius=0.12, height=0.7, sections=16)
    arm.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (0, 1, 0)))
    arm.apply_translation((0.85, 0, 0.1))
    parts = [body, head, arm]
    tm = trimesh.util.concatenate(parts)
    truth = np.concatenate([np.full(len(p.faces), i) for i, p in enumerate(parts)])
    return Mesh(np.asarray(tm.vertices, float), np.asarray(tm.faces, np.int64)), truth


def _miou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over true parts of the best IoU with a predicted part."""
    ious = []
    for t in np.unique(truth):
        gt = truth == t
        ious.append(
            max(np.count_nonzero(gt & (pred == p)) / np.count_nonzero(gt | (pred == p)) for p in np.unique(pred))
        )
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def engine() -> GeoSAM2Engine:
    import torch

    torch.manual_seed(0)
    return GeoSAM2Engine("cpu", image_size=128, weights="random")


def test_missing_checkpoint_says_what_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path))
    engine = GeoSAM2Engine("cpu")
    avail = engine.availability()
    assert not avail.available
    assert any("geosam2.pt" in m and str(tmp_path) in m for m in avail.missing)
    assert "segparts models fetch geosam2" in avail.fix
    mesh, _ = _parts_mesh()
    with pytest.raises(EngineUnavailable, match="segparts models fetch geosam2"):
        engine.segment(mesh, SegmentParams(), lambda f, s: None, CancelToken())


def test_lifting_view_masks_of_known_parts_gives_the_parts_back():
    """Per-view masks cut from the renders' face ids, lifted by the engine's own lifting path."""
    mesh, truth = _parts_mesh()
    engine = GeoSAM2Engine("cpu", image_size=256, weights="random")
    s = engine.render_session(mesh)  # renders only; the lifting needs no model
    fid = s.views.face_id
    part_pixels = np.where(fid >= 0, truth[np.maximum(fid, 0)], -1)
    objects = [part_pixels == k for k in range(3)]
    labels = engine.labels_from_view_masks(s, objects)
    assert labels.shape == (mesh.n_faces,) and (labels >= 0).all()
    assert _miou(labels, truth) >= 0.95
    # a wrong per-view input must show up: swap head and arm in half the views
    swapped = [o.copy() for o in objects]
    swapped[1][::2], swapped[2][::2] = objects[2][::2], objects[1][::2]
    assert _miou(engine.labels_from_view_masks(s, swapped), truth) < 0.95


def test_object_pixels_no_mask_covers_become_a_part_of_their_own():
    """The release paints 999 ("no object") under the masks and lifts it like a label: the lower half
    of the head, which no mask covers, is its own part instead of being absorbed by the upper half."""
    mesh, truth = _parts_mesh()
    engine = GeoSAM2Engine("cpu", image_size=256, weights="random")
    s = engine.render_session(mesh)
    centre_z = mesh.vertices[mesh.faces].mean(axis=1)[:, 2]
    upper_head = (truth == 1) & (centre_z > 0.65)
    lower_head = (truth == 1) & (centre_z < 0.6)
    part = np.where(upper_head, 3, truth)  # body 0, lower head 1, arm 2, upper head 3
    fid = s.views.face_id
    pixels = np.where(fid >= 0, part[np.maximum(fid, 0)], -1)
    labels = engine.labels_from_view_masks(s, [pixels == 0, pixels == 2, pixels == 3])  # lower head: no mask
    lower = np.bincount(labels[lower_head]).argmax()
    assert np.mean(labels[lower_head] == lower) > 0.9
    assert lower not in set(labels[truth == 0]) | set(labels[truth == 2]) | set(labels[upper_head])


def test_disconnected_pieces_of_one_object_stay_one_part():
    """The release's split step never fires (its labels are tensors, see docs/geosam2.md): head and
    arm masked as one object stay one part."""
    mesh, truth = _parts_mesh()
    engine = GeoSAM2Engine("cpu", image_size=256, weights="random")
    s = engine.render_session(mesh)
    fid = s.views.face_id
    pixels = np.where(fid >= 0, truth[np.maximum(fid, 0)], -1)
    labels = engine.labels_from_view_masks(s, [pixels == 0, (pixels == 1) | (pixels == 2)])
    assert len(set(labels[truth == 1]) | set(labels[truth == 2])) == 1
    assert labels[truth == 0][0] != labels[truth == 1][0]


def test_a_click_answer_loses_its_specks_as_in_the_release():
    """Click mode runs the release's small-component removal too: one stray head face masked with
    the arm is not part of the answer."""
    mesh, truth = _parts_mesh()
    engine = GeoSAM2Engine("cpu", image_size=256, weights="random")
    s = engine.render_session(mesh)
    stray = int(np.flatnonzero(truth == 1)[5])
    wanted = truth == 2
    wanted[stray] = True
    masks = np.isin(s.views.face_id, np.flatnonzero(wanted))
    faces = engine.object_faces(s, masks)
    assert faces[truth == 2].mean() > 0.95 and not faces[stray]
    assert engine.object_faces(s, masks, pa=0.0)[stray]  # without the clean-up the speck is kept


def test_bad_clicks_fail_clearly_before_encoding(engine):
    mesh, _ = _parts_mesh()
    inner = trimesh.creation.box((0.2, 0.2, 0.2))  # sealed inside the body: never visible
    outer = trimesh.creation.box((1.0, 1.0, 1.0))
    hidden_mesh = Mesh(
        np.concatenate([outer.vertices, inner.vertices]),
        np.concatenate([outer.faces, inner.faces + len(outer.vertices)]).astype(np.int64),
    )
    cancel = CancelToken()
    with pytest.raises(ValueError, match="not on the mesh"):
        engine.pick(mesh, None, PickRequest([Click(face=mesh.n_faces + 3)]), cancel)
    with pytest.raises(ValueError, match="not on the mesh"):
        engine.pick(mesh, None, PickRequest([Click(point=(5.0, 5.0, 5.0))]), cancel)
    with pytest.raises(ValueError, match="hidden"):
        engine.pick(hidden_mesh, None, PickRequest([Click(face=len(outer.faces) + 1)]), cancel)
    with pytest.raises(ValueError, match="at least one click"):
        engine.pick(mesh, None, PickRequest([]), cancel)
    assert engine._model is None or engine.model().encoder_calls == 0


def test_clicks_refine_without_re_encoding(engine):
    mesh, truth = _parts_mesh()
    cancel = CancelToken()
    head_face = int(np.flatnonzero(truth == 1)[0])
    first = engine.pick(mesh, None, PickRequest([Click(face=head_face)]), cancel)
    model = engine.model()
    assert model.encoder_calls == 12  # each view encoded exactly once
    assert first.mask.shape == (mesh.n_faces,) and first.mask.dtype == bool
    assert set(first.info["stage1_px"]) <= set(first.info["views"])  # two stages: refined on its view first
    body_point = tuple(mesh.vertices[mesh.faces[0]].mean(axis=0))
    second = engine.pick(
        mesh, None, PickRequest([Click(face=head_face), Click(point=body_point, positive=False)]), cancel
    )
    assert model.encoder_calls == 12  # the second click reused the cached features
    assert second.info["start_view"] == first.info["start_view"]
    assert engine.last_timings["click_s"] > 0


def test_automatic_mode_labels_every_face(engine):
    mesh, _ = _parts_mesh()
    stages = []
    # random weights predict low IoU: open the generator's thresholds so objects get propagated
    options = {"auto_points": 8, "auto_pred_iou": -1.0, "auto_stability": -1.0}
    seg = engine.segment(mesh, SegmentParams(options=options), lambda f, s: stages.append(s), CancelToken())
    assert seg.info["n_propagated"] > 0 and any(s.startswith("propagating") for s in stages)
    assert seg.labels.shape == (mesh.n_faces,) and (seg.labels >= 0).all()
    assert seg.hierarchy is not None and seg.info["hierarchy"] == "flat"
    assert any("view 0" in s for s in stages) and any("view 6" in s for s in stages)  # start and opposite
    assert engine.model().encoder_calls == 12  # same mesh as the pick test: still cached


def test_segment_with_clicks_is_the_release_prompted_run(engine):
    """The clicked object (two stages) plus the generator on the opposite view: a full labelling."""
    mesh, truth = _parts_mesh()
    head_face = int(np.flatnonzero(truth == 1)[0])
    stages = []
    options = {"clicks": [{"face": head_face}], "auto_points": 8, "auto_pred_iou": -1.0, "auto_stability": -1.0}
    seg = engine.segment(mesh, SegmentParams(options=options), lambda f, s: stages.append(s), CancelToken())
    assert seg.labels.shape == (mesh.n_faces,) and (seg.labels >= 0).all()
    start = seg.info["start_view"]
    assert any(s.startswith("clicked object") for s in stages)
    assert [s for s in stages if s.startswith("automatic masks")] == [f"automatic masks on view {(start + 6) % 12}"]
    assert "clicked_part" in seg.info or "empty" in seg.info
    with pytest.raises(ValueError, match="clicks"):
        engine.segment(mesh, SegmentParams(options={"clicks": [{"positive": True}]}), lambda f, s: None, CancelToken())


def test_automatic_mask_generator_respects_the_allowed_pixels(engine):
    from segparts.engines.geosam2.automatic import AutoMaskSettings, generate_masks, mask_iou, select_masks

    mesh, _ = _parts_mesh()
    s = engine.session(mesh)
    emb, high_res = s.predictor.view_features(0)
    allowed = s.views.face_id[0] >= 0
    allowed[:, : allowed.shape[1] // 2] = False  # only the right half is "not yet covered"
    # random weights predict low IoU, so the thresholds are opened to exercise the whole path
    loose = AutoMaskSettings(max_points=24, points_per_batch=8, pred_iou_thresh=-1, stability_thresh=-1, min_region=0)
    masks = select_masks(generate_masks(engine.model(), emb, high_res, allowed, loose))
    assert masks
    for m in masks:
        x, y = m.point
        assert allowed[int(y), int(x)]
        assert m.segmentation.shape == allowed.shape and m.area == m.segmentation.sum() > 0
    assert [m.area for m in masks] == sorted((m.area for m in masks), reverse=True)
    assert all(mask_iou(a.segmentation, b.segmentation) <= 0.85 for i, a in enumerate(masks) for b in masks[:i])
    strict = generate_masks(engine.model(), emb, high_res, np.zeros_like(allowed), loose)
    assert strict == []  # nothing left to cover: no prompts at all


def test_engine_loads_the_checkpoint_from_the_models_folder(engine, tmp_path, monkeypatch):
    import torch

    state = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in engine.model().state_dict().items()}
    torch.save({"model": state}, tmp_path / "geosam2.pt")  # the file name the manifest expects
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path))
    fresh = GeoSAM2Engine("cpu", image_size=128)
    assert fresh.availability().available
    key = "pos_map_encoder.trunk.blocks.4.attn.qkv.linear_a_v.weight"
    assert torch.equal(fresh.model().state_dict()[key], state[key].float())


def test_the_clicks_option_is_checked_before_a_job_starts():
    from segparts.engines.base import OptionError, check_options

    engine = GeoSAM2Engine("cpu", image_size=128, weights="random")
    good = [{"face": 3}, {"point": [0.1, 0.2, 0.3], "positive": False}]
    assert check_options(engine, {"clicks": good}) == {"clicks": good}
    for bad in (
        [],
        [{"positive": True}],
        [{"face": -1}],
        [{"face": 2.5}],
        [{"point": [0, 1]}],
        [{"face": 1, "positive": "yes"}],
        [{"face": 1, "colour": 3}],
        [{"face": 1}] * 65,
        {"face": 1},
    ):
        with pytest.raises(OptionError, match="click"):
            check_options(engine, {"clicks": bad})
