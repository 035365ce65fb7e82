"""Box non-maximum suppression for the learned engines' automatic masks (SAMPart3D's and
GeoSAM2's generators). torchvision.ops.nms is what both releases call; torchvision is not shipped
here, so this is the same greedy algorithm in torch."""

from __future__ import annotations

import torch


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices (int64) of the boxes kept, best score first (ties: the earlier box): a box is
    dropped when its IoU with a kept better one exceeds `iou_threshold`. Boxes are (K, 4)
    x0, y0, x1, y1; the IoU is computed in their dtype (pass float64 for exact ties)."""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = torch.ones(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = torch.arange(i + 1, len(boxes))
        rest = rest[alive[rest]]
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        iou = inter / (area[i] + area[rest] - inter)
        alive[rest[iou > iou_threshold]] = False
    return order[torch.tensor(keep, dtype=torch.long)]
