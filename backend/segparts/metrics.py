"""Part-segmentation metrics, exactly as in ../shared/reference/metrics.md.

All functions compare a predicted per-face labelling P with a ground truth G of the same faces.
Counts are face counts. The Princeton protocol first splits every predicted segment into its
face-connected components (`split_connected`); `compare` does that when given the faces.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

from .engines.geometric.graph import dual_components, face_adjacency

METRIC_NAMES = ("rand_index_error", "gce", "lce", "miou")


def contingency(pred: np.ndarray, gt: np.ndarray) -> sparse.csr_matrix:
    """n_ij = number of faces with P = i and G = j (labels compacted to 0..K-1 first)."""
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} faces but ground truth has {gt.size}")
    _, p = np.unique(pred, return_inverse=True)
    _, g = np.unique(gt, return_inverse=True)
    n = sparse.coo_matrix((np.ones(p.size, np.int64), (p.ravel(), g.ravel())),
                          shape=(int(p.max(initial=-1)) + 1, int(g.max(initial=-1)) + 1))
    return n.tocsr()


def _pairs(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x * (x - 1.0) / 2.0


def rand_index_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """1 - Rand Index: the fraction of face pairs on which P and G disagree (same/different part)."""
    n_ij = contingency(pred, gt)
    n = n_ij.sum()
    if n < 2:
        return 0.0
    a = np.asarray(n_ij.sum(axis=1)).ravel()
    b = np.asarray(n_ij.sum(axis=0)).ravel()
    disagree = _pairs(a).sum() + _pairs(b).sum() - 2.0 * _pairs(n_ij.data).sum()
    return float(disagree / _pairs(np.array([n]))[0])


def consistency_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(GCE, LCE) of Martin et al., per face E(S1,S2,f) = |S1 \\ S2| / |S1|."""
    n_ij = contingency(pred, gt).tocoo()
    n = float(n_ij.sum())
    if n == 0:
        return 0.0, 0.0
    a = np.asarray(n_ij.sum(axis=1)).ravel()[n_ij.row]
    b = np.asarray(n_ij.sum(axis=0)).ravel()[n_ij.col]
    c = n_ij.data.astype(np.float64)
    e_pg = (a - c) / a  # every one of the c faces in cell (i, j) has this error
    e_gp = (b - c) / b
    gce = min((c * e_pg).sum(), (c * e_gp).sum()) / n
    lce = (c * np.minimum(e_pg, e_gp)).sum() / n
    return float(gce), float(lce)


def miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Class-agnostic mIoU: mean over GT parts (label -1 skipped) of the best IoU of any predicted part."""
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} faces but ground truth has {gt.size}")
    _, p = np.unique(pred, return_inverse=True)
    p = p.ravel()
    a = np.bincount(p)  # predicted part sizes over all faces (unlabelled GT faces count too)
    labelled = gt != -1
    if not labelled.any():
        return float("nan")
    gl, g = np.unique(gt[labelled], return_inverse=True)
    g = g.ravel()
    b = np.bincount(g)
    n_ij = sparse.coo_matrix((np.ones(g.size, np.int64), (p[labelled], g)), shape=(a.size, b.size)).tocsr().tocoo()  # sums duplicates
    iou = n_ij.data / (a[n_ij.row] + b[n_ij.col] - n_ij.data)
    best = np.zeros(b.size)
    np.maximum.at(best, n_ij.col, iou)
    return float(best.mean())


def split_connected(labels: np.ndarray, faces: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
    """Split each segment into its edge-connected components (the benchmark's pre-processing).

    `pairs` (E,2) of edge-adjacent faces may be passed to reuse them across calls."""
    labels = np.asarray(labels).ravel()
    if pairs is None:
        pairs, _ = face_adjacency(faces)
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    return dual_components(pairs[same], labels.size)


def compare(pred: np.ndarray, gt: np.ndarray, faces: np.ndarray | None = None,
            pairs: np.ndarray | None = None) -> dict[str, float]:
    """All four metrics; with `faces` (or `pairs`) the prediction is split into connected parts first."""
    if faces is not None or pairs is not None:
        pred = split_connected(pred, faces, pairs)
    gce, lce = consistency_errors(pred, gt)
    return {"rand_index_error": rand_index_error(pred, gt), "gce": gce, "lce": lce, "miou": miou(pred, gt)}
