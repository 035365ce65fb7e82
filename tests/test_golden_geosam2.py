"""GeoSAM2 against the official release's own outputs (../shared/reference/golden, see its README):
the same seeded release-layout weights, the same inputs, the release's tolerances. Encoders, fusion
and forward_image; ring propagation for four click scenarios; the release's two-stage click
pipeline; and `shrink_mask`. The official code ran in fp32 on CPU at 128 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golden import golden, golden_weights  # noqa: F401

TOL = 1e-3  # check_project.py's tolerance on features and logits (run-to-run noise is ~2.5e-5)
SCENARIOS = ("click1", "click2", "two_objects", "click_v7")


def maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.fixture(scope="module")
def inputs():
    data = golden("geosam2_inputs.npz")
    return torch.from_numpy(data["normal_input"]), torch.from_numpy(data["point_input"])


@pytest.fixture(scope="module")
def model(golden_weights):  # noqa: F811
    from segparts.engines.geosam2.model import build_model, load_checkpoint

    m = build_model(128)
    report = load_checkpoint(m, golden_weights / "geosam2.pt")
    assert report.ok, report.message()
    m.fill_hole_area = 0  # the official CPU run has no hole filling (its CUDA filler is skipped)
    return m


@pytest.fixture(scope="module")
def predictor(model, inputs):
    from segparts.engines.geosam2.predictor import MultiViewPredictor

    pred = MultiViewPredictor(model, *inputs)
    pred.encode()
    return pred


def test_encoders_and_fusion_match_the_release_on_view_0(model, inputs):
    feat = golden("geosam2_features.npz")
    normal, point = (x[:1] for x in inputs)
    with torch.inference_mode():
        fpn = {}
        for name, encoder, x in (("normal", model.image_encoder, normal), ("point", model.pos_map_encoder, point)):
            trunk = encoder.trunk(x)
            assert max(maxdiff(t, feat[f"v0_{name}_trunk{i}"]) for i, t in enumerate(trunk)) <= TOL
            fpn[name] = encoder(x)["backbone_fpn"]
            assert max(maxdiff(t, feat[f"v0_{name}_fpn{i}"]) for i, t in enumerate(fpn[name])) <= TOL
        fused = model.feature_fusion(fpn["normal"], fpn["point"])
        assert max(maxdiff(t, feat[f"v0_fused{i}"]) for i, t in enumerate(fused)) <= TOL


def test_forward_image_matches_the_release_on_all_views(predictor):
    feat = golden("geosam2_features.npz")
    for level, ours in enumerate(predictor._features):  # (V, C, H, W) per level, from forward_image
        assert maxdiff(ours, feat[f"backbone_fpn{level}"]) <= TOL, f"level {level}"


def _objects(clicks: np.ndarray):
    from segparts.engines.geosam2.predictor import Prompt

    return [
        Prompt(clicks[clicks[:, 0] == oid, 1:3].astype(np.float32), clicks[clicks[:, 0] == oid, 3].astype(np.int32))
        for oid in np.unique(clicks[:, 0])
    ]


def _final_lowres(data, prefix: str) -> np.ndarray:
    """The release's last low-res output per view (the start view's second visit wins)."""
    views, steps = data[f"{prefix}/step_view"], data[f"{prefix}/step_lowres_logits"]
    return np.stack([steps[np.flatnonzero(views == v)[-1]] for v in range(12)])


def _at_128(low: torch.Tensor) -> np.ndarray:
    return F.interpolate(low, size=(128, 128), mode="bilinear", align_corners=False).numpy()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ring_propagation_matches_the_release(predictor, scenario):
    data = golden("geosam2_clicks.npz")
    start = int(data[f"{scenario}/start_view"])
    cond = {start: [predictor.prompt(start, p) for p in _objects(data[f"{scenario}/clicks"])]}
    low = predictor.propagate(start, cond)
    assert maxdiff(low, _final_lowres(data, scenario)) <= TOL
    assert maxdiff(_at_128(low), data[f"{scenario}/logits"]) <= TOL


def test_two_stage_click_matches_the_release(predictor):
    """The release's click pipeline: the click refined on its view alone, the mask then seeding the
    ring (the one-stage ring differs from it by 0.089)."""
    data = golden("geosam2_clicks.npz")
    (prompt,) = _objects(data["two_stage/clicks"])
    stage1 = predictor.refined_click_mask(0, prompt)
    np.testing.assert_array_equal(stage1, data["two_stage/stage1_mask"])
    low, masks = predictor.propagate_clicks(0, {0: prompt})
    assert list(masks) == [0]
    assert maxdiff(low, _final_lowres(data, "two_stage")) <= TOL
    assert maxdiff(_at_128(low), data["two_stage/logits"]) <= TOL


def test_shrink_mask_matches_the_release():
    from segparts.engines.geosam2.automatic import open_masks, shrink_mask

    data = golden("geosam2_shrink_mask.npz")
    ours = shrink_mask(torch.from_numpy(data["input_logits"])).numpy()
    np.testing.assert_array_equal(ours > 0, data["output_logits"] > 0)  # every thin part kept
    np.testing.assert_array_equal(ours, data["output_logits"])  # and +1024 exactly where the release puts it
    np.testing.assert_array_equal(open_masks(data["input_logits"] > 0), data["opening_only"])
