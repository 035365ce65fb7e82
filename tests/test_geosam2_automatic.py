"""GeoSAM2 automatic-mode pieces that need no model: mask selection and per-view filters."""
from __future__ import annotations

import numpy as np
import torch

from segparts.engines.geosam2.automatic import (AutoMask, area_consistent, box_nms, novel_objects, open_masks,
                                                remove_small_regions, select_masks, stable_objects)


def _square(x0, y0, x1, y1, size=32):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_select_masks_skips_near_duplicates_and_orders_by_area():
    big, big_shifted, small = _square(0, 0, 20, 20), _square(0, 0, 20, 19), _square(25, 25, 30, 30)
    masks = [AutoMask((1, 1), big, 0.80, int(big.sum())), AutoMask((2, 2), big_shifted, 0.95, int(big_shifted.sum())),
             AutoMask((26, 26), small, 0.90, int(small.sum()))]
    kept = select_masks(masks, accept_iou=0.85)
    assert [m.point for m in kept] == [(2, 2), (26, 26)]  # best IoU of the duplicates kept; largest first


def test_box_nms_and_small_regions():
    masks = torch.from_numpy(np.stack([_square(0, 0, 10, 10), _square(1, 0, 10, 10), _square(20, 20, 30, 30)]))
    assert box_nms(masks, torch.tensor([0.5, 0.9, 0.7]), 0.7) == [1, 2]
    m = _square(0, 0, 20, 20)
    m[5, 5] = False  # 1-pixel hole
    m[30, 30] = True  # 1-pixel island
    cleaned = remove_small_regions(m, 25)
    assert cleaned[5, 5] and not cleaned[30, 30]


def test_opening_removes_thin_bits_keeps_bodies():
    m = _square(4, 4, 28, 28)
    m[0:32, 15] = True  # a 1-pixel line through and beyond the square
    opened = open_masks(m[None])[0]
    assert opened[10:20, 10:20].all() and not opened[1, 15]


def test_view_filters():
    logits = torch.full((3, 2, 16, 16), -10.0)
    logits[:, 0, 4:12, 4:12] = 10.0  # crisp object
    logits[0, 1, 4:12, 4:12] = 10.0
    logits[1, 1, 2:14, 2:14] = 0.3  # blurry in another view: unstable
    assert stable_objects(logits, anchor=0, thresh=0.7).tolist() == [True, False]
    assert stable_objects(logits, anchor=0, thresh=0.0).tolist() == [True, True]
    masks = (logits > 0).numpy()
    assert area_consistent(masks, anchor=0, alpha=1.0).tolist() == [True, False]  # object 1 grows in view 1
    existing = [masks[:, 0]]
    assert novel_objects(masks, existing, anchor=0).tolist() == [False, False]  # both equal object 0 on view 0
    assert novel_objects(masks, [], anchor=0).tolist() == [True, False]  # second duplicates the first
    assert novel_objects(masks, [], anchor=2).tolist() == [True, True]  # view 2: object 1 is empty


def test_filters_accept_no_objects():
    empty = np.zeros((12, 0, 8, 8), bool)
    assert area_consistent(empty, anchor=0, alpha=1.0).shape == (0,)
    assert novel_objects(empty, [], anchor=0).shape == (0,)
