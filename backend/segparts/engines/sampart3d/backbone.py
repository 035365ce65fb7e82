"""PTv3-object: the Point Transformer V3 variant SAMPart3D distils 2D features into.

Our own implementation with the module tree and parameter names of the release, so the released
`ptv3-object.pth` loads strictly. No pooling and no decoder: five stages over the same points, each
stage after the first opening with a Linear projection.

Sparse-convolution weight layout (spconv 2.x, checked on the installed 2.3.8 build):
`SubMConv3d(cin, cout, k).weight` has shape (cout, k, k, k, cin) and computes the cross-correlation
out[q] = sum_{a,b,c} W[:, a, b, c, :] @ x[q + (a - k//2, b - k//2, c - k//2)], the offsets being
along the grid-coordinate columns (x, y, z) of the sparse tensor's indices. The release was trained
with spconv 2, so its weights are used as stored.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import spconv_package
from .serialization import encode

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
ENC_DEPTHS = (3, 3, 3, 6, 16)
ENC_CHANNELS = (32, 64, 128, 256, 384)
ENC_HEADS = (2, 4, 8, 16, 24)
PATCH_SIZE = 1024
IN_CHANNELS = 9
OUT_CHANNELS = 384
N_STATE_ENTRIES = 572  # tensors in the released state_dict (incl. BatchNorm buffers)


def _spconv():
    name = spconv_package()  # imported lazily: availability checks must not need it
    if name is None:
        raise ImportError("no sparse convolution: install spconv (CPU, CUDA) or spconv-triton (CUDA, ROCm)")
    return importlib.import_module(f"{name}.pytorch")


@dataclass
class PointBatch:
    """One object's grid-sampled points, the input of the backbone."""

    grid_coord: torch.Tensor  # (N, 3) int, unique voxels, min 0
    feat: torch.Tensor  # (N, 9) float: coord, normal, colour


class Serialized:
    """The four space-filling-curve orders of one point set (computed once per forward)."""

    def __init__(self, grid_coord: torch.Tensor, orders=ORDERS):
        self.depth = int(grid_coord.max()).bit_length()
        if self.depth > 16:
            raise ValueError(f"grid too large to serialise (depth {self.depth} > 16)")
        codes = torch.stack([encode(grid_coord, self.depth, o) for o in orders])
        self.order = torch.argsort(codes, dim=1)  # codes are unique per voxel, so no ties
        self.inverse = torch.empty_like(self.order)
        arange = torch.arange(codes.shape[1], device=codes.device).expand_as(self.order)
        self.inverse.scatter_(1, self.order, arange)
        self._patched: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}

    def patched_order(self, index: int, patch_size: int) -> tuple[torch.Tensor, int]:
        """Order padded to a multiple of the patch size, as the release pads it.

        With n > K points and n % K = r != 0 the release fills the padded tail with the points one
        patch earlier, so the last patch is the last K points of the order (some are then in two
        patches; only their first occurrence's output is kept). With n <= K there is one patch of n.
        """
        key = (index, patch_size)
        if key not in self._patched:
            order = self.order[index]
            n = order.shape[0]
            k = min(patch_size, n)
            r = n % k
            if r:
                tail = torch.arange(n, n - r + k, device=order.device) - k
                order = torch.cat([order, order[tail]])
            self._patched[key] = (order, k)
        return self._patched[key]


@contextmanager
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def subm_conv(conv, sparse):
    """Apply a SubMConv3d, working around two faults of spconv 2.3.8's CPU path.

    - Its CPU kernels refuse a fused bias ("cpu don't support act and bias"): add it afterwards.
    - With more than one torch thread its CPU gather/scatter races: outputs differ run to run by
      up to ~0.3 (measured against a dense conv3d) and it is ~50x slower. One thread is exact.
    """
    if sparse.features.is_cuda:
        return conv(sparse)
    with _single_thread():
        out = conv._conv_forward(
            conv.training, sparse, conv.weight, None, name=conv.name, sparse_unique_name=conv._sparse_unique_name
        )
    return out if conv.bias is None else out.replace_feature(out.features + conv.bias)


class SerializedAttention(nn.Module):
    def __init__(self, channels: int, num_heads: int, patch_size: int, order_index: int):
        super().__init__()
        self.channels, self.num_heads = channels, num_heads
        self.patch_size, self.order_index = patch_size, order_index
        self.qkv = nn.Linear(channels, channels * 3, bias=True)
        self.proj = nn.Linear(channels, channels)

    def forward(self, feat: torch.Tensor, serialized: Serialized) -> torch.Tensor:
        order, k = serialized.patched_order(self.order_index, self.patch_size)
        h, c = self.num_heads, self.channels
        qkv = self.qkv(feat)[order].reshape(-1, k, 3, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # scale = head_dim ** -0.5
        out = out.transpose(1, 2).reshape(-1, c)
        return self.proj(out[serialized.inverse[self.order_index]])


class MLP(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with a sparse-conv positional encoding (names as the release)."""

    def __init__(self, channels: int, num_heads: int, order_index: int, stage: int):
        super().__init__()
        spconv = _spconv()
        self.cpe = nn.ModuleList(
            [
                spconv.SubMConv3d(channels, channels, kernel_size=3, bias=True, indice_key=f"stage{stage}"),
                nn.Linear(channels, channels),
                nn.LayerNorm(channels),
            ]
        )
        self.norm1 = nn.ModuleList([nn.LayerNorm(channels)])
        self.attn = SerializedAttention(channels, num_heads, PATCH_SIZE, order_index)
        self.norm2 = nn.ModuleList([nn.LayerNorm(channels)])
        self.mlp = nn.ModuleList([MLP(channels, channels * 4)])

    def forward(self, sparse, serialized: Serialized):
        feat = sparse.features
        conv = subm_conv(self.cpe[0], sparse).features
        feat = feat + self.cpe[2](self.cpe[1](conv))
        feat = feat + self.attn(self.norm1[0](feat), serialized)
        feat = feat + self.mlp[0](self.norm2[0](feat))
        return sparse.replace_feature(feat)


class Stage(nn.Module):
    def __init__(self, stage: int):
        super().__init__()
        channels = ENC_CHANNELS[stage]
        if stage > 0:
            self.add_module("0", nn.Linear(ENC_CHANNELS[stage - 1], channels))
        for i in range(ENC_DEPTHS[stage]):
            self.add_module(f"block{i}", Block(channels, ENC_HEADS[stage], i % len(ORDERS), stage))

    def forward(self, sparse, serialized: Serialized):
        for name, module in self.named_children():
            if name == "0":
                sparse = sparse.replace_feature(module(sparse.features))
            else:
                sparse = module(sparse, serialized)
        return sparse


class Embedding(nn.Module):
    def __init__(self):
        super().__init__()
        spconv = _spconv()
        self.stem = nn.ModuleDict(
            {
                "conv": spconv.SubMConv3d(
                    IN_CHANNELS, ENC_CHANNELS[0], kernel_size=5, padding=1, bias=False, indice_key="stem"
                ),
                "norm": nn.BatchNorm1d(ENC_CHANNELS[0], eps=1e-3, momentum=0.01),
                "act": nn.GELU(),
            }
        )

    def forward(self, sparse):
        sparse = subm_conv(self.stem["conv"], sparse)
        return sparse.replace_feature(self.stem["act"](self.stem["norm"](sparse.features)))


class PTv3Object(nn.Module):
    """Backbone: (grid-sampled points, 9 features) -> (N, 384) features."""

    def __init__(self):
        super().__init__()
        self.embedding = Embedding()
        self.enc = nn.Module()
        for s in range(len(ENC_DEPTHS)):
            self.enc.add_module(f"enc{s}", Stage(s))

    def forward(self, points: PointBatch) -> torch.Tensor:
        spconv = _spconv()
        grid = points.grid_coord.long()
        if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] == 0:
            raise ValueError("grid_coord must be a non-empty (N, 3) array")
        if points.feat.shape != (grid.shape[0], IN_CHANNELS):
            raise ValueError(f"feat must be (N, {IN_CHANNELS}), got {tuple(points.feat.shape)}")
        if int(grid.min()) < 0:
            raise ValueError("grid_coord must be non-negative")
        if spconv.__name__.startswith("spconv_triton") and not points.feat.is_cuda:
            raise ValueError("spconv-triton runs on GPUs only: move the model to cuda, or install spconv for the CPU")
        serialized = Serialized(grid)
        indices = torch.cat([torch.zeros_like(grid[:, :1]), grid], dim=1).int().contiguous()
        shape = (grid.max(dim=0).values + 96).tolist()  # the release's sparse-shape padding
        sparse = spconv.SparseConvTensor(points.feat.float(), indices, shape, batch_size=1)
        sparse = self.embedding(sparse)
        for stage in self.enc.children():
            sparse = stage(sparse, serialized)
        return sparse.features


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the architecture; the message lists every difference."""


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Tensors of a released-format checkpoint ({'state_dict': {'module.<key>': tensor}})."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"{path}: no state_dict in the file")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def load_strict(model: PTv3Object, state: dict[str, torch.Tensor]) -> None:
    """Load every tensor or raise CheckpointMismatch listing missing/unexpected keys and bad shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} != model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape differences", shapes)):
            if items:
                parts.append(f"{title} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise CheckpointMismatch("checkpoint does not match PTv3-object: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_backbone(path, device="cpu") -> PTv3Object:
    model = PTv3Object()
    load_strict(model, read_state_dict(path))
    return model.to(device).eval()


def parameter_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def backbone_features(model: PTv3Object, grid_coord: np.ndarray, feat: np.ndarray, device="cpu") -> np.ndarray:
    points = PointBatch(torch.as_tensor(grid_coord, device=device), torch.as_tensor(feat, device=device))
    return model(points).float().cpu().numpy()
