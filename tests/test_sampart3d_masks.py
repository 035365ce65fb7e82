"""SAMPart3D's mask sources: the release's SAM ViT-H (segment-anything, without torchvision) and
SAM 2.1; the checkpoint is loaded strictly; the generator runs on segment-anything's own steps."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from segparts.engines.sampart3d import SAMPart3DEngine, mask_model_name
from segparts.engines.sampart3d.masks import (
    CheckpointError,
    SamAutomaticMasks,
    build_sam_vit_h,
    segment_anything_module,
)


@pytest.fixture(scope="module")
def vit_h_state():
    """The ViT-H model's key layout (laid out on the meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        model = segment_anything_module("build_sam").build_sam_vit_h(None)
    return {k: v.shape for k, v in model.state_dict().items()}


def shared_storage_checkpoint(shapes: dict, path, seed: int = 0):
    """A checkpoint with every key and shape of `shapes`, each tensor a different window of one
    random buffer, so the file is tens of MB instead of 2.5 GB (torch.save writes a storage once)."""
    largest = max(int(np.prod(s)) for s in shapes.values())
    base = torch.randn(largest + len(shapes), generator=torch.Generator().manual_seed(seed))
    state = {k: base[i : i + int(np.prod(s))].view(s) for i, (k, s) in enumerate(shapes.items())}
    torch.save(state, path)
    return state


def test_vit_h_checkpoint_loads_strictly_with_its_values(vit_h_state, tmp_path):
    assert len(vit_h_state) > 500 and "image_encoder.blocks.31.attn.qkv.weight" in vit_h_state
    assert tuple(vit_h_state["image_encoder.blocks.31.attn.qkv.weight"]) == (3 * 1280, 1280)
    path = tmp_path / "sam_vit_h_4b8939.pth"
    state = shared_storage_checkpoint(vit_h_state, path)
    model = build_sam_vit_h(str(path))
    loaded = model.state_dict()
    for key in (
        "image_encoder.patch_embed.proj.weight",
        "mask_decoder.iou_prediction_head.layers.2.bias",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ):
        assert torch.equal(loaded[key], state[key]), key
    # non-persistent preprocessing constants are the package's, not the file's
    assert torch.allclose(model.pixel_mean.view(-1), torch.tensor([123.675, 116.28, 103.53]))


def test_vit_h_checkpoint_with_a_missing_key_or_a_wrong_shape_is_refused(vit_h_state, tmp_path):
    shapes = dict(vit_h_state)
    shapes["image_encoder.neck.0.weight_renamed"] = shapes.pop("image_encoder.neck.0.weight")
    shared_storage_checkpoint(shapes, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"1 missing.*1 unexpected.*segparts models fetch sam-vit-h"):
        build_sam_vit_h(str(tmp_path / "renamed.pth"))
    shapes = dict(vit_h_state)
    shapes["mask_decoder.iou_token.weight"] = torch.Size([2, 256])
    shared_storage_checkpoint(shapes, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"1 of another shape \(mask_decoder.iou_token.weight\)"):
        build_sam_vit_h(str(tmp_path / "shape.pth"))


def test_segment_anything_is_used_without_torchvision_and_without_its_public_name():
    build = segment_anything_module("build_sam")
    assert hasattr(build, "build_sam_vit_h")
    assert "torchvision" not in sys.modules or sys.modules["torchvision"] is not None
    assert "segment_anything" not in sys.modules  # the public package (and its torchvision imports) never ran


def tiny_sam(img_size=64):
    """The package's Sam with a small ViT (same code paths as ViT-H, seconds on a CPU)."""
    from functools import partial

    modeling = segment_anything_module("modeling")
    torch.manual_seed(0)
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=1,
            embed_dim=32,
            img_size=img_size,
            mlp_ratio=2,
            num_heads=2,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            window_size=2,
            global_attn_indexes=(0,),
            out_chans=256,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=256,
            image_embedding_size=(img_size // 16, img_size // 16),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            transformer=modeling.TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=256, num_heads=8),
        ),
    ).eval()


def test_vit_generator_returns_well_formed_masks_at_the_image_size():
    model = tiny_sam()
    generator = SamAutomaticMasks(
        model=model,
        points_per_side=3,
        points_per_batch=4,
        pred_iou_thresh=-1e9,
        stability_score_thresh=-1.0,
        box_nms_thresh=0.99,
        max_masks_per_view=5,
    )
    image = np.full((48, 64, 3), 255, np.uint8)  # not square: resized to 48 x 64 -> 48 x 64 * (64 / 64)
    image[10:40, 15:50] = (180, 60, 40)
    masks = generator.masks_for_image(image)
    assert 1 <= len(masks) <= 5
    assert all(m.shape == (48, 64) and m.dtype == bool for m in masks)
    assert generator._resized_shape(48, 64) == (48, 64) and generator._resized_shape(32, 16) == (64, 32)
    strict = SamAutomaticMasks(model=model, points_per_side=2, pred_iou_thresh=1e9)
    assert strict.masks_for_image(image) == []


def test_paper_preset_uses_the_release_masks_and_fast_uses_sam2(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path))
    engine = SAMPart3DEngine()
    assert mask_model_name({}) == mask_model_name({"quality": "paper"}) == "sam-vit-h"
    assert mask_model_name({"quality": "fast"}) == "sam2.1-hiera-large"
    assert mask_model_name({"quality": "fast", "mask_model": "sam-vit-h"}) == "sam-vit-h"
    paper = engine.availability({"backbone": "none"})
    assert not paper.available and "sam_vit_h_4b8939.pth" in paper.message()
    assert "segparts models fetch sam-vit-h" in paper.fix
    fast = engine.availability({"backbone": "none", "quality": "fast"})
    assert "sam2.1_hiera_large.pt" in fast.message() and "sam_vit_h" not in fast.message()
    with pytest.raises(ValueError, match="quality must be one of"):
        mask_model_name({"quality": "best"})


def test_mask_model_is_a_declared_option():
    from segparts.engines.base import OptionError, check_options

    engine = SAMPart3DEngine()
    assert check_options(engine, {"mask_model": "sam-vit-h", "quality": "fast"}) == {
        "mask_model": "sam-vit-h",
        "quality": "fast",
    }
    with pytest.raises(OptionError, match="mask_model"):
        check_options(engine, {"mask_model": "sam-vit-x"})
