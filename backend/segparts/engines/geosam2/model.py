"""GeoSAM2's network: SAM2.1 Hiera-B+ plus a point-map encoder, rank-4 LoRA and feature fusion.

Built from the `sam2` package's own config and classes; only the GeoSAM2 additions live here.
Parameter names match the released `geosam2.pt` (its `["model"]` dict) so it loads as is:

- `pos_map_encoder.*`: a second complete Hiera-B+ image encoder (trunk + FPN neck) for the
  point map, its trunk with drop_path 0.1;
- every Hiera block's `attn.qkv` (both encoders) wrapped by `LoRAQKV`: the original linear moves
  one level down (`attn.qkv.qkv.{weight,bias}`) next to `linear_{a,b}_{q,v}.weight`;
- `feature_fusion.fusion_{high,mid,low}`: zero-initialised 3x3 convs fusing the two FPNs.

Never imports sam2.utils.transforms / sam2.automatic_mask_generator (they need torchvision).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sam2.modeling.sam2_base import SAM2Base
from torch import nn

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_b+.yaml"
FULL_IMAGE_SIZE = 1024  # what the checkpoint was trained at
LORA_RANK = 4
POS_MAP_DROP_PATH = 0.1

# The sam2 video predictor's inference-time settings (build_sam2_video_predictor's
# hydra_overrides_extra), which GeoSAM2's video predictor is built with.
VIDEO_OVERRIDES = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
]
FILL_HOLE_AREA = 8  # the video predictor's hole filling on low-res mask logits


class LoRAQKV(nn.Module):
    """Rank-r LoRA around a Hiera block's fused qkv linear (no scaling, no dropout).

    As in the release, the low-rank update of width d_in is added to output channels [:d_in]
    (start of q) and [-d_in:] (end of v). At Hiera's stage transitions the qkv maps d_in to
    3 * 2 * d_in, so there only part of q and of v is adapted: reproduced on purpose, the
    checkpoint was trained that way.
    """

    def __init__(self, qkv: nn.Linear, rank: int = LORA_RANK):
        super().__init__()
        self.qkv = qkv
        d_in = qkv.in_features
        self.d_in = d_in
        self.linear_a_q = nn.Linear(d_in, rank, bias=False)
        self.linear_b_q = nn.Linear(rank, d_in, bias=False)
        self.linear_a_v = nn.Linear(d_in, rank, bias=False)
        self.linear_b_v = nn.Linear(rank, d_in, bias=False)
        for a in (self.linear_a_q, self.linear_a_v):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        for b in (self.linear_b_q, self.linear_b_v):
            nn.init.zeros_(b.weight)

    @property
    def in_features(self) -> int:
        return self.qkv.in_features

    @property
    def out_features(self) -> int:
        return self.qkv.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        d = self.d_in
        out[..., :d] += self.linear_b_q(self.linear_a_q(x))
        out[..., -d:] += self.linear_b_v(self.linear_a_v(x))
        return out


def add_lora(image_encoder: nn.Module, rank: int = LORA_RANK) -> None:
    """Wrap every trunk block's attn.qkv in place."""
    for block in image_encoder.trunk.blocks:
        if not isinstance(block.attn.qkv, LoRAQKV):
            block.attn.qkv = LoRAQKV(block.attn.qkv, rank)


class FeatureFusion(nn.Module):
    """out = conv(concat(normal, point)) + normal on each FPN level; convs start at zero."""

    def __init__(self, channels: int = 256):
        super().__init__()
        self.fusion_high = nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1)
        self.fusion_mid = nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1)
        self.fusion_low = nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1)
        for conv in (self.fusion_high, self.fusion_mid, self.fusion_low):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, normal_fpn: list[torch.Tensor], point_fpn: list[torch.Tensor]) -> list[torch.Tensor]:
        convs = (self.fusion_high, self.fusion_mid, self.fusion_low)  # 256², 128², 64² at 1024
        return [conv(torch.cat([n, p], dim=1)) + n for conv, n, p in zip(convs, normal_fpn, point_fpn)]


class GeoSAM2Model(SAM2Base):
    """SAM2Base whose image features come from the fused normal-map and point-map encoders.

    `image_encoder` encodes the normal map (its positional encoding is used), `pos_map_encoder`
    the point map. Memory selection wraps around the ring of views (see `_prepare_memory_...`).
    `encoder_calls` counts image encodings (tests prove caching with it).
    """

    def __init__(self, pos_map_encoder: nn.Module, lora_rank: int = LORA_RANK, fill_hole_area: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.pos_map_encoder = pos_map_encoder
        self.feature_fusion = FeatureFusion(self.hidden_dim)
        add_lora(self.image_encoder, lora_rank)
        add_lora(self.pos_map_encoder, lora_rank)
        self.fill_hole_area = fill_hole_area
        self.encoder_calls = 0

    def forward_image(self, normal_map: torch.Tensor, point_map: torch.Tensor | None = None) -> dict:
        """Backbone features of a batch of (normal map, point map) pairs, as SAM2Base returns them."""
        if point_map is None:
            raise ValueError("GeoSAM2 needs the point map next to the normal map")
        self.encoder_calls += normal_map.shape[0]
        out = self.image_encoder(normal_map)
        point_out = self.pos_map_encoder(point_map)
        fused = self.feature_fusion(out["backbone_fpn"], point_out["backbone_fpn"])
        out["backbone_fpn"] = fused
        out["vision_features"] = fused[-1]
        if self.use_high_res_features_in_sam:
            # projected once here instead of on every click (as SAM2Base does)
            fused[0] = self.sam_mask_decoder.conv_s0(fused[0])
            fused[1] = self.sam_mask_decoder.conv_s1(fused[1])
        return out

    def _prepare_memory_conditioned_features(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        output_dict,
        num_frames,
        track_in_reverse=False,
    ):
        # GeoSAM2 looks back around the ring: memory frame index taken modulo num_frames.
        # Object pointers are bounds-checked (0 <= t < num_frames) before lookup, so they don't wrap.
        ring_dict = {
            "cond_frame_outputs": output_dict["cond_frame_outputs"],
            "non_cond_frame_outputs": RingFrames(output_dict["non_cond_frame_outputs"], num_frames),
        }
        return super()._prepare_memory_conditioned_features(
            frame_idx,
            is_init_cond_frame,
            current_vision_feats,
            current_vision_pos_embeds,
            feat_sizes,
            ring_dict,
            num_frames,
            track_in_reverse,
        )


class RingFrames(dict):
    """Read-only view of a {frame index: output} dict whose lookups wrap modulo `n`."""

    def __init__(self, frames: dict, n: int):
        super().__init__(frames)
        self.n = n

    def get(self, key, default=None):
        return super().get(key % self.n, default)


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def message(self, limit: int = 12) -> str:
        parts = []
        for name, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape-mismatched", self.mismatched),
        ):
            if keys:
                more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
                parts.append(f"{len(keys)} {name}: {', '.join(keys[:limit])}{more}")
        return "; ".join(parts) or "all keys matched"


class CheckpointError(RuntimeError):
    def __init__(self, path, report: LoadReport):
        super().__init__(f"{path} does not fit the GeoSAM2 model: {report.message()}")
        self.report = report


# Keys a checkpoint may lack without harm. Empty on purpose: the released geosam2.pt holds every
# parameter of this model, so anything missing means a wrong file.
OPTIONAL_KEYS: frozenset[str] = frozenset()


def build_model(image_size: int = FULL_IMAGE_SIZE, device: str = "cpu", video_mode: bool = True) -> GeoSAM2Model:
    """GeoSAM2 with random weights. `image_size` other than 1024 is a test/benchmark-only setting
    (the checkpoint is trained at 1024): it resizes the prompt encoder and RoPE grids consistently."""
    if image_size % 128 or image_size <= 0:
        raise ValueError("image_size must be a positive multiple of 128 (Hiera's stride 32, 4-token windows)")
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")  # what `import sam2` does
    grid = image_size // 16
    overrides = [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
    ]
    if video_mode:
        overrides += VIDEO_OVERRIDES
    cfg = compose(config_name=SAM2_CONFIG, overrides=overrides)
    OmegaConf.resolve(cfg)
    OmegaConf.set_struct(cfg, False)  # we add keys below
    model_cfg = cfg.model
    pos_cfg = copy.deepcopy(model_cfg.image_encoder)
    pos_cfg.trunk.drop_path_rate = POS_MAP_DROP_PATH
    model_cfg._target_ = f"{__name__}.GeoSAM2Model"
    model_cfg.pos_map_encoder = pos_cfg
    model_cfg.fill_hole_area = FILL_HOLE_AREA if video_mode else 0
    model = instantiate(model_cfg, _recursive_=True)
    return model.to(device).eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The `["model"]` dict of a GeoSAM2/SAM2 checkpoint, as fp32 tensors on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "model" not in blob:
        raise CheckpointError(path, LoadReport(missing=['top-level "model" entry']))
    return {k: (v.float() if v.is_floating_point() else v) for k, v in blob["model"].items()}


def check_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], optional: frozenset[str] = OPTIONAL_KEYS
) -> LoadReport:
    own = model.state_dict()
    report = LoadReport()
    report.missing = sorted(k for k in own if k not in state and k not in optional)
    report.unexpected = sorted(k for k in state if k not in own)
    report.mismatched = sorted(
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    )
    return report


def load_checkpoint(model: GeoSAM2Model, path: str | Path) -> LoadReport:
    """Load `path` into `model`; raise CheckpointError listing every missing, unexpected or
    shape-mismatched key (only OPTIONAL_KEYS may be absent)."""
    state = read_state_dict(path)
    report = check_state_dict(model, state)
    if not report.ok:
        raise CheckpointError(path, report)
    model.load_state_dict(state, strict=False)  # strictness checked above (allow-list aside)
    return report
