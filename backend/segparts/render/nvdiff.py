"""CUDA visibility by nvdiffrast rasterisation: same (face id, barycentrics) as the Embree path.

Used only when `nvdiffrast` imports and torch sees a CUDA device. nvdiffrast's image origin is
the bottom row and its barycentrics (u, v) weigh v0 and v1; both are converted to this package's
convention (row 0 at the top, weights of v1 and v2).
"""

from __future__ import annotations

import numpy as np

from .cameras import CameraRig

_context = None
_reason: str | None = None


def unavailable_reason() -> str | None:
    """None when usable, else why not (for skips and error messages)."""
    global _reason
    if _reason is not None:
        return _reason or None
    try:
        import torch
    except ImportError:
        _reason = "torch is not installed"
        return _reason
    if not torch.cuda.is_available():
        _reason = "no CUDA device"
        return _reason
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        _reason = f"nvdiffrast does not import ({type(exc).__name__}: {exc})"
        return _reason
    _reason = ""
    return None


def available() -> bool:
    return unavailable_reason() is None


def _ctx():
    global _context
    if _context is None:
        import nvdiffrast.torch as dr

        _context = dr.RasterizeCudaContext()
    return _context


def rasterize(vertices: np.ndarray, faces: np.ndarray, rig: CameraRig, views_per_batch: int = 8):
    """(face_id (N, H, W) int32, -1 background; bary (N, H, W, 2) float32 weights of v1, v2)."""
    import nvdiffrast.torch as dr
    import torch

    dev = torch.device("cuda")
    # clip coordinates in float64 on the host keep precision for meshes far from the origin
    homo = np.concatenate([vertices, np.ones((len(vertices), 1))], axis=1)
    tri = torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int32)).to(dev)
    face_ids, barys = [], []
    for start in range(0, rig.n_views, views_per_batch):
        vp = rig.view_proj[start : start + views_per_batch]
        clip = np.einsum("vij,pj->vpi", vp, homo).astype(np.float32)
        pos = torch.from_numpy(np.ascontiguousarray(clip)).to(dev)
        rast, _ = dr.rasterize(_ctx(), pos, tri, resolution=[rig.height, rig.width])
        rast = torch.flip(rast, dims=[1])  # bottom-up -> top-down rows
        fid = rast[..., 3].to(torch.int64) - 1
        u, v = rast[..., 0], rast[..., 1]
        bary = torch.stack([v, 1.0 - u - v], dim=-1) * (fid >= 0)[..., None]
        face_ids.append(fid.to(torch.int32).cpu().numpy())
        barys.append(bary.float().cpu().numpy())
    return np.concatenate(face_ids), np.concatenate(barys)
