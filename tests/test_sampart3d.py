"""SAMPart3D engine: oracle-mask end-to-end test, SAM 2 mask generator, clustering, clear failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from segparts.engines.base import Cancelled, CancelToken, Click, EngineUnavailable, PickRequest, SegmentParams
from segparts.engines.nms import box_nms
from segparts.engines.sampart3d import SAMPart3DEngine, cluster, grouping
from segparts.engines.sampart3d.masks import NoMasksError, ProvidedMasks, Sam2AutomaticMasks
from segparts.mesh import Mesh, MeshError
from segparts.render import normalize_for_rendering, render_views, sampart3d_rig

RENDER_SIZE = 256
# Small but faithful: the release's loss, schedule shape, scales, HDBSCAN and voting; fewer points,
# pixels and iterations (a higher peak lr makes up for them) so the test runs in about a minute.
ORACLE_OPTIONS = dict(
    backbone="none",
    quality="fast",
    iterations=300,
    views_per_batch=8,
    pixels_per_view=64,
    lr=1e-3,
    n_points=3000,
    render_size=RENDER_SIZE,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matmuls: one thread is several times faster than two on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def four_blocks():
    """Four boxes of different sizes in a row with small gaps: parts 0..3, coarse groups {0,1}, {2,3}.
    Every part and every coarse group has a SAMPart3D scale below 2 (the release drops larger masks)."""
    sizes = [(0.24, 0.2, 0.2), (0.2, 0.16, 0.24), (0.26, 0.22, 0.18), (0.22, 0.18, 0.22)]
    x0, parts = -0.52, []
    for sx, sy, sz in sizes:
        box = trimesh.creation.box((sx, sy, sz), trimesh.transformations.translation_matrix((x0 + sx / 2, 0, sz / 2)))
        parts.append(box.subdivide().subdivide())
        x0 += sx + 0.04
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    mesh = Mesh(
        np.concatenate([p.vertices for p in parts]), np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    )
    part = np.concatenate([np.full(len(p.faces), i) for i, p in enumerate(parts)])
    return mesh, part


def oracle_masks(mesh, labelings, n_views=16, size=RENDER_SIZE):
    """Per view, one mask per label of each labeling, from the shared renderer's face ids."""
    vertices, norm = normalize_for_rendering(mesh.vertices)
    views = render_views(
        Mesh(vertices, mesh.faces), sampart3d_rig(n_views, size, extents=norm.extents), outputs=("face_id",)
    )
    per_view = []
    for fid in views.face_id:
        masks = []
        for labels in labelings:
            image = np.where(fid >= 0, labels[np.maximum(fid, 0)], -1)
            masks += [image == k for k in np.unique(image) if k >= 0]
        per_view.append(masks)
    return per_view


def class_agnostic_miou(pred, truth):
    """Mean over true parts of the best IoU with any predicted part."""
    scores = []
    for t in np.unique(truth):
        tm = truth == t
        scores.append(max(((pred == p) & tm).sum() / ((pred == p) | tm).sum() for p in np.unique(pred[tm])))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def oracle_run():
    mesh, part = four_blocks()
    coarse = part // 2
    masks = ProvidedMasks(oracle_masks(mesh, [part, coarse]))
    events = []
    engine = SAMPart3DEngine("cpu")
    seg = engine.segment(
        mesh,
        SegmentParams(scale=0.0, options=dict(ORACLE_OPTIONS, mask_source=masks)),
        lambda f, s: events.append((f, s)),
        CancelToken(),
    )
    return engine, mesh, part, coarse, seg, events


def test_oracle_masks_recover_the_parts_at_both_granularities(oracle_run):
    engine, mesh, part, coarse, seg, events = oracle_run
    assert seg.labels.shape == (mesh.n_faces,)
    fine_miou = class_agnostic_miou(seg.labels, part)
    assert fine_miou >= 0.9, (fine_miou, seg.info["parts_per_scale"])
    # coarse groups at SAMPart3D scale 1.5 (engine scale 0.75), from the cached field: no retraining
    trained = seg.state.trained
    pick = engine.pick(mesh, seg, PickRequest([Click(face=int(np.flatnonzero(part == 3)[0]))], scale=0.75))
    assert seg.state.trained is trained
    coarse_miou = class_agnostic_miou(seg.state.face_labels_at[1.5], coarse)
    assert coarse_miou >= 0.9, (coarse_miou, seg.info["parts_per_scale"])
    assert pick.mask.shape == (mesh.n_faces,) and pick.mask.dtype == bool
    overlap = (pick.mask & (coarse == 1)).sum() / (pick.mask | (coarse == 1)).sum()
    assert overlap >= 0.9
    # a fine pick selects one box
    fine_pick = engine.pick(mesh, seg, PickRequest([Click(face=int(np.flatnonzero(part == 1)[0]))], scale=0.0))
    assert ((fine_pick.mask & (part == 1)).sum() / (fine_pick.mask | (part == 1)).sum()) >= 0.9


def test_oracle_run_reports_progress_hierarchy_and_scale_statistics(oracle_run):
    engine, mesh, part, coarse, seg, events = oracle_run
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(s == "training grouping field" for _, s in events)
    assert np.allclose(seg.state.points.feat[:, 6:9], -0.2)  # untextured: the release's grey 102
    losses = [loss for _, loss, _ in seg.state.trained.losses]
    assert np.mean(losses[-5:]) < np.mean(losses[:3])  # it learned
    st = seg.info["scale_transform"]
    assert len(st["quantiles"]) == len(st["references"]) > 1
    assert all(0 < q < 2 for q in st["quantiles"])
    h = seg.hierarchy
    assert h.leaf_labels.shape == (mesh.n_faces,)
    assert len(np.unique(h.cut(scale=0.0))) >= len(np.unique(h.cut(scale=0.999)))


def test_recut_reclusters_the_trained_field_at_the_chosen_scale(oracle_run):
    """A new slider position is HDBSCAN at that scale on the cached field (not a merge of the finest
    clustering), clustered once per scale; `parts` still cuts the hierarchy."""
    from segparts.engines.base import recut

    engine, mesh, part, coarse, seg, events = oracle_run
    trained = seg.state.trained
    coarse_cut = recut(engine, seg, SegmentParams(scale=0.75))
    assert coarse_cut.state.trained is trained and coarse_cut.info["sampart3d_scale"] == 1.5
    assert np.array_equal(coarse_cut.labels, seg.state.face_labels_at[1.5])
    between = recut(engine, seg, SegmentParams(scale=0.3))  # not one of the five standard scales
    assert 0.6 in seg.state.face_labels_at and np.array_equal(between.labels, seg.state.face_labels_at[0.6])
    assert "cluster_0.6_s" in seg.state.timings
    again = recut(engine, seg, SegmentParams(scale=0.3))
    assert np.array_equal(again.labels, between.labels)
    assert class_agnostic_miou(between.labels, part) >= 0.9 or class_agnostic_miou(between.labels, coarse) >= 0.9
    two = recut(engine, seg, SegmentParams(parts=2))
    assert len(np.unique(two.labels)) == 2 and two.info["sampart3d_scale"] is None
    # with several top clusters the tree's coarsest level sits at 0.999, just under the root (the
    # add-on's slider asks for that scale): the clustering at 2.0, not a new one at 1.998
    top = recut(engine, seg, SegmentParams(scale=0.999))
    assert top.info["sampart3d_scale"] == 2.0 and np.array_equal(top.labels, seg.state.face_labels_at[2.0])
    assert sorted(seg.state.face_labels_at) == [0.0, 0.5, 0.6, 1.0, 1.5, 2.0], "no clustering at 1.998"


def test_scales_near_a_standard_scale_are_that_scale():
    from segparts.engines.sampart3d import sampart3d_scale

    assert [sampart3d_scale(s) for s in (0.0, 0.25, 0.999, 1.0, 1.7)] == [0.0, 0.5, 2.0, 2.0, 2.0]
    assert sampart3d_scale(0.3) == 0.6 and sampart3d_scale(0.99) == 1.98


def test_cancellation_stops_training():
    mesh, part = four_blocks()
    token = CancelToken()

    def progress(fraction, stage):
        if stage == "training grouping field" and fraction > 0.05:
            token.cancel()

    masks = ProvidedMasks(oracle_masks(mesh, [part], n_views=16, size=128))
    opts = dict(ORACLE_OPTIONS, render_size=128, iterations=200, mask_source=masks)
    with pytest.raises(Cancelled):
        SAMPart3DEngine().segment(mesh, SegmentParams(scale=0.0, options=opts), progress, token)


def test_empty_masks_are_a_clear_error():
    mesh, _ = four_blocks()
    empty = ProvidedMasks([[] for _ in range(16)])
    opts = dict(ORACLE_OPTIONS, render_size=64, mask_source=empty)
    with pytest.raises(NoMasksError, match="no non-empty mask"):
        SAMPart3DEngine().segment(mesh, SegmentParams(options=opts))


def test_masks_too_large_for_any_scale_are_a_clear_error():
    mesh, part = four_blocks()
    whole = ProvidedMasks(oracle_masks(mesh, [np.zeros_like(part)], size=64))  # the whole object: scale > 2
    opts = dict(ORACLE_OPTIONS, render_size=64, mask_source=whole)
    with pytest.raises(grouping.GroupingError, match="none of the masks is usable: 16 given, 16 left"):
        SAMPart3DEngine().segment(mesh, SegmentParams(options=opts))


def test_degenerate_meshes_are_refused():
    flat_line = Mesh(
        np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0.0]]), np.array([[0, 1, 2], [1, 2, 3], [0, 2, 3], [0, 1, 3]])
    )
    opts = dict(ORACLE_OPTIONS, mask_source=ProvidedMasks([]))
    with pytest.raises(MeshError, match="degenerate"):
        SAMPart3DEngine().segment(flat_line, SegmentParams(options=opts))
    tiny = Mesh(np.eye(3), np.array([[0, 1, 2]]))
    with pytest.raises(MeshError, match="at least"):
        SAMPart3DEngine().segment(tiny, SegmentParams(options=opts))


def test_missing_checkpoints_name_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path))
    engine = SAMPart3DEngine()
    availability = engine.availability()
    assert not availability.available
    text = availability.message()
    assert str(tmp_path / "ptv3-object.pth") in text and "sam_vit_h_4b8939.pth" in text  # the paper preset
    assert "segparts models fetch ptv3-object" in availability.fix
    mesh, _ = four_blocks()
    with pytest.raises(EngineUnavailable, match="ptv3-object"):
        engine.segment(mesh, SegmentParams(options={"mask_source": ProvidedMasks([])}))
    # with provided masks and no backbone (test mode) nothing is needed
    assert engine.availability({"backbone": "none", "mask_source": object()}).available


def test_sam2_generator_on_random_weights_returns_well_formed_masks():
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
    generator = Sam2AutomaticMasks(
        model=model,
        points_per_side=3,
        points_per_batch=4,
        pred_iou_thresh=-1e9,
        stability_score_thresh=-1.0,
        box_nms_thresh=0.99,
        max_masks_per_view=5,
    )
    image = np.full((48, 64, 3), 255, np.uint8)
    image[10:40, 15:50] = (180, 60, 40)
    masks = generator.masks_for_image(image)
    assert 1 <= len(masks) <= 5
    for m in masks:
        assert m.shape == (48, 64) and m.dtype == bool
    strict = Sam2AutomaticMasks(model=model, points_per_side=2, pred_iou_thresh=1e9)
    assert strict.masks_for_image(image) == []  # nothing passes an impossible IoU threshold


def test_box_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor([[3, 2, 6, 4], [3, 2, 7, 4], [0, 7, 1, 8]], dtype=torch.float32)  # 0 and 1 overlap heavily
    assert box_nms(boxes, torch.tensor([0.5, 0.9, 0.7]), 0.5).tolist() == [1, 2]
    assert box_nms(boxes, torch.tensor([0.5, 0.9, 0.7]), 0.9).tolist() == [1, 2, 0]  # IoU 0.75 is kept
    assert box_nms(boxes, torch.tensor([0.8, 0.8, 0.8]), 0.5).tolist() == [0, 2]  # ties: the earlier box first
    assert box_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_pixel_groups_order_and_cdf():
    cover = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0]], bool)  # 3 masks over 4 pixels
    keys, cdf = grouping._pixel_groups(cover)
    assert keys.tolist() == [[0, 1], [0, 1], [1, 2], [-1, -1]]
    assert np.allclose(cdf[:, -1][:3], 1.0, atol=1e-5) and (cdf[3] == 1.0).all()
    assert cdf[0, 0] > 0.5  # smaller masks get more weight (log of a smaller share)


def test_clustering_noise_and_voting():
    rng = np.random.default_rng(0)
    pos = np.concatenate([rng.normal(0, 0.05, (200, 3)), rng.normal(1, 0.05, (200, 3))])
    feats = np.concatenate([rng.normal(0, 0.01, (200, 8)), rng.normal(3, 0.01, (200, 8))])
    labels = cluster.cluster_points(feats, pos)
    assert len(np.unique(labels)) == 2 and (labels >= 0).all()
    assert len(np.unique(labels[:200])) == 1 and labels[0] != labels[-1]
    # faces 0..2 voted by samples, face 3 has none and takes its nearest voted face
    centroids = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [2.1, 0, 0]], float)
    faces = cluster.face_labels(np.array([5, 5, 7, 9, 9, 7]), np.array([0, 0, 1, 2, 2, 2]), centroids)
    assert faces[0] != faces[1] and faces[2] == faces[3]


def test_hierarchy_nests_finer_levels_under_coarser():
    fine = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    mid = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    h = cluster.hierarchy_from_levels([fine, mid, np.zeros(8, int)])
    assert len(np.unique(h.cut(scale=0.0))) == 4
    assert len(np.unique(h.cut(scale=0.5))) == 2
    assert len(np.unique(h.cut(scale=1.0))) == 1


def test_points_follow_the_release_transform_chain():
    mesh, _ = four_blocks()
    vertices, _ = normalize_for_rendering(mesh.vertices)
    pts = grouping.prepare_points(vertices, mesh.faces, n_points=5000, seed=3)
    again = grouping.prepare_points(vertices, mesh.faces, n_points=5000, seed=3)
    assert np.array_equal(pts.feat, again.feat)  # fixed seed
    assert pts.sample_xyz.shape == (5000, 3) and pts.inverse.shape == (5000,)
    assert len(np.unique(pts.grid_coord, axis=0)) == pts.n_grid and pts.grid_coord.min() == 0
    assert np.allclose(pts.feat[:, 6:], -0.2)  # untextured: trimesh's default grey 102, as the release's points
    assert np.allclose(np.linalg.norm(pts.feat[:, 3:6], axis=1), 1.0, atol=1e-5)
    coord = pts.feat[:, :3]
    assert np.linalg.norm(coord - coord.mean(0), axis=1).max() <= 2.0 + 1e-6
    assert np.isclose(coord[:, 0].min(), -coord[:, 0].max(), atol=1e-6)  # centred in x
    # every sample's grid point lies in the same voxel neighbourhood
    assert np.abs(pts.grid_xyz[pts.inverse] - pts.sample_xyz).max() < 0.05


def _flat_grid_points(h, w):
    """Grid points one per pixel of an (h, w) image lying flat at z = 0, spacing 0.01."""
    ys, xs = np.mgrid[0:h, 0:w]
    xyz = np.stack([xs * 0.01, ys * 0.01, np.zeros_like(xs)], axis=-1).astype(np.float64)
    flat = xyz.reshape(-1, 3)
    points = grouping.ObjectPoints(
        flat,
        np.zeros(len(flat), np.int64),
        np.arange(len(flat)),
        flat,
        np.zeros((len(flat), 3), np.int64),
        np.zeros((len(flat), 9), np.float32),
    )
    return points, xyz


def test_a_view_with_exactly_one_kept_mask_supervises_its_pixels_at_the_mask_scale():
    """The release takes a one-column view's only mask whatever level was drawn (its CDF is 0),
    at the mask's full scale; the other view has two nested masks, so the keys are two wide."""
    h = w = 12
    points, xyz = _flat_grid_points(h, w)
    fg = np.ones((h, w), bool)
    half = np.zeros((h, w), bool)
    half[:, :6] = True
    quarter = np.zeros((h, w), bool)
    quarter[:6, :6] = True
    groups = grouping.build_view_groups(points, [xyz, xyz], [fg, fg], [[half], [quarter, half]])
    assert groups.keys.shape[1] == 2
    single_scale = groups.mask_scale[groups.mask_view == 0][0]
    cfg = grouping.TrainConfig(views_per_batch=40, pixels_per_view=32)
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(5):
        batch = grouping.sample_batch(groups, cfg, rng)
        rows = batch.point.numpy()
        ids, scales = batch.mask_id.numpy(), batch.scale.numpy()[:, 0]
        of_view0 = (ids >= 0) & (groups.mask_view[np.maximum(ids, 0)] == 0)
        inside = half.reshape(-1)[rows]
        seen += of_view0.sum()
        assert np.allclose(scales[of_view0], single_scale, rtol=1e-5)
        assert inside[of_view0].all()
    # about half the batches' views are view 0, and the eroded half mask covers ~40% of its pixels
    assert seen > 0.1 * 5 * cfg.views_per_batch * cfg.pixels_per_view


def ramp_textured_boxes():
    """Two boxes whose texture is a red ramp along x: u = x + 0.5 per corner, red = 255 u."""
    boxes = [trimesh.creation.box((0.4, 0.4, 0.4)).apply_translation((x, 0, 0)).subdivide() for x in (-0.25, 0.25)]
    tm = trimesh.util.concatenate(boxes)
    part = np.repeat([0, 1], [len(b.faces) for b in boxes])
    corner_uv = np.stack([tm.vertices[tm.faces][..., 0] + 0.5, tm.vertices[tm.faces][..., 2] + 0.5], axis=-1)
    ramp = np.round(np.linspace(0, 255, 256)).astype(np.uint8)
    texture = np.zeros((8, 256, 3), np.uint8)
    texture[..., 0] = ramp[None, :]
    texture[..., 2] = 255 - ramp[None, :]
    from segparts.appearance import Appearance

    mesh = Mesh(
        np.asarray(tm.vertices, float), np.asarray(tm.faces), appearance=Appearance(uv=corner_uv, texture=texture)
    )
    return mesh, part


def test_textured_points_sample_the_texture_per_point_not_per_face():
    mesh, part = ramp_textured_boxes()
    masks = ProvidedMasks(oracle_masks(mesh, [part], size=64))
    options = dict(
        ORACLE_OPTIONS,
        iterations=2,
        views_per_batch=2,
        pixels_per_view=16,
        n_points=2000,
        render_size=64,
        mask_source=masks,
    )
    seg = SAMPart3DEngine("cpu").segment(mesh, SegmentParams(options=options))
    # no scale asked: the paper's best scale, SAMPart3D 0.0 (the finest clustering)
    assert seg.info["auto_scale"] == 0.0 and seg.info["sampart3d_scale"] == 0.0
    assert np.array_equal(seg.labels, seg.state.face_labels_at[0.0])
    points = seg.state.points
    _, norm = normalize_for_rendering(mesh.vertices)
    u = norm.inverse(points.grid_xyz)[:, 0] + 0.5
    rgb = (points.feat[:, 6:9].astype(np.float64) + 1.0) * 127.5
    assert np.abs(rgb[:, 0] - 255.0 * u).max() <= 1.5  # bilinear ramp at each point's own UV
    assert np.abs(rgb[:, 2] - (255.0 - 255.0 * u)).max() <= 1.5
    # far more distinct colours than faces carrying points: not one colour per face
    assert len(np.unique(np.round(rgb[:, 0]))) > 100


def test_training_survives_batches_without_a_single_pair():
    """One view has masks, the other none: one-view batches of the maskless view have no pair to
    learn from; they are skipped (the release's loss would be NaN there), the others train."""
    h = w = 12
    points, xyz = _flat_grid_points(h, w)
    fg = np.ones((h, w), bool)
    quarter = np.zeros((h, w), bool)
    quarter[:6, :6] = True
    groups = grouping.build_view_groups(points, [xyz, xyz], [fg, fg], [[quarter, ~quarter], []])
    cfg = grouping.TrainConfig(iterations=12, views_per_batch=1, pixels_per_view=16, seed=0)
    backbone_feat = np.random.default_rng(0).normal(size=(points.n_grid, grouping.FEATURE_DIM)).astype(np.float32)
    trained = grouping.train_field(backbone_feat, points.feat, groups, cfg)
    assert trained.iterations == 12
    assert all(torch.isfinite(p).all() for p in trained.field.parameters())
