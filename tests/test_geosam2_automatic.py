"""GeoSAM2 automatic-mode pieces that need no model: mask selection, the generator's mask
post-processing and NMS, the release's shrink_mask and the per-view filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2.utils.amg import batched_mask_to_box

from segparts.engines.geosam2.automatic import (
    AutoMask,
    area_consistent,
    flip_small_regions,
    novel_objects,
    open_masks,
    select_masks,
    shrink_mask,
    stable_objects,
    view_masks,
)
from segparts.engines.nms import box_nms


def _square(x0, y0, x1, y1, size=32):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_select_masks_skips_near_duplicates_and_orders_by_area():
    big, big_shifted, small = _square(0, 0, 20, 20), _square(0, 0, 20, 19), _square(25, 25, 30, 30)
    masks = [
        AutoMask((1, 1), big, 0.80, int(big.sum())),
        AutoMask((2, 2), big_shifted, 0.95, int(big_shifted.sum())),
        AutoMask((26, 26), small, 0.90, int(small.sum())),
    ]
    kept = select_masks(masks, accept_iou=0.85)
    assert [m.point for m in kept] == [(2, 2), (26, 26)]  # best IoU of the duplicates kept; largest first


def test_box_nms_on_mask_boxes():
    masks = torch.from_numpy(
        np.stack([_square(0, 0, 10, 10), _square(1, 0, 10, 10), _square(20, 20, 30, 30), np.zeros((32, 32), bool)])
    )
    boxes = batched_mask_to_box(masks)
    assert boxes.tolist() == [[0, 0, 9, 9], [1, 0, 9, 9], [20, 20, 29, 29], [0, 0, 0, 0]]  # inclusive, empty = 0
    assert box_nms(boxes.double(), torch.tensor([0.5, 0.9, 0.7, 0.6]), 0.7).tolist() == [1, 2, 3]


def test_small_holes_and_islands_flip_as_sam2_postprocess_masks():
    logits = torch.full((2, 16, 16), -5.0)
    logits[0, 2:12, 2:12] = 5.0
    logits[0, 6, 6] = -1.0  # a 1-px hole: filled with +10
    logits[0, 14, 14] = 3.0  # a 1-px island: removed with -10
    logits[1, 0:3, 0:3] = 2.0  # a 9-px island touching the border: removed too
    out = flip_small_regions(logits, 9)
    assert out[0, 6, 6] == 10.0 and out[0, 14, 14] == -10.0 and (out[1, 0:3, 0:3] == -10.0).all()
    assert out[0, 3, 3] == 5.0  # the body keeps its logits
    # the 8-connected diagonal pair is one 2-px island: kept at max_area 1
    diag = torch.full((1, 8, 8), -5.0)
    diag[0, 2, 2] = diag[0, 3, 3] = 1.0
    assert (flip_small_regions(diag, 1)[0][[2, 3], [2, 3]] == 1.0).all()


def test_shrink_mask_keeps_the_binary_mask_and_marks_thin_parts():
    """The release writes +1024 into exactly the pixels its opening removes: thin parts stay."""
    logits = torch.full((1, 40, 40), -3.0)
    logits[0, 10:30, 10:30] = 2.0  # a body
    logits[0, 0:10, 20] = 0.5  # a 1-px antenna the opening removes
    out = shrink_mask(logits)
    assert torch.equal(out > 0, logits > 0)  # nothing erased (the old opening lost the antenna)
    assert (out[0, 0:10, 20] == 1024.0).all()
    assert (out[0, 15:25, 15:25] == 2.0).all() and (out[0, 35:, :] == -3.0).all()
    opened = open_masks((logits > 0).numpy())
    assert not opened[0, 0:10, 20].any() and opened[0, 15:25, 15:25].all()


def test_opening_by_two_passes_equals_the_square_max_pool():
    """open_masks' separable max (a column pass, then a row pass) against the one 2-D pool it
    replaces, on random masks with borders, thin lines and specks."""
    import torch.nn.functional as F

    from segparts.engines.geosam2.automatic import square_max

    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((6, 1, 37, 53)) < np.linspace(0.2, 0.95, 6)[:, None, None, None]).float()
    for reach in (1, 3, 13):
        want = F.max_pool2d(masks, reach, stride=1, padding=reach // 2)
        assert torch.equal(square_max(masks, reach), want)


def test_view_masks_stability_sees_the_shrunk_logits():
    """A thin, weak (0 < logit < offset) antenna lowers the stability of the raw logits; after
    shrink_mask it is +1024 and no longer counts against the object, as in the release."""
    low = torch.full((1, 1, 40, 40), -3.0)
    low[0, 0, 10:30, 10:30] = 5.0
    low[0, 0, 0:10, 20] = 0.3
    masks, stability = view_masks(low, 40)
    assert masks[0, 0, 0:10, 20].all()
    from sam2.utils.amg import calculate_stability_score

    assert stability[0, 0] > calculate_stability_score(low[0], 0.0, 0.7)[0]


def test_view_filters():
    logits = torch.full((3, 2, 64, 64), -10.0)  # large enough for shrink_mask's opening to keep them
    logits[:, 0, 16:48, 16:48] = 10.0  # crisp object
    logits[0, 1, 16:48, 16:48] = 10.0
    logits[1, 1, 8:56, 8:56] = 0.3  # blurry in another view: unstable
    masks, stability = view_masks(logits, 64)
    shows = masks.any(axis=(-2, -1))
    assert stable_objects(stability, shows, anchor=0, thresh=0.7).tolist() == [True, False]
    assert stable_objects(stability, shows, anchor=0, thresh=0.0).tolist() == [True, True]
    assert area_consistent(masks, anchor=0, alpha=1.0).tolist() == [True, False]  # object 1 grows in view 1
    existing = [masks[:, 0]]
    assert novel_objects(masks, existing, anchor=0).tolist() == [False, False]  # both equal object 0 on view 0
    assert novel_objects(masks, [], anchor=0).tolist() == [True, False]  # second duplicates the first
    assert novel_objects(masks, [], anchor=2).tolist() == [True, True]  # view 2: object 1 is empty


def test_filters_accept_no_objects():
    empty = np.zeros((12, 0, 8, 8), bool)
    assert area_consistent(empty, anchor=0, alpha=1.0).shape == (0,)
    assert novel_objects(empty, [], anchor=0).shape == (0,)


class _ScriptedHeads:
    """SAM's prompt encoder and mask decoder with scripted answers (the network is not what these
    tests check; the generator's order of refine and filter is): every first-pass mask has a
    predicted IoU of 0.1; refining a mask with itself as prompt gives 0.9 from the decoder's
    single-mask token, 0.1 if the video predictor's dynamic multimask is left on."""

    image_size = 64

    def __init__(self):
        self.no_mem_embed = torch.zeros(1, 1, 8)
        self.sam_prompt_encoder = self
        self.sam_mask_decoder = self
        self.dynamic_multimask_via_stability = True  # as the engine's (video) model is built

    def __call__(self, points=None, boxes=None, masks=None, **decoder_args):
        if decoder_args:  # the decoder
            pts, has_mask = decoder_args["sparse_prompt_embeddings"]
            n = len(pts)
            yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
            disk = (xx - pts[:, 0, 0, None, None] / 4) ** 2 + (yy - pts[:, 0, 1, None, None] / 4) ** 2 <= 9
            logits = torch.where(disk, 8.0, -8.0)[:, None]
            if decoder_args["multimask_output"]:
                return logits.repeat(1, 3, 1, 1), torch.full((n, 3), 0.1), None, None
            iou = 0.1 if self.dynamic_multimask_via_stability or not has_mask else 0.9
            return logits, torch.full((n, 1), iou), None, None
        return (points[0], masks is not None), None  # the prompt encoder

    def get_dense_pe(self):
        return None


def test_generator_refines_every_candidate_before_filtering_with_single_mask_output():
    from segparts.engines.geosam2.automatic import AutoMaskSettings, generate_masks

    heads = _ScriptedHeads()
    allowed = np.zeros((64, 64), bool)
    allowed[20:44, 20:44] = True
    settings = AutoMaskSettings(max_points=4, points_per_batch=2, min_region=0)
    masks = generate_masks(heads, torch.zeros(1, 8, 16, 16), [], allowed, settings)
    assert masks and all(m.predicted_iou == pytest.approx(0.9) for m in masks)
    assert all(float(m.point[0]).is_integer() and allowed[int(m.point[1]), int(m.point[0])] for m in masks)
    assert heads.dynamic_multimask_via_stability  # restored for the video predictor
