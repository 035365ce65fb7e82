"""SAMPart3D's per-object, scale-conditioned grouping field (stage 2 of the release).

Points: area-weighted surface samples, normalised and grid-sampled as the release's transform
chain (NormalizeCoord, CenterShift(z), GridSample 0.01 keeping one random point per voxel and the
inverse map, CenterShift(xy), NormalizeColor). Masks of rendered views give pixel groups; each
group's 3D scale is ||10 std(points)||, and a quantile transform (to a normal distribution) of the
scales conditions two bias-free MLPs. The contrastive loss pulls together pixels of the same group
and pushes apart pixels of different groups, pairs only within one image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.spatial import cKDTree

N_POINTS = 15000
GRID_SIZE = 0.01
EXTENT_SCALE = 10.0
MAX_SCALE = 2.0
MAPPING_DISTANCE = 0.03
FEATURE_DIM = 384
RAW_DIM = 9
UNTEXTURED_GREY = 102  # trimesh's default face colour: what the release's points get without colours
ITERATIONS = {"paper": 5000, "fast": 800}


class GroupingError(ValueError):
    """Input the grouping field cannot learn from (no usable masks, degenerate mesh, ...)."""


# ------------------------------------------------------------------------------------ points
@dataclass
class ObjectPoints:
    """Surface samples and their grid-sampled subset (the backbone's and the field's points)."""

    sample_xyz: np.ndarray  # (P, 3) samples in the render frame (mesh normalised for rendering)
    sample_face: np.ndarray  # (P,) face of each sample
    inverse: np.ndarray  # (P,) grid point of each sample
    grid_xyz: np.ndarray  # (M, 3) grid points in the render frame (pixel -> point mapping)
    grid_coord: np.ndarray  # (M, 3) int64 voxel coordinates (backbone input)
    feat: np.ndarray  # (M, 9) float32: coord, normal, colour in [-1, 1] (backbone + pos_net input)

    @property
    def n_grid(self) -> int:
        return int(self.grid_coord.shape[0])


def to_y_up(xyz: np.ndarray) -> np.ndarray:
    """Blender (Z up) -> glTF (Y up), the frame the release's backbone saw (trimesh-loaded .glb)."""
    return np.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], axis=1)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform samples: (points (count, 3), face index (count,))."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = float(area.sum())
    if not np.isfinite(total) or total <= 0:
        raise GroupingError("the mesh has no surface area (all faces degenerate)")
    rng = np.random.default_rng(seed)
    face = np.searchsorted(np.cumsum(area) / total, rng.random(count), side="right").clip(0, len(faces) - 1)
    u, v = rng.random((2, count, 1))
    flip = (u + v) > 1.0
    u, v = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - v, v)
    t = tri[face]
    return t[:, 0] + u * (t[:, 1] - t[:, 0]) + v * (t[:, 2] - t[:, 0]), face


def sample_colors(appearance, vertices: np.ndarray, faces: np.ndarray, xyz: np.ndarray, face: np.ndarray) -> np.ndarray:
    """(P, 3) uint8 colour of each surface sample as the release reads it (trimesh): a base-colour
    texture is sampled at the sample's UV, bilinearly (`uv_to_interpolated_color`); otherwise the
    face's colour; a mesh without colours gets trimesh's default grey 102 (-0.2 after scaling)."""
    if appearance is None:
        return np.full((len(face), 3), UNTEXTURED_GREY, np.uint8)
    if appearance.texture is not None and appearance.uv is not None:
        from PIL import Image
        from trimesh.triangles import points_to_barycentric
        from trimesh.visual.color import uv_to_interpolated_color

        uv = np.asarray(appearance.uv, dtype=np.float64)
        corner_uv = uv[face] if uv.ndim == 3 else uv[np.asarray(faces)[face]]  # (P, 3, 2)
        weights = points_to_barycentric(vertices[np.asarray(faces)[face]], xyz)
        texture = np.asarray(appearance.texture)
        if texture.dtype != np.uint8:
            texture = np.clip(np.rint(texture * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(texture[..., :3]))
        return uv_to_interpolated_color(np.einsum("pk,pkc->pc", weights, corner_uv), image)[:, :3]
    from ...render import face_base_colors

    return face_base_colors(appearance, faces, len(vertices))[face, :3]


def prepare_points(
    render_vertices: np.ndarray,
    faces: np.ndarray,
    face_colors: np.ndarray | None = None,
    n_points: int = N_POINTS,
    seed: int = 0,
    appearance=None,
) -> ObjectPoints:
    """Samples of the (render-normalised, Z-up) mesh and the release's transform chain on them.

    Colour (3 of the backbone's 9 input channels): `face_colors` (F, 3) uint8 per face when given,
    else sampled per point from `appearance` (a `segparts.appearance.Appearance`, see `sample_colors`)."""
    xyz, face = sample_surface(render_vertices, faces, n_points, seed)
    tri = render_vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    if face_colors is not None:
        color = np.asarray(face_colors, float)[face, :3]
    else:
        color = sample_colors(appearance, render_vertices, faces, xyz, face).astype(float)

    coord = to_y_up(xyz)
    coord = coord - coord.mean(axis=0)  # NormalizeCoord: unit sphere around the centroid
    coord /= max(float(np.linalg.norm(coord, axis=1).max()), 1e-12)
    lo, hi = coord.min(axis=0), coord.max(axis=0)  # CenterShift(apply_z=True)
    coord = coord - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])

    voxel = np.floor(coord / GRID_SIZE).astype(np.int64)  # GridSample
    voxel -= voxel.min(axis=0)
    keys, inverse, counts = np.unique(voxel, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    by_voxel = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pick = by_voxel[starts + np.random.default_rng(seed + 1).integers(0, counts.max(), len(counts)) % counts]

    grid_coord_xyz = coord[pick]
    lo, hi = grid_coord_xyz.min(axis=0), grid_coord_xyz.max(axis=0)  # CenterShift(apply_z=False)
    grid_coord_xyz = grid_coord_xyz - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0])
    feat = np.concatenate([grid_coord_xyz, to_y_up(normal[face[pick]]), color[pick] / 127.5 - 1.0], axis=1)
    return ObjectPoints(xyz, face, inverse.astype(np.int64), xyz[pick], keys.astype(np.int64), feat.astype(np.float32))


# ------------------------------------------------------------------------------------ views
@dataclass
class ViewGroups:
    """All views' supervision, flattened over the valid pixels of every view."""

    pixel_start: np.ndarray  # (N,) first row of each view in the flat arrays
    pixel_count: np.ndarray  # (N,) valid pixels per view
    point: np.ndarray  # (T,) grid point of each valid pixel
    keys: np.ndarray  # (T, L) global mask ids per pixel, small -> large, -1 padded
    cdf: np.ndarray  # (T, L) group-sampling CDF (1.0 on padding)
    mask_scale: np.ndarray  # (G,) 3D scale of every kept mask (global ids)
    mask_view: np.ndarray  # (G,) view of every kept mask
    view_depth: np.ndarray | None = None  # (N,) most kept masks on one pixel of each view (the release's key width)
    n_masks_in: int = 0  # after the foreground/background filter
    n_masks_kept: int = 0  # after the scale filter
    n_masks_raw: int = 0  # as the mask source gave them


def pixel_to_point(points: ObjectPoints, pixel_xyz: np.ndarray, tree: cKDTree | None = None) -> np.ndarray:
    """Nearest grid point of each pixel's surface position, -1 when farther than 0.03."""
    tree = tree or cKDTree(points.grid_xyz)
    dist, idx = tree.query(pixel_xyz, k=1)
    return np.where(dist < MAPPING_DISTANCE, idx, -1).astype(np.int64)


def erode(masks: np.ndarray) -> np.ndarray:
    """The release's denoising: keep pixels whose 3x3 neighbourhood has at least 5 mask pixels."""
    if len(masks) == 0:
        return masks.astype(bool)
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None]
    box = F.conv2d(m, torch.ones(1, 1, 3, 3), padding=1)
    return (box[:, 0] >= 5).numpy()


def reference_mask_filter(masks: list[np.ndarray], foreground: np.ndarray) -> list[np.ndarray]:
    """Sort small -> large; drop masks touching no foreground or covering > 10% of the background."""
    background = ~foreground
    n_bg = max(int(background.sum()), 1)
    kept = []
    for m in sorted((np.asarray(m, bool) for m in masks), key=lambda m: int(m.sum())):
        if (m & foreground).sum() == 0 or (m & background).sum() / n_bg > 0.1:
            continue
        kept.append(m)
    return kept


def mask_scales(masks: np.ndarray, pixel_xyz: np.ndarray) -> np.ndarray:
    """||10 std(points)|| per mask over its valid pixels (NaN for masks with < 2 pixels)."""
    scales = np.full(len(masks), np.nan)
    for i, m in enumerate(masks):
        pts = pixel_xyz[m]
        if len(pts) >= 2:
            scales[i] = np.linalg.norm(pts.std(axis=0, ddof=1) * EXTENT_SCALE)
    return scales


def build_view_groups(
    points: ObjectPoints,
    pixel_xyz: list[np.ndarray],
    foreground: list[np.ndarray],
    masks_per_view: list[list[np.ndarray]],
) -> ViewGroups:
    """Per view: pixel -> point mapping, filtered/eroded masks, their scales, per-pixel group lists."""
    tree = cKDTree(points.grid_xyz)
    starts, counts, point_rows, key_rows, cdf_rows, scales, views, depths = [], [], [], [], [], [], [], []
    n_in = n_kept = n_raw = 0
    offset = total = 0
    for v, (xyz, fg, masks) in enumerate(zip(pixel_xyz, foreground, masks_per_view)):
        mapping = np.full(fg.shape, -1, dtype=np.int64)
        mapping[fg] = pixel_to_point(points, xyz[fg], tree)
        valid = mapping >= 0
        n_raw += len(masks)
        masks = reference_mask_filter(masks, fg)
        n_in += len(masks)
        eroded = erode(np.stack(masks)) if masks else np.zeros((0,) + fg.shape, bool)
        cover = eroded[:, valid]  # (K, T_v)
        s = mask_scales(cover, xyz[valid])
        keep = s < MAX_SCALE  # NaN compares False, as in the release
        cover, s = cover[keep], s[keep]
        depths.append(int(eroded[keep].sum(axis=0).max()) if keep.any() else 0)  # over all pixels, as the release
        n_kept += len(s)
        keys, cdf = _pixel_groups(cover)
        starts.append(total)
        counts.append(int(valid.sum()))
        point_rows.append(mapping[valid])
        key_rows.append(np.where(keys >= 0, keys + offset, -1))
        cdf_rows.append(cdf)
        scales.append(s)
        views.append(np.full(len(s), v))
        offset += len(s)
        total += int(valid.sum())
    width = max(k.shape[1] for k in key_rows)
    keys = np.concatenate([np.pad(k, ((0, 0), (0, width - k.shape[1])), constant_values=-1) for k in key_rows])
    cdf = np.concatenate([np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=1.0) for c in cdf_rows])
    return ViewGroups(
        np.array(starts),
        np.array(counts),
        np.concatenate(point_rows),
        keys,
        cdf.astype(np.float32),
        np.concatenate(scales),
        np.concatenate(views),
        np.array(depths),
        n_in,
        n_kept,
        n_raw,
    )


def _pixel_groups(cover: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel the masks containing it in increasing mask order (= increasing area), and the
    release's CDF over those levels: weights log(area share), so smaller masks are drawn more."""
    n_masks, n_pix = cover.shape
    if n_masks == 0 or not cover.any():
        return np.full((n_pix, 1), -1, np.int64), np.ones((n_pix, 1))
    depth = int(cover.sum(axis=0).max())
    ids = np.where(cover, np.arange(n_masks, dtype=np.int32)[:, None], np.int32(n_masks))
    keys = np.sort(ids, axis=0)[:depth].T  # (T, L)
    keys = np.where(keys == n_masks, -1, keys).astype(np.int64)
    area = cover.sum(axis=1).astype(np.float64)
    prob = area / area.sum()
    with np.errstate(divide="ignore"):
        log_prob = np.where(keys >= 0, np.log(prob[np.maximum(keys, 0)]), 0.0)
    log_prob = np.where(np.isinf(log_prob), 0.0, log_prob)
    log_prob = log_prob / (log_prob.sum(axis=1, keepdims=True) + 1e-6)
    cdf = np.cumsum(log_prob, axis=1)
    cdf[keys < 0] = 1.0
    return keys, cdf


# ------------------------------------------------------------------------------------ scales
@dataclass
class ScaleTransform:
    """Quantile transform of mask scales to a normal distribution (the release's conditioning)."""

    quantiles: np.ndarray
    references: np.ndarray

    @classmethod
    def fit(cls, scales: np.ndarray) -> ScaleTransform:
        from sklearn.preprocessing import QuantileTransformer

        s = scales[(scales > 0) & (scales < MAX_SCALE)]
        if len(s) == 0:
            raise GroupingError("no mask has a usable 3D scale (all empty, degenerate or larger than 2)")
        qt = QuantileTransformer(output_distribution="normal", n_quantiles=min(1000, len(s)))
        qt.fit(s.reshape(-1, 1))
        return cls(qt.quantiles_[:, 0].copy(), qt.references_.copy())

    def _sklearn(self):
        from sklearn.preprocessing import QuantileTransformer

        qt = QuantileTransformer(output_distribution="normal", n_quantiles=len(self.quantiles))
        qt.n_quantiles_ = len(self.quantiles)
        qt.quantiles_ = self.quantiles.reshape(-1, 1)
        qt.references_ = self.references
        qt.n_features_in_ = 1
        return qt

    def __call__(self, scales: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "_qt"):
            self._qt = self._sklearn()
        out = self._qt.transform(scales.detach().cpu().numpy().reshape(-1, 1).astype(np.float64))
        return torch.from_numpy(out.astype(np.float32)).to(scales.device).view_as(scales)

    def to_dict(self) -> dict:
        return {"quantiles": self.quantiles.tolist(), "references": self.references.tolist()}


# ------------------------------------------------------------------------------------ network
def mlp(n_in: int, n_hidden_layers: int, width: int = 384, n_out: int = 384) -> nn.Sequential:
    """tiny-cuda-nn's CutlassMLP as the release configures it: ReLU, no biases, linear output."""
    layers: list[nn.Module] = [nn.Linear(n_in, width, bias=False), nn.ReLU()]
    for _ in range(n_hidden_layers - 1):
        layers += [nn.Linear(width, width, bias=False), nn.ReLU()]
    layers.append(nn.Linear(width, n_out, bias=False))
    return nn.Sequential(*layers)


class GroupingField(nn.Module):
    def __init__(self, backbone_dim: int = FEATURE_DIM, raw_dim: int = RAW_DIM, out_dim: int = FEATURE_DIM):
        super().__init__()
        self.instance_net = mlp(backbone_dim + 1, 6, 384, out_dim)
        self.pos_net = mlp(raw_dim + 1, 4, 384, out_dim)

    def forward(self, backbone_feat: torch.Tensor, raw_feat: torch.Tensor, q_scale: torch.Tensor) -> torch.Tensor:
        a = self.instance_net(torch.cat([backbone_feat, q_scale], dim=-1))
        b = self.pos_net(torch.cat([raw_feat, q_scale], dim=-1))
        return a / (a.norm(dim=-1, keepdim=True) + 1e-5) + b / (b.norm(dim=-1, keepdim=True) + 1e-5)


# ------------------------------------------------------------------------------------ training
@dataclass
class TrainConfig:
    iterations: int = ITERATIONS["paper"]
    views_per_batch: int = 90
    pixels_per_view: int = 256
    lr: float = 1e-4
    weight_decay: float = 1e-8
    seed: int = 0
    check_every: int = 10  # progress + cancellation interval (iterations)


@dataclass
class Batch:
    point: torch.Tensor  # (B,) grid point per pixel
    mask_id: torch.Tensor  # (B,) group id, -1 = none
    scale: torch.Tensor  # (B, 1)


def sample_batch(groups: ViewGroups, cfg: TrainConfig, rng: np.random.Generator) -> Batch:
    """The release's pixel sampling: views with replacement, valid pixels uniformly, one shared
    uniform draw picks each pixel's group level through its CDF and another interpolates the scale
    between that group's and the next smaller group's."""
    usable = np.flatnonzero(groups.pixel_count > 0)
    views = usable[rng.integers(0, len(usable), cfg.views_per_batch)]
    count = groups.pixel_count[views][:, None]
    draw = rng.integers(0, np.iinfo(np.int64).max, (len(views), cfg.pixels_per_view)) % count
    few = count[:, 0] < cfg.pixels_per_view  # the release repeats all pixels in order instead
    if few.any():
        draw[few] = np.arange(cfg.pixels_per_view)[None] % count[few]
    rows = (groups.pixel_start[views][:, None] + draw).reshape(-1)

    u_level, u_scale = rng.random(2)
    keys, cdf = groups.keys[rows], groups.cdf[rows]
    drawn = (u_level > cdf).sum(axis=1)  # the release's `random_index`
    level = np.minimum(drawn, keys.shape[1] - 1)
    mask = keys[np.arange(len(rows)), level]
    smaller = keys[np.arange(len(rows)), np.maximum(level - 1, 0)]
    s_mask = (
        np.where(mask >= 0, groups.mask_scale[np.maximum(mask, 0)], 0.0)
        if len(groups.mask_scale)
        else np.zeros(len(rows))
    )
    s_smaller = (
        np.where(smaller >= 0, groups.mask_scale[np.maximum(smaller, 0)], 0.0) if len(groups.mask_scale) else s_mask
    )
    scale = np.where(level == 0, s_mask * u_scale, s_smaller + (s_mask - s_smaller) * u_scale)
    if groups.view_depth is not None:
        # views whose pixels lie in at most one mask: the release takes that mask whatever was
        # drawn (its key array has one column), at its full scale unless the draw was level 0.
        # A view with exactly one mask has CDF 0 (log of share 1), so every draw is past it.
        flat = np.repeat(groups.view_depth[views] <= 1, cfg.pixels_per_view)
        first = keys[:, 0]
        s_first = (
            np.where(first >= 0, groups.mask_scale[np.maximum(first, 0)], 0.0)
            if len(groups.mask_scale)
            else np.zeros(len(rows))
        )
        mask = np.where(flat, first, mask)
        scale = np.where(flat, np.where(drawn == 0, s_first * u_scale, s_first), scale)
    return Batch(
        torch.from_numpy(groups.point[rows]),
        torch.from_numpy(mask.astype(np.int64)),
        torch.from_numpy(scale.astype(np.float32)).view(-1, 1),
    )


def contrastive_loss(
    feat: torch.Tensor, feat_larger: torch.Tensor, mask_id: torch.Tensor, n_images: int, margin: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """The release's loss on per-image blocks (pairs never cross images), upper triangle only.

    positives (i < j, same group): mean distance, at the pixel's scale and again at a larger
    scale; negatives: mean relu(margin - distance); each weighted by its share of valid pairs."""
    ids = mask_id.view(n_images, -1)
    k = ids.shape[1]
    valid = ids >= 0
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=ids.device))
    block = upper & valid[:, :, None] & valid[:, None, :]
    same = ids[:, :, None] == ids[:, None, :]
    eye = torch.eye(k, dtype=torch.bool, device=ids.device)
    positive = same & block & ~eye
    negative = ~same & block
    n_block = block.sum().clamp(min=1)

    def mean_over(x, m):
        return x[m].mean().nan_to_num(0.0) if m.any() else x.new_zeros(())

    dist = torch.cdist(feat.view(n_images, k, -1), feat.view(n_images, k, -1))
    dist_larger = torch.cdist(feat_larger.view(n_images, k, -1), feat_larger.view(n_images, k, -1))
    w_pos, w_neg = positive.sum() / n_block, negative.sum() / n_block
    loss1 = mean_over(dist, positive)
    loss2 = mean_over(dist_larger, positive)
    loss3 = mean_over(F.relu(margin - dist), negative)
    total = (loss1 + loss2) * w_pos + loss3 * w_neg
    return total, {"loss1": loss1.item(), "loss2": loss2.item(), "loss3": loss3.item()}


@dataclass
class TrainedField:
    field: GroupingField
    scale_transform: ScaleTransform
    losses: list = field(default_factory=list)
    iterations: int = 0

    @torch.no_grad()
    def features(self, backbone_feat: np.ndarray, raw_feat: np.ndarray, scale: float) -> np.ndarray:
        """(M, 384) grouping features of all grid points at one scale in [0, 2]."""
        self.field.eval()
        device = next(self.field.parameters()).device
        bf = torch.from_numpy(backbone_feat).float().to(device)
        rf = torch.from_numpy(raw_feat).float().to(device)
        q = self.scale_transform(torch.full((len(bf), 1), float(scale), device=device))
        return self.field(bf, rf, q).cpu().numpy()


def train_field(
    backbone_feat: np.ndarray,
    raw_feat: np.ndarray,
    groups: ViewGroups,
    cfg: TrainConfig,
    progress: Callable[[float, str], None] | None = None,
    check: Callable[[], None] | None = None,
    device: str = "cpu",
) -> TrainedField:
    """Fit the grouping MLPs: AdamW, one-cycle schedule (10% warm-up, cosine, div factors 10/10)."""
    if groups.n_masks_kept == 0 or not (groups.keys >= 0).any():
        raise GroupingError("no usable masks: every view's masks were empty, filtered out, or larger than scale 2")
    transform = ScaleTransform.fit(groups.mask_scale)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = GroupingField(backbone_feat.shape[1], raw_feat.shape[1]).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=cfg.lr,
        total_steps=cfg.iterations,
        pct_start=0.1,
        anneal_strategy="cos",
        div_factor=10.0,
        final_div_factor=10.0,
    )
    bfeat = torch.from_numpy(backbone_feat).float().to(device)
    rfeat = torch.from_numpy(raw_feat).float().to(device)
    result = TrainedField(net, transform)
    for it in range(cfg.iterations):
        if it % cfg.check_every == 0:
            if check is not None:
                check()
            if progress is not None:
                progress(it / cfg.iterations, "training grouping field")
        batch = sample_batch(groups, cfg, rng)
        point, scale = batch.point.to(device), batch.scale.to(device)
        larger = scale + torch.clamp(MAX_SCALE - scale, min=0) * torch.rand(1, device=device)
        bf, rf = bfeat[point], rfeat[point]
        # both scales in one pass: same result as two calls, larger matrix products
        both = net(torch.cat([bf, bf]), torch.cat([rf, rf]), transform(torch.cat([scale, larger])))
        feat, feat_larger = both[: len(point)], both[len(point) :]
        loss, parts = contrastive_loss(feat, feat_larger, batch.mask_id.to(device), cfg.views_per_batch)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # a batch without one valid pair (all drawn views maskless) teaches nothing
            loss.backward()
            opt.step()
        sched.step()
        if it % cfg.check_every == 0 or it == cfg.iterations - 1:
            result.losses.append((it, loss.item(), parts))
    result.iterations = cfg.iterations
    net.eval()
    if progress is not None:
        progress(1.0, "training grouping field")
    return result
