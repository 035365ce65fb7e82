"""2D <-> 3D: pixels to faces, faces to visible pixels, multi-view masks to per-face labels,
3D clicks to the views that show them, and GeoSAM2's label post-processing.

Everything is vectorised over faces, samples and pixels (votes are counted with bincount or a
sort); the only Python loops run over views.

Lifting follows GeoSAM2's release: random barycentric samples per face are projected into each
view; a sample is visible there when the pixel is covered (alpha > 0.9) and its depth matches the
rendered depth within `depth_tolerance` (1e-3 of the longest bounding-box side, i.e. 1e-3 in
normalised units) - or, more robustly than the release, the pixel shows the sample's own face.
Each sample takes the most frequent label over the views that see it, each face the most frequent
label over its samples. Ties go to the smaller label. A sample is looked up in the pixel that
contains its projection (the release samples with grid_sample(align_corners=True), up to half a
pixel off). Invisible samples never vote; samples on unlabelled pixels abstain by default, or vote
for "nothing" with `unlabelled_votes=True`. GeoSAM2 paints the release's "no object" (999) as a
label of its own before lifting, so there it is a part like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import meshgraph
from .mesh import Mesh
from .proximity import nearest_face
from .render import CameraRig, Views, face_normals

UNLABELLED = -1


# ----------------------------------------------------------------------------- samples, visibility
@dataclass
class FaceSamples:
    """Random surface samples of every face and where each view sees them.

    Sample i belongs to face i // samples_per_face."""

    points: np.ndarray  # (P, 3) float64 world positions, P = F * samples_per_face
    lin: np.ndarray  # (N, P) int32 pixel index y * W + x (clamped into the image)
    visible: np.ndarray  # (N, P) bool
    samples_per_face: int
    width: int

    @property
    def pixel(self) -> np.ndarray:
        """(N, P, 2) int32 [x, y]; meaningful where visible."""
        return np.stack([self.lin % self.width, self.lin // self.width], axis=-1).astype(np.int32)

    @property
    def face(self) -> np.ndarray:
        return np.arange(len(self.points)) // self.samples_per_face

    def face_visible(self) -> np.ndarray:
        """(N, F) bool: some sample of the face is visible in the view."""
        n = self.visible.shape[0]
        return self.visible.reshape(n, -1, self.samples_per_face).any(axis=2)


def sample_faces(vertices: np.ndarray, faces: np.ndarray, samples_per_face: int = 5, seed: int = 0) -> np.ndarray:
    """(F * S, 3) uniform random points in each triangle (fixed seed), face-major order."""
    rng = np.random.default_rng(seed)
    f = len(faces)
    u = rng.random((f, samples_per_face, 1))
    v = rng.random((f, samples_per_face, 1))
    flip = (u + v) > 1.0  # reflect into the triangle
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    tri = vertices[faces]  # (F, 3, 3)
    pts = tri[:, None, 0] + u * (tri[:, None, 1] - tri[:, None, 0]) + v * (tri[:, None, 2] - tri[:, None, 0])
    return pts.reshape(-1, 3)


def _extent(vertices: np.ndarray) -> float:
    span = float((vertices.max(axis=0) - vertices.min(axis=0)).max())
    return span if span > 0 else 1.0


def project_to_views(
    points,
    point_face,
    rig: CameraRig,
    views: Views,
    depth_tolerance: float = 1e-3,
    alpha_threshold: float = 0.9,
    extent: float = 1.0,
):
    """Project world points (with the face each lies on, or -1) into every view.

    Visible: inside the image, in front of the camera, alpha > threshold, and the rendered depth
    matches within depth_tolerance x extent or the pixel shows the point's own face.
    Returns (lin (N, P) int32 pixel index y * W + x, visible (N, P) bool, depth (N, P) float32)."""
    n, h, w = views.face_id.shape
    p = len(points)
    lin_out = np.empty((n, p), dtype=np.int32)
    visible = np.empty((n, p), dtype=bool)
    depth_out = np.empty((n, p), dtype=np.float32)
    tol = np.float32(depth_tolerance * extent)
    # structure of arrays in float32, centred: a few fused multiply-adds per view and no BLAS calls
    center = points.mean(axis=0) if p else np.zeros(3)
    x, y, z = np.ascontiguousarray((points - center).T, dtype=np.float32)
    point_face = np.asarray(point_face)
    shift = np.eye(4)
    shift[:3, 3] = center
    for k in range(n):
        m = (rig.view_proj[k] @ shift).astype(np.float32)
        cz = (rig.world_to_cam[k] @ shift)[2].astype(np.float32)
        cw = m[3, 0] * x + m[3, 1] * y + m[3, 2] * z + m[3, 3]
        col = np.floor(((m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + m[0, 3]) / cw + 1.0) * (0.5 * w))
        row = np.floor((1.0 - (m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + m[1, 3]) / cw) * (0.5 * h))
        depth = -(cz[0] * x + cz[1] * y + cz[2] * z + cz[3])
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (depth > 0)
        lin = (np.clip(row, 0, h - 1) * w + np.clip(col, 0, w - 1)).astype(np.int32)
        fid = views.face_id[k].reshape(-1)[lin]
        ok = inside & (fid >= 0)
        if views.alpha is not None:
            ok &= views.alpha[k].reshape(-1)[lin] > alpha_threshold
        same = fid == point_face
        if views.depth is not None:
            same |= np.abs(views.depth[k].reshape(-1)[lin] - depth) < tol
        visible[k] = ok & same
        lin_out[k] = lin
        depth_out[k] = depth
    return lin_out, visible, depth_out


def face_visible_samples(
    mesh: Mesh,
    rig: CameraRig,
    views: Views,
    samples_per_face: int = 5,
    seed: int = 0,
    depth_tolerance: float = 1e-3,
    alpha_threshold: float = 0.9,
) -> FaceSamples:
    """Sample every face and find, per view, the pixel of each sample and whether it is visible."""
    _check_views(rig, views)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    points = sample_faces(vertices, faces, samples_per_face, seed)
    face = np.repeat(np.arange(len(faces), dtype=np.int32), samples_per_face)
    lin, visible, _ = project_to_views(points, face, rig, views, depth_tolerance, alpha_threshold, _extent(vertices))
    return FaceSamples(points, lin, visible, samples_per_face, rig.width)


def _check_views(rig: CameraRig, views: Views):
    n, h, w = views.face_id.shape
    if (n, h, w) != (rig.n_views, rig.height, rig.width):
        raise ValueError(f"views are {n}x{h}x{w} but the rig has {rig.n_views} views of {rig.height}x{rig.width}")


# ----------------------------------------------------------------------------- voting
def mode_by_group(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Most frequent non-negative value per group (ties: the smaller value); -1 for groups without one."""
    groups = np.asarray(groups, dtype=np.int64).ravel()
    values = np.asarray(values).ravel()
    keep = values >= 0
    groups, values = groups[keep], values[keep]
    out = np.full(n_groups, UNLABELLED, dtype=np.int64)
    if len(values) == 0:
        return out
    top = int(values.max()) + 1
    if top * n_groups <= 32_000_000:  # small labels: count them directly, no sort
        uniq, inv = np.arange(top), values.astype(np.int64)
    else:
        uniq, inv = np.unique(values, return_inverse=True)
    k = len(uniq)
    if n_groups * k <= 32_000_000:
        counts = np.bincount(groups * k + inv, minlength=n_groups * k).reshape(n_groups, k)
        best = counts.argmax(axis=1)
        has = counts[np.arange(n_groups), best] > 0
        out[has] = uniq[best[has]]
        return out
    key, cnt = np.unique(groups * k + inv, return_counts=True)
    g, val = key // k, key % k
    order = np.lexsort((val, -cnt, g))  # per group: most votes first, then the smaller value
    first = order[np.r_[True, g[order][1:] != g[order][:-1]]]
    out[g[first]] = uniq[val[first]]
    return out


def paint_masks(object_masks, shape=None, first=()) -> np.ndarray:
    """Flatten overlapping per-object masks into label images, as GeoSAM2 paints them.

    `object_masks`: {object id: (N, H, W) bool}. Objects are painted from the largest (total area
    over all views) to the smallest, so smaller parts stay visible on top of larger ones; ids in
    `first` (prompted objects) are painted last, on top of everything. Returns (N, H, W) int32,
    -1 where no object."""
    items = list(object_masks.items())
    if not items:
        if shape is None:
            raise ValueError("paint_masks needs masks or a shape")
        return np.full(shape, UNLABELLED, dtype=np.int32)
    first = set(first)
    areas = {oid: int(np.count_nonzero(m)) for oid, m in items}
    order = sorted((oid for oid, _ in items), key=lambda o: (o in first, -areas[o]))
    out = np.full(np.shape(items[0][1]), UNLABELLED, dtype=np.int32)
    for oid in order:  # one numpy assignment per object, not per face
        if oid < 0:
            raise ValueError(f"object ids must be non-negative, got {oid}")
        out[np.asarray(object_masks[oid], dtype=bool)] = oid
    return out


def lift_masks(
    mesh: Mesh,
    rig: CameraRig,
    views: Views,
    masks: np.ndarray,
    samples_per_face: int = 5,
    seed: int = 0,
    samples: FaceSamples | None = None,
    depth_tolerance: float = 1e-3,
    unlabelled_votes: bool = False,
) -> np.ndarray:
    """Label images of every view (N, H, W) int32 (-1 = none) -> (F,) int32 face labels (-1 = unseen).

    Pass `samples` (from face_visible_samples) to reuse the projection across several liftings.
    `unlabelled_votes`: a visible sample on an unlabelled pixel votes for "no label" (as the
    release's 999) instead of abstaining; where "no label" wins, the face stays -1."""
    masks = np.asarray(masks)
    if masks.shape != views.face_id.shape:
        raise ValueError(f"masks must have shape {views.face_id.shape} (views, H, W), got {masks.shape}")
    if not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(f"masks must be integer labels (-1 = none), got dtype {masks.dtype}")
    if samples is None:
        samples = face_visible_samples(mesh, rig, views, samples_per_face, seed, depth_tolerance)
    nothing = int(max(masks.max(initial=-1), -1)) + 1  # an id above every label stands for "none"
    sample_label = _vote_across_views(samples, masks.reshape(len(masks), -1), nothing if unlabelled_votes else None)
    face_label = mode_by_group(samples.face, sample_label, mesh.n_faces)
    face_label[face_label == nothing] = UNLABELLED
    return face_label.astype(np.int32)


def _vote_across_views(samples: FaceSamples, flat_masks: np.ndarray, nothing: int | None) -> np.ndarray:
    """(P,) most frequent label of each sample over the views that see it (-1: no vote).
    `nothing`: the id unlabelled pixels vote for, or None to let them abstain."""
    n, p = samples.visible.shape
    k = int(max(flat_masks.max(initial=-1), -1)) + 2
    if p * k > 64_000_000 or n > 255:  # many labels: count with a sort instead of a table
        view, sample = np.nonzero(samples.visible)
        votes = flat_masks[view, samples.lin[view, sample]].astype(np.int64)
        if nothing is not None:
            votes[votes < 0] = nothing
        return mode_by_group(sample, votes, p)
    counts = np.zeros((p, k), dtype=np.uint8)  # one row per sample, one count per label
    for v in range(n):
        seen = np.flatnonzero(samples.visible[v])
        label = flat_masks[v][samples.lin[v, seen]]
        if nothing is not None:
            label = np.where(label < 0, nothing, label)
        keep = label >= 0
        counts[seen[keep], label[keep]] += 1  # samples are unique within a view
    best = counts.argmax(axis=1)  # first maximum: the smaller label wins ties
    return np.where(counts.max(axis=1) > 0, best, UNLABELLED)


# ----------------------------------------------------------------------------- pixels and clicks
def pixel_to_face(views: Views, view_index: int, x: int, y: int) -> int:
    """Face seen at pixel (x = column, y = row) of a view; -1 for background or outside."""
    n, h, w = views.face_id.shape
    if not (0 <= view_index < n and 0 <= x < w and 0 <= y < h):
        return -1
    return int(views.face_id[view_index, int(y), int(x)])


def visible_pixel_counts(views: Views, n_faces: int) -> np.ndarray:
    """(N, F) int32: how many pixels of each view show each face (its visible projected area)."""
    n = views.n_views
    ids = views.face_id.reshape(n, -1)
    out = np.zeros((n, n_faces), dtype=np.int32)
    for k in range(n):
        fg = ids[k][ids[k] >= 0]
        out[k] = np.bincount(fg, minlength=n_faces)[:n_faces]
    return out


def face_pixels(views: Views, face: int) -> list[np.ndarray]:
    """Per view, the (K, 2) [x, y] pixels that show `face`."""
    out = []
    for k in range(views.n_views):
        ys, xs = np.nonzero(views.face_id[k] == face)
        out.append(np.stack([xs, ys], axis=1).astype(np.int32))
    return out


def views_for_click(
    mesh: Mesh, rig: CameraRig, views: Views, face: int | None = None, point=None, depth_tolerance: float = 1e-3
) -> list[tuple[int, tuple[int, int]]]:
    """Views where a 3D click is visible, best first, with its pixel (x, y) there.

    A face click ranks views by the face's projected area in pixels (which grows with facing angle
    and closeness); when the face's centroid is hidden but part of the face shows, the shown pixel
    nearest the projected centroid is returned. A point click (optionally with its face) ranks by
    |cos(normal, view ray)| / depth^2, the projected area of a small patch around it."""
    _check_views(rig, views)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if face is None and point is None:
        raise ValueError("views_for_click needs a face or a point")
    if face is not None and not (0 <= int(face) < len(faces)):
        raise ValueError(f"face {face} out of range [0, {len(faces)})")
    p = vertices[faces[face]].mean(axis=0) if point is None else np.asarray(point, dtype=np.float64).reshape(3)
    # a point click is matched to the face it lies on, so visibility can compare face ids
    face_of_point = nearest_face(mesh, p) if face is None else int(face)
    lin, visible, depth = project_to_views(
        p[None], np.array([face_of_point]), rig, views, depth_tolerance, 0.5, _extent(vertices)
    )
    pixel = np.stack([lin % rig.width, lin // rig.width], axis=-1)
    ranked = []
    if face is not None:
        tri = vertices[faces[face]]
        for k in range(rig.n_views):
            px, _ = rig.project(tri, k)
            (ax, ay), (bx, by) = px[1] - px[0], px[2] - px[0]
            area = 0.5 * abs(ax * by - ay * bx)  # numpy 2 refuses np.cross of 2-D vectors
            if visible[k, 0]:
                ranked.append((area, k, (int(pixel[k, 0, 0]), int(pixel[k, 0, 1]))))
                continue
            ys, xs = np.nonzero(views.face_id[k] == face)
            if len(xs):
                target = px.mean(axis=0)
                j = int(np.argmin((xs + 0.5 - target[0]) ** 2 + (ys + 0.5 - target[1]) ** 2))
                ranked.append((min(area, float(len(xs))), k, (int(xs[j]), int(ys[j]))))
    else:
        normal = face_normals(vertices, faces[[face_of_point]])[0]
        for k in range(rig.n_views):
            if not visible[k, 0]:
                continue
            ray = p - rig.camera_positions[k] if rig.is_perspective()[k] else rig.forward[k]
            cos = abs(float(normal @ ray)) / max(float(np.linalg.norm(ray)), 1e-12)
            ranked.append((cos / max(float(depth[k, 0]), 1e-12) ** 2, k, (int(pixel[k, 0, 0]), int(pixel[k, 0, 1]))))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    return [(k, xy) for _, k, xy in ranked]


# ----------------------------------------------------------------------------- post-processing
def face_adjacency(mesh: Mesh, weld: bool = True) -> np.ndarray:
    """(E, 2) pairs of faces sharing an edge. With `weld`, vertices at identical positions count as
    one (meshes split at UV seams stay connected). Faces around a non-manifold edge are chained in
    face order."""
    vertex_ids = meshgraph.exact_vertex_ids(mesh.vertices) if weld else None
    return meshgraph.face_adjacency(mesh.faces, vertex_ids, chain="face")[0]


def face_areas(mesh: Mesh) -> np.ndarray:
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def postprocess_labels(
    mesh: Mesh,
    labels,
    min_fraction: float = 0.02,
    fill_iterations: int = 64,
    k_nearest: int = 3,
    split_disconnected: bool = True,
    adjacency: np.ndarray | None = None,
    nearest_ties: str = "nearest",
) -> np.ndarray:
    """GeoSAM2's clean-up of lifted face labels (-1 = unlabelled), each step optional:
    1. unlabel face-connected same-label components smaller than `min_fraction` x the largest
       component both in face count and in area (0 disables);
    2. `fill_iterations` rounds of majority fill: unlabelled faces take the most common label of
       their labelled neighbours;
    3. faces still unlabelled take the mode of the `k_nearest` labelled face centroids (0 disables;
       ties go to the nearest, or with `nearest_ties="smallest"` to the smallest label, as the
       release's torch.mode);
    4. `split_disconnected`: a label's disconnected pieces get their own labels (the largest piece
       keeps the label).
    Returns (F,) int32; all -1 stays all -1."""
    if nearest_ties not in ("nearest", "smallest"):
        raise ValueError(f"nearest_ties must be 'nearest' or 'smallest', got {nearest_ties!r}")
    labels = np.asarray(labels).astype(np.int64).copy()
    if labels.shape != (mesh.n_faces,):
        raise ValueError(f"labels must have shape ({mesh.n_faces},), got {labels.shape}")
    if (labels < 0).all():
        return labels.astype(np.int32)
    adj = face_adjacency(mesh) if adjacency is None else adjacency
    if min_fraction > 0:
        labels = _remove_small_components(mesh, labels, adj, min_fraction)
    if fill_iterations > 0:
        labels = _majority_fill(labels, adj, fill_iterations)
    if k_nearest > 0 and (labels < 0).any():
        labels = _nearest_fill(mesh, labels, k_nearest, nearest_ties)
    if split_disconnected:
        labels = _split_components(labels, adj)
    return labels.astype(np.int32)


def _remove_small_components(mesh, labels, adj, fraction):
    comp = meshgraph.label_components(labels, adj, unlabelled_apart=True)
    labelled = labels >= 0
    size = np.bincount(comp[labelled], minlength=comp.max() + 1)
    area = np.bincount(comp[labelled], weights=face_areas(mesh)[labelled], minlength=comp.max() + 1)
    small = (size < fraction * size.max()) & (area < fraction * area.max())
    out = labels.copy()
    out[labelled & small[comp]] = UNLABELLED
    return out


def _majority_fill(labels, adj, iterations):
    both = np.concatenate([adj, adj[:, ::-1]])  # directed: (face to fill, neighbour)
    for _ in range(iterations):
        unl = labels < 0
        e = both[unl[both[:, 0]] & ~unl[both[:, 1]]]
        if len(e) == 0:
            break
        target, inv = np.unique(e[:, 0], return_inverse=True)
        labels[target] = mode_by_group(inv, labels[e[:, 1]], len(target))
    return labels


def _nearest_fill(mesh, labels, k, ties="nearest"):
    from scipy.spatial import cKDTree

    centroids = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)].mean(axis=1)
    known = np.flatnonzero(labels >= 0)
    unknown = np.flatnonzero(labels < 0)
    k = min(k, len(known))
    _, idx = cKDTree(centroids[known]).query(centroids[unknown], k=k)
    near = labels[known][idx.reshape(len(unknown), k)]  # (U, k), nearest first
    votes = (near[:, :, None] == near[:, None, :]).sum(axis=2)
    if ties == "smallest":  # among the most voted, the smallest label: rank by (-votes, label)
        most = votes == votes.max(axis=1, keepdims=True)
        best = np.argmin(np.where(most, near, np.iinfo(np.int64).max), axis=1)
        labels[unknown] = near[np.arange(len(unknown)), best]
    else:
        labels[unknown] = near[np.arange(len(unknown)), votes.argmax(axis=1)]  # first max = nearest tie
    return labels


def _split_components(labels, adj):
    comp = meshgraph.label_components(labels, adj, unlabelled_apart=True)
    n_comp = comp.max() + 1
    size = np.bincount(comp, minlength=n_comp)
    comp_label = np.full(n_comp, UNLABELLED, dtype=np.int64)
    comp_label[comp] = labels
    order = np.lexsort((np.arange(n_comp), -size, comp_label))  # per label, largest piece first
    ordered_labels = comp_label[order]
    keeper = np.r_[True, ordered_labels[1:] != ordered_labels[:-1]]
    extra = order[~keeper & (ordered_labels >= 0)]
    extra = extra[np.lexsort((extra, -size[extra]))]  # new ids by decreasing size
    new_label = comp_label.copy()
    new_label[extra] = labels.max() + 1 + np.arange(len(extra))
    return new_label[comp]
