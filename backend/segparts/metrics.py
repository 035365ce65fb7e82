"""Part-segmentation metrics, exactly as in ../shared/reference/metrics.md.

All functions compare a predicted per-face labelling P with a ground truth G of the same faces.
Counts are face counts. The Princeton protocol first splits every predicted segment into its
face-connected components (`split_connected`); `compare` does that when given the faces.
"""

from __future__ import annotations

import numpy as np

from .meshgraph import face_adjacency, label_components

METRIC_NAMES = ("rand_index_error", "gce", "lce", "miou")


class Contingency:
    """The non-zero cells n_ij of the contingency table of P against G, with the marginals
    a_i (predicted part sizes) and b_j (GT part sizes) of each cell."""

    def __init__(self, pred: np.ndarray, gt: np.ndarray):
        pred = np.asarray(pred).ravel()
        gt = np.asarray(gt).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} faces but ground truth has {gt.size}")
        _, p = np.unique(pred, return_inverse=True)
        _, g = np.unique(gt, return_inverse=True)
        p, g = p.ravel().astype(np.int64), g.ravel().astype(np.int64)
        n_gt = int(g.max(initial=-1)) + 1
        cells, count = np.unique(p * n_gt + g, return_counts=True)
        self.n = pred.size
        self.row, self.col = cells // max(n_gt, 1), cells % max(n_gt, 1)
        self.count = count.astype(np.float64)
        self.pred_sizes = np.bincount(p).astype(np.float64)
        self.gt_sizes = np.bincount(g).astype(np.float64)
        self.a = self.pred_sizes[self.row]
        self.b = self.gt_sizes[self.col]


def _pairs(x: np.ndarray | int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x * (x - 1.0) / 2.0


def rand_index_error(pred: np.ndarray, gt: np.ndarray, table: Contingency | None = None) -> float:
    """1 - Rand Index: the fraction of face pairs on which P and G disagree (same/different part)."""
    t = table or Contingency(pred, gt)
    if t.n < 2:
        return 0.0
    disagree = _pairs(t.pred_sizes).sum() + _pairs(t.gt_sizes).sum() - 2.0 * _pairs(t.count).sum()
    return float(disagree / _pairs(t.n))


def consistency_errors(pred: np.ndarray, gt: np.ndarray, table: Contingency | None = None) -> tuple[float, float]:
    """(GCE, LCE) of Martin et al., per face E(S1,S2,f) = |S1 \\ S2| / |S1|."""
    t = table or Contingency(pred, gt)
    if t.n == 0:
        return 0.0, 0.0
    c = t.count
    e_pg = (t.a - c) / t.a  # every one of the c faces in cell (i, j) has this error
    e_gp = (t.b - c) / t.b
    gce = min((c * e_pg).sum(), (c * e_gp).sum()) / t.n
    lce = (c * np.minimum(e_pg, e_gp)).sum() / t.n
    return float(gce), float(lce)


def miou(pred: np.ndarray, gt: np.ndarray, table: Contingency | None = None) -> float:
    """Class-agnostic mIoU: mean over GT parts (label -1 skipped) of the best IoU of any predicted part."""
    t = table or Contingency(pred, gt)
    gt_values = np.unique(np.asarray(gt).ravel())
    labelled = gt_values != -1  # GT parts in compacted order; -1 (unlabelled) is not a part
    if not labelled.any():
        return float("nan")
    iou = t.count / (t.a + t.b - t.count)
    best = np.zeros(len(gt_values))
    np.maximum.at(best, t.col, iou)
    return float(best[labelled].mean())


def split_connected(labels: np.ndarray, faces: np.ndarray | None, pairs: np.ndarray | None = None) -> np.ndarray:
    """Split each segment into its edge-connected components (the benchmark's pre-processing).

    `pairs` (E,2) of edge-adjacent faces may be passed to reuse them across calls."""
    if pairs is None:
        if faces is None:
            raise ValueError("split_connected needs the faces or their adjacent pairs")
        pairs, _ = face_adjacency(faces)
    return label_components(labels, pairs)


def compare(
    pred: np.ndarray, gt: np.ndarray, faces: np.ndarray | None = None, pairs: np.ndarray | None = None
) -> dict[str, float]:
    """All four metrics; with `faces` (or `pairs`) the prediction is split into connected parts first."""
    if faces is not None or pairs is not None:
        pred = split_connected(pred, faces, pairs)
    table = Contingency(pred, gt)
    gce, lce = consistency_errors(pred, gt, table)
    return {
        "rand_index_error": rand_index_error(pred, gt, table),
        "gce": gce,
        "lce": lce,
        "miou": miou(pred, gt, table),
    }
