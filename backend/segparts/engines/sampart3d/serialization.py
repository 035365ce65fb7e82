"""Space-filling-curve codes of grid coordinates, bit-identical to Pointcept's PTv3 serialization.

The codes decide which points share an attention patch, so they must equal the release's:
- "z": Morton code, bit i of x/y/z at code bit 3i+2 / 3i+1 / 3i;
- "hilbert": Skilling's transform ("Programming the Hilbert curve", 2004) on `depth` bits per axis,
  axes in the order x, y, z, most significant bit first;
- "-trans" variants swap x and y before encoding.
`depth` is the bit length of the largest grid coordinate (the release's adaptive depth).
"""

from __future__ import annotations

import torch


def encode(grid_coord: torch.Tensor, depth: int, order: str = "z") -> torch.Tensor:
    grid = grid_coord.long()
    if order.endswith("-trans"):
        grid = grid[:, [1, 0, 2]]
        order = order[: -len("-trans")]
    if order == "z":
        return z_order(grid, depth)
    if order == "hilbert":
        return hilbert(grid, depth)
    raise ValueError(f"unknown serialization order {order!r}")


def z_order(grid: torch.Tensor, depth: int) -> torch.Tensor:
    code = torch.zeros(grid.shape[0], dtype=torch.long, device=grid.device)
    for i in range(depth):
        bit = 1 << i
        code |= (
            ((grid[:, 0] & bit) << (2 * i + 2)) | ((grid[:, 1] & bit) << (2 * i + 1)) | ((grid[:, 2] & bit) << (2 * i))
        )
    return code


def hilbert(grid: torch.Tensor, depth: int) -> torch.Tensor:
    if depth == 0:
        return torch.zeros(grid.shape[0], dtype=torch.long, device=grid.device)
    n_dims = grid.shape[1]
    shifts = torch.arange(depth - 1, -1, -1, device=grid.device)  # MSB first
    bits = ((grid.unsqueeze(-1) >> shifts) & 1).bool()  # (N, dims, depth)
    # Skilling's inverse-undo: walk bits from the top, per axis invert or swap the lower bits of axis 0.
    for b in range(depth - 1):
        low = slice(b + 1, None)
        for d in range(n_dims):
            on = bits[:, d, b].unsqueeze(1)
            bits[:, 0, low] ^= on
            swap = ~on & (bits[:, 0, low] ^ bits[:, d, low])
            bits[:, d, low] ^= swap
            bits[:, 0, low] ^= swap
    gray = bits.transpose(1, 2).reshape(grid.shape[0], depth * n_dims)  # interleave, MSB first
    binary = torch.cumsum(gray.long(), dim=1) & 1  # Gray -> binary is a prefix XOR
    weights = 1 << torch.arange(depth * n_dims - 1, -1, -1, device=grid.device)
    return (binary * weights).sum(dim=1)
